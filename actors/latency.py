"""Latency histograms for the hot path: fixed buckets, plain ints, no locks.

`observe()` is one bisect over a short tuple and two additions, cheap enough to run
once per reply; the metrics endpoint reads a `HistogramSnapshot` at scrape time and
turns it into a Prometheus histogram. Nothing here imports prometheus-client, so an
actor can keep one without depending on it.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

__all__ = ["DEFAULT_BOUNDS", "HistogramSnapshot", "LatencyHistogram"]

DEFAULT_BOUNDS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Bucket upper bounds in seconds, from 100 µs (a reply on loopback) to 5 s (an ask's
timeout): the last bucket, above every bound, is implicit."""


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A histogram as it was at one moment."""

    bounds: tuple[float, ...]
    """Upper bounds (seconds) of the buckets, ascending, without +Inf."""
    counts: tuple[int, ...]
    """Observations per bucket, not cumulative: `len(bounds) + 1` of them, the last
    for those above every bound."""
    sum: float
    """The observations added up (seconds)."""

    @property
    def count(self) -> int:
        """How many observations there were."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, infinity last: the
        shape of a Prometheus histogram."""
        running = 0
        buckets: list[tuple[float, int]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class LatencyHistogram:
    """Counts observations into fixed buckets (see `DEFAULT_BOUNDS`)."""

    __slots__ = ("_counts", "_sum", "bounds")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BOUNDS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("histogram bounds must be distinct and ascending")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation (a bound belongs to its own bucket, as `le` says)."""
        self._counts[bisect_left(self.bounds, seconds)] += 1
        self._sum += seconds

    def snapshot(self) -> HistogramSnapshot:
        """The counts as they are now."""
        return HistogramSnapshot(self.bounds, tuple(self._counts), self._sum)
