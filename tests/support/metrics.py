"""/metrics as the tests read it: every sample of a scrape, parsed with prometheus_client's own parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

P = "tornado_records_"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_process(base_url: str) -> Samples:
    """The samples of a service's /metrics (blocks: for the system tests' processes)."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 if it is not there); `name` in full."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
