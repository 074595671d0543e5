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


class Repeating:
    """Runs `step` again and again, `interval` seconds apart, in a task of its own
    until `stop`.

    It stops at a flag as well as by cancellation: on Python 3.11, asyncio.wait_for
    (inside nats-py's request, for one) can swallow a cancellation (CPython gh-86296),
    and a loop only cancelled goes on for ever while its stopper waits for it (a CI
    run hung so until the test's timeout)."""

    def __init__(self, step: Callable[[], Awaitable[None]], interval: float) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(step, interval))

    async def _run(self, step: Callable[[], Awaitable[None]], interval: float) -> None:
        while not self._stopping:
            await step()
            await asyncio.sleep(interval)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop now: the step under way is cancelled, or, should a step lose the
        cancellation, the loop ends when it returns (within `timeout` s). Raises what a
        step raised."""
        self._stopping = True
        self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        assert done, f"a step still runs {timeout} s after stop"
        error = None if self._task.cancelled() else self._task.exception()
        if error is not None:
            raise error
