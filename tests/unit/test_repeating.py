"""`Repeating`, the tests' background loop: it stops even when a step loses the
cancellation (as nats-py's request can on Python 3.11, CPython gh-86296)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.waiting import Repeating


async def test_a_step_that_loses_the_cancellation_still_ends_the_loop() -> None:
    steps = 0

    async def step() -> None:
        nonlocal steps
        steps += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass  # lost, as asyncio.wait_for can lose it

    repeating = Repeating(step, interval=0.0)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(repeating.stop(), timeout=5)
    assert steps == 1


async def test_a_step_that_fails_fails_the_stop() -> None:
    async def step() -> None:
        raise LookupError("the step's error")

    repeating = Repeating(step, interval=0.0)
    await asyncio.sleep(0.01)  # (the step ran)
    with pytest.raises(LookupError, match="the step's error"):
        await repeating.stop()
