"""Tornado's private attributes that the service relies on (tornado_records/http/insides.py): each is pinned on the
installed Tornado, the list is exactly what the code uses (and only modules of tornado_records/http/ use them), and a
`tornado-records` process on a Tornado that lacks one stops at start with one line and exit status 2."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re

import pytest
import tornado
import tornado.http1connection
import tornado.httpclient
import tornado.httpserver
import tornado.httputil
import tornado.iostream
import tornado.testing
import tornado.web
from packaging.specifiers import SpecifierSet

from support.paths import REPO
from tornado_records.http import insides
from tornado_records.http.insides import INSIDES, Inside, TornadoChanged

PACKAGE = REPO / "tornado_records"
ROOM = PACKAGE / "http"


@pytest.fixture(scope="module")
def attributes() -> dict[type, dict[str, object]]:
    return insides.throwaway_attributes()


@pytest.mark.parametrize("inside", INSIDES, ids=lambda inside: inside.label)
def test_each_private_attribute_is_on_this_tornado(inside: Inside, attributes: dict[type, dict[str, object]]) -> None:
    if inside.positional is not None:  # a method that Tornado calls, replaced on each connection
        method = inspect.getattr_static(inside.owner, inside.name)
        assert callable(method)
        kinds = [p.kind for p in inspect.signature(method).parameters.values()]
        assert sum(kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD) for kind in kinds) == inside.positional
    else:  # set by the class's __init__
        assert inside.name in attributes[inside.owner]
        assert isinstance(attributes[inside.owner][inside.name], inside.kind)
    assert insides.problem_with(inside, attributes) is None


def test_check_passes_on_this_tornado() -> None:
    insides.check()


def test_this_tornado_is_one_the_release_supports() -> None:
    setup = (REPO / "setup.py").read_text()
    assert f'"tornado{insides.SUPPORTED}"' in setup
    assert tornado.version in SpecifierSet(insides.SUPPORTED)


def test_a_missing_method_is_named_with_the_module_that_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(tornado.http1connection.HTTP1Connection, "_read_chunked_body")
    with pytest.raises(TornadoChanged) as caught:
        insides.check()
    assert str(caught.value) == (
        f"this Tornado ({tornado.version}) lacks HTTP1Connection._read_chunked_body, which "
        f"tornado_records/http/body.py needs; install a Tornado this release supports ({insides.SUPPORTED})"
    )


def test_the_answer_state_the_handlers_ask_for() -> None:
    """finished, headers_sent and buffered_bytes, seen from a handler of a real server answering a real client."""
    seen: list[tuple[str, object]] = []

    class Probe(tornado.web.RequestHandler):
        async def get(self) -> None:
            seen.append(("new", (insides.finished(self), insides.headers_sent(self), insides.buffered_bytes(self))))
            self.write(b"abc")
            self.write(b"de")
            seen.append(("written", insides.buffered_bytes(self)))
            await self.flush()
            seen.append(("flushed", (insides.headers_sent(self), insides.buffered_bytes(self))))
            self.write(b"f")
            self.finish()
            seen.append(("finished", insides.finished(self)))

    async def fetch() -> tornado.httpclient.HTTPResponse:
        sock, port = tornado.testing.bind_unused_port()
        server = tornado.httpserver.HTTPServer(tornado.web.Application([("/", Probe)]))
        server.add_sockets([sock])
        try:
            return await tornado.httpclient.AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/")
        finally:
            server.stop()

    response = asyncio.run(fetch())
    assert response.code == 200 and response.body == b"abcdef"
    assert seen == [("new", (False, False, 0)), ("written", 5), ("flushed", (True, 0)), ("finished", True)]


# -- the list is what the code uses ---------------------------------------------------------------------------------


def _private(names: object) -> set[str]:
    return {name for name in names if re.fullmatch(r"_[a-z]\w*", name)}  # type: ignore[attr-defined]


def tornado_private_names() -> dict[type, set[str]]:
    """The private names of each Tornado class whose objects the service holds or extends: on the class, and on a
    throwaway instance where the class sets them in __init__."""
    classes = [
        tornado.http1connection.HTTP1Connection, tornado.http1connection.HTTP1ServerConnection,
        tornado.iostream.IOStream, tornado.httputil.HTTPServerRequest, tornado.httputil.HTTPHeaders,
        tornado.httputil.HTTPMessageDelegate, tornado.web.RequestHandler, tornado.web.StaticFileHandler,
        tornado.web.Application, tornado.httpserver.HTTPServer,
    ]  # fmt: skip
    names = {cls: _private(dir(cls)) for cls in classes}
    for cls, found in insides.throwaway_attributes().items():
        names[cls] |= _private(found)
    server = tornado.httpserver.HTTPServer(tornado.web.Application())
    names[tornado.httpserver.HTTPServer] |= _private(vars(server))
    names[tornado.web.Application] |= _private(vars(tornado.web.Application()))
    return names


def uses_of_tornado_privates() -> list[tuple[str, str, int]]:
    """Each use of a Tornado private name in tornado_records/: (name, file, line). `self._x` counts in a class that
    extends a Tornado class, when x is that class's; `other._x` and the string "_x" count wherever x is one of any
    Tornado class above (the lists in insides.py itself are not uses)."""
    names = tornado_private_names()
    everywhere = set().union(*names.values())
    uses = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(REPO))
        module_name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        tree = ast.parse(path.read_text())
        module = None
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for inner in ast.walk(node):
                    inner.owner_class = node.name  # type: ignore[attr-defined]  # the innermost, as walk goes down
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in everywhere:
                receiver = node.value.id if isinstance(node.value, ast.Name) else None
                if receiver in ("self", "cls"):
                    if module is None:
                        module = __import__(module_name, fromlist=["_"])
                    cls = getattr(module, getattr(node, "owner_class", ""), None)
                    bases = [base for base in getattr(cls, "__mro__", ()) if base in names]
                    if not any(node.attr in names[base] for base in bases):
                        continue  # the class's own attribute (it extends no Tornado class that has it)
                uses.append((node.attr, relative, node.lineno))
            elif isinstance(node, ast.Constant) and node.value in everywhere and path != ROOM / "insides.py":
                uses.append((node.value, relative, node.lineno))
    return uses


def test_only_the_http_room_uses_tornado_privates() -> None:
    outside = [f"{file}:{line}: {name}" for name, file, line in uses_of_tornado_privates() if not file.startswith(
        "tornado_records/http/")]  # fmt: skip
    assert outside == [], "use tornado_records/http/insides.py's functions instead"


def test_insides_lists_exactly_the_privates_used() -> None:
    used = {(name, file) for name, file, _ in uses_of_tornado_privates()}
    listed = {(inside.name, user) for inside in INSIDES for user in inside.user.split(", ")}
    assert used == listed
    assert len({inside.label for inside in INSIDES}) == len(INSIDES)
