"""What a simulated device's API did, counted from the device's side: TLS handshakes,
requests by method and path, event streams, keep-alive comments.

A real ESP32 pays for each handshake (about a second of CPU, tens of KB of heap) and each
request; benchmarks read these counters to show what an idle device costs it
(benchmarks/bench_idle.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

# The request that opens an event stream, as counted in ApiCounters.requests.
EVENT_STREAM_REQUEST: Final = "GET /api/v1/events"


def _frozen(counts: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType({key: value for key, value in sorted(counts.items()) if value})


@dataclass(frozen=True, slots=True)
class ApiCounters:
    """A snapshot of one device's counters, or of a fleet's totals (see `sum`).

    `requests` maps "METHOD /path" to how many such requests arrived (answered or not,
    authenticated or not); an event stream is one request when it opens, however long it
    lives. `open_streams` is a level (streams served at the snapshot), the rest are totals
    since the API server was made."""

    tls_handshakes: int = 0
    requests: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    open_streams: int = 0
    keepalives_sent: int = 0

    @property
    def total_requests(self) -> int:
        """Every request, event streams included."""
        return sum(self.requests.values())

    @property
    def stream_requests(self) -> int:
        """Requests that opened an event stream."""
        return self.requests.get(EVENT_STREAM_REQUEST, 0)

    def since(self, earlier: ApiCounters) -> ApiCounters:
        """What happened between `earlier` and this snapshot (open_streams: as now)."""
        requests = Counter(self.requests)
        requests.subtract(earlier.requests)
        return ApiCounters(
            tls_handshakes=self.tls_handshakes - earlier.tls_handshakes,
            requests=_frozen(requests),
            open_streams=self.open_streams,
            keepalives_sent=self.keepalives_sent - earlier.keepalives_sent,
        )

    @staticmethod
    def sum(counters: Iterable[ApiCounters]) -> ApiCounters:
        """The totals of several devices."""
        handshakes = streams = keepalives = 0
        requests: Counter[str] = Counter()
        for item in counters:
            handshakes += item.tls_handshakes
            requests.update(item.requests)
            streams += item.open_streams
            keepalives += item.keepalives_sent
        return ApiCounters(handshakes, _frozen(requests), streams, keepalives)


class ApiTally:
    """The running counts one API server keeps; `snapshot` freezes them."""

    def __init__(self) -> None:
        self.tls_handshakes = 0
        self.requests: Counter[str] = Counter()
        self.keepalives_sent = 0

    def request(self, method: str, path: str) -> None:
        """Count one request that arrived."""
        self.requests[f"{method} {path}"] += 1

    def snapshot(self, open_streams: int) -> ApiCounters:
        """The counts now, with the number of streams being served."""
        return ApiCounters(
            self.tls_handshakes, _frozen(self.requests), open_streams, self.keepalives_sent
        )
