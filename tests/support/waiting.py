"""Waiting for something to become true, bounded by a timeout, instead of sleeping
for a fixed time and hoping it has happened."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 15.0,
    interval: float = 0.02,
    what: str = "the condition",
) -> float:
    """Re-check `check` (plain or async) every `interval` seconds until it is true,
    and return how long that took; after `timeout` seconds, fail the test with a
    message that names `what` was awaited."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return loop.time() - started
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
