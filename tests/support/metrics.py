"""A running service's HTTP endpoints: ``/metrics`` parsed, ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def get(port: int, path: str, timeout_s: float = 5) -> tuple[int, str]:
    """The status and body of ``GET http://127.0.0.1:<port><path>`` (an error status too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}",
                                    timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Samples:
    """The samples of one ``/metrics`` page."""

    def __init__(self, text: str) -> None:
        self.samples: list[Sample] = [sample for family in text_string_to_metric_families(text)
                                      for sample in family.samples]

    def value(self, name: str, /, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none).

        ``name`` is the sample's: a counter's ends in ``_total``.
        """
        return sum(s.value for s in self.series(name, **labels))

    def series(self, name: str, /, **labels: str) -> list[Sample]:
        """The samples named ``name`` whose labels include ``labels``."""
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def scrape(port: int) -> Samples:
    """``/metrics`` of the service listening on ``port``; fails the test if not 200."""
    status, text = get(port, "/metrics")
    assert status == 200, f"/metrics answered {status}: {text[:200]}"
    return Samples(text)
