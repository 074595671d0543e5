"""Exponential backoff with jitter: the one place the SDK decides how long to wait."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number `attempt` (0-based): `initial * multiplier**attempt`,
    capped at `maximum`, then jittered down by up to `jitter` of itself (1.0 is "full
    jitter"), so that many clients retrying at once spread out."""

    initial: float = 0.1
    maximum: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1:
            raise ValueError("backoff needs initial >= 0, maximum >= 0 and multiplier >= 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("backoff jitter must be between 0 and 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry `attempt`."""
        base = min(self.maximum, self.initial * self.multiplier ** min(max(attempt, 0), 64))
        spread = base * self.jitter
        return base - spread * (rng or random).random()
