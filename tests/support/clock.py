"""Clocks for pure tests of the registry: they move only when told to."""

from __future__ import annotations


class FakeClock:
    """Monotonic and wall clocks that move together, only when told to (`advance`)."""

    def __init__(self, wall_base: float = 1_700_000_000.0) -> None:
        self.now = 1000.0
        self._wall_base = wall_base

    def monotonic(self) -> float:
        return self.now

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self._wall_base + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
