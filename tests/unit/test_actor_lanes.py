"""The actor base's mailbox lanes and drains: urgent first, none starved, each
lane bounded on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.actor import Actor, Envelope, Lane, MailboxFullError

pytestmark = pytest.mark.timeout(10)


class Recorder(Actor):
    """Records each drain as the list of its messages; `hold` blocks the first one."""

    def __init__(self, *, max_batch: int = 8, max_low: int = 1 << 30, mailbox_size: int = 0) -> None:
        super().__init__("recorder", mailbox_size=mailbox_size)
        self.max_batch = max_batch
        self.max_low_per_batch = max_low
        self.drains: list[list[Any]] = []
        self.hold = asyncio.Event()
        self.holding = asyncio.Event()

    async def handle_batch(self, batch: list[Envelope]) -> None:
        messages = [envelope.message for envelope in batch]
        if messages == ["hold"]:
            self.holding.set()
            await self.hold.wait()
        else:
            self.drains.append(messages)
        for envelope in batch:
            self.resolve(envelope, None)


@pytest.fixture
async def held() -> AsyncIterator[Recorder]:
    """A recorder stuck in its first drain, so that the test can fill its lanes."""
    recorder = Recorder()
    await recorder.start()
    recorder.tell("hold")
    await recorder.holding.wait()
    yield recorder
    recorder.hold.set()
    await recorder.stop()


async def drained(recorder: Recorder) -> list[list[Any]]:
    recorder.hold.set()
    await recorder.ask("flush", lane=Lane.LOW)
    return recorder.drains


async def test_urgent_messages_are_taken_before_earlier_normal_and_low_ones(held: Recorder) -> None:
    held.tell("query", lane=Lane.LOW)
    held.tell("register")
    held.tell("heartbeat", lane=Lane.URGENT)
    assert (await drained(held))[0][:3] == ["heartbeat", "register", "query"]


async def test_a_flood_of_urgent_messages_leaves_room_for_one_of_each_other_lane(held: Recorder) -> None:
    for n in range(20):
        held.tell(f"beat-{n}", lane=Lane.URGENT)
    held.tell("register")
    held.tell("query", lane=Lane.LOW)
    first = (await drained(held))[0]
    assert len(first) == held.max_batch
    assert first[-2:] == ["register", "query"]
    assert first[:-2] == [f"beat-{n}" for n in range(held.max_batch - 2)]


async def test_low_lane_messages_per_drain_are_capped() -> None:
    recorder = Recorder(max_batch=8, max_low=2)
    await recorder.start()
    try:
        recorder.tell("hold")
        await recorder.holding.wait()
        for n in range(5):
            recorder.tell(f"query-{n}", lane=Lane.LOW)
        recorder.tell("register")
        drains = await drained(recorder)
        assert drains[0] == ["register", "query-0", "query-1"]
        assert drains[1] == ["query-2", "query-3"]
    finally:
        await recorder.stop()


async def test_each_lane_is_bounded_on_its_own() -> None:
    recorder = Recorder(mailbox_size=2)
    await recorder.start()
    try:
        recorder.tell("hold")
        await recorder.holding.wait()
        recorder.tell("query-1", lane=Lane.LOW)
        recorder.tell("query-2", lane=Lane.LOW)
        with pytest.raises(MailboxFullError):
            recorder.tell("query-3", lane=Lane.LOW)
        recorder.tell("register")  # a full low lane does not refuse writes
        recorder.tell("heartbeat", lane=Lane.URGENT)
        assert recorder.mailbox_stats().depths == (1, 1, 2)
        assert recorder.mailbox_stats().rejected_full == 1
        recorder.hold.set()
    finally:
        await recorder.stop()
    assert recorder.drains[0] == ["heartbeat", "register", "query-1", "query-2"]
