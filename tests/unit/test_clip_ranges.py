"""A clip's range as a client writes it (seconds, or [HH:]MM:SS[.fff]) and its file's name (audio/spans.py)."""

from __future__ import annotations

import pytest

from tornado_records.audio.spans import BadRange, Span, ascii_name, file_name, parse_span, parse_time, spoken

EVENT = "0f339cb0-7ab4-43fe-852d-75708232f76c"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("12", 12.0), ("754.5", 754.5), ("0.000001", 0.000001), ("12:34", 754.0), ("12:34.5", 754.5),
     ("90:00", 5400.0), ("1:02:03", 3723.0), ("01:02:03.250", 3723.25), ("0:00:00", 0.0)],
)  # fmt: skip
def test_times_are_read_as_seconds_or_a_clock(text, seconds):
    assert parse_time(text, "from") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "abc", "-1", "-0:01", "1e3", "nan", "inf", "1.2.3", "1:2:3:4", "1:60", "1:75:00", "1:00:60", ":30",
             "12:", "1.5:00", "0x10", "１２", " 5", "5 "],
)  # fmt: skip
def test_other_times_are_refused(text):
    with pytest.raises(BadRange):
        parse_time(text, "from")


def test_a_range_needs_both_ends_in_order():
    assert parse_span("1", "2.5") == Span(1.0, 2.5)
    for start, end in ((None, "2"), ("1", None), ("2", "2"), ("3", "2"), ("0:05", "4.999")):
        with pytest.raises(BadRange):
            parse_span(start, end)
    with pytest.raises(BadRange, match="negative"):
        parse_span("-1", "2")
    with pytest.raises(BadRange, match="empty"):
        parse_span("3", "2")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0m00s"), (4, "0m04s"), (1.5, "0m01.5s"), (61.25, "1m01.25s"), (3599.999, "59m59.999s"),
     (3600, "1h00m00s"), (3723.5, "1h02m03.5s"), (36000.0004, "10h00m00s")],
)  # fmt: skip
def test_times_in_names_are_spoken(seconds, text):
    assert spoken(seconds) == text


def test_a_name_is_the_title_or_the_event_the_start_and_the_range():
    span = Span(61.0, 3723.5)
    assert file_name(None, EVENT, "2024-03-01T08:00:00", span, "mp3") == (
        f"{EVENT} 2024-03-01T08.00.00 1m01s-1h02m03.5s.mp3"
    )
    assert file_name("  Morning\tshow ", EVENT, "2024-03-01T08:00:00", span, "opus").startswith("Morning show 2024")
    unsafe = file_name('a/b\\c:d*e?f"g<h>i|j\x00k\x1f', EVENT, "2024-03-01T08:00:00", span, "mp3")
    assert unsafe.startswith("a_b_c_d_e_f_g_h_i_j_k 2024")
    assert file_name("...", EVENT, "2024-03-01T08:00:00", span, "mp3").startswith(EVENT)
    assert len(file_name("x" * 1000, EVENT, "2024-03-01T08:00:00", span, "mp3")) < 200


def test_the_ascii_name_keeps_what_it_can():
    assert ascii_name("Matinée à Paris.mp3") == "Matinee a Paris.mp3"
    assert ascii_name("日本.ogg") == "clip.ogg"
