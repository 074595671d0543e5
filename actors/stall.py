"""A lease clock that stands still while the process does not run.

Leases are judged by the registry's own clock. If the event loop stalls (a SIGSTOP,
a VM pause, swapping, a long GC), the heartbeats sent meanwhile wait unread in the
socket, and a clock that kept running would expire every instance the moment the
loop wakes up, before those heartbeats are read. `StallClock` notices such a gap
(a ticker that runs every `tick` seconds comes late by more than `threshold`) and
leaves it out of lease time: after a stall of five seconds, deadlines are five
seconds later. An instance that really died during the stall is found that much
later; none that kept beating is declared dead because the router could not listen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

__all__ = ["StallClock"]

log = structlog.get_logger(component="stall_clock")


class StallClock:
    """Monotonic seconds minus every stall seen so far. Call it for the time; `start`
    the ticker on the running loop (without it, only stalls between two readings
    are noticed)."""

    def __init__(
        self,
        *,
        threshold: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`threshold`: a gap between two readings longer than this is a stall."""
        self.threshold = threshold
        self.tick = threshold / 4
        self._monotonic = monotonic
        self._last = monotonic()
        self.stalled = 0.0
        """Seconds left out so far."""
        self._ticker: asyncio.TimerHandle | None = None

    def __call__(self) -> float:
        now = self._monotonic()
        gap = now - self._last
        if gap > self.threshold:
            # The expected gap (one tick) is time that passed for everyone; the rest
            # is time the process did not run.
            lost = gap - self.tick
            self.stalled += lost
            log.warning(
                "event_loop_stalled",
                seconds=round(lost, 3),
                effect="lease deadlines moved later by the stall",
            )
        self._last = now
        return now - self.stalled

    def excuse(self, seconds: float) -> None:
        """Leave `seconds` more out of lease time: a gap in which heartbeats could not
        arrive for a reason of the router's own (its connection was down)."""
        if seconds > 0:
            self.stalled += seconds

    def to_monotonic(self, clock_time: float) -> float:
        """The `time.monotonic()` reading at which this clock will show `clock_time`
        (if no further stall happens): for arming timers."""
        return clock_time + self.stalled

    def start(self) -> None:
        """Read the clock every `tick` seconds on the running loop."""
        self._last = self._monotonic()
        loop = asyncio.get_running_loop()

        def on_tick() -> None:
            self()
            self._ticker = loop.call_later(self.tick, on_tick)

        self._ticker = loop.call_later(self.tick, on_tick)

    def stop(self) -> None:
        """Stop the ticker."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
