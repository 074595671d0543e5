"""The journal's appends against a real JetStream: acknowledged, fenced off by a
write from elsewhere, and refused loudly when no stream stores them any more."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient

from actors.journal import Fenced, Journal, JournalConfig, JournalError, Write
from protocol import InstanceStatus
from protocol.stored import StoredInstance

pytestmark = pytest.mark.timeout(30)

CONFIG = JournalConfig(stream="IPC_JOURNAL_TEST")


def write(instance: str) -> Write:
    stored = StoredInstance(
        service_name="orders",
        instance_id=instance,
        status=InstanceStatus.ONLINE,
        metadata={},
        registered_at=1.0,
        last_heartbeat=1.0,
        session_hash=None,
        offline_at=None,
    )
    return Write("orders", instance, stored)


async def test_a_batch_is_stored_in_order_and_its_last_sequence_returned(nc: NatsClient) -> None:
    journal = Journal(nc, CONFIG, timeout=2.0)
    facts = await journal.open()
    last = await journal.append([write("a"), write("b"), write("c")], facts.last_sequence)
    assert last == facts.last_sequence + 3
    assert (await journal.open()).last_sequence == last


async def test_a_write_from_elsewhere_fences_the_next_append(nc: NatsClient) -> None:
    journal = Journal(nc, CONFIG, timeout=2.0)
    facts = await journal.open()
    mine = await journal.append([write("a")], facts.last_sequence)
    await nc.jetstream().publish(f"{CONFIG.subject_prefix}.i.orders.intruder", b"")
    with pytest.raises(Fenced):
        await journal.append([write("b"), write("c")], mine)
    assert (await journal.open()).last_sequence == mine + 1  # the intruder's, none of ours


async def test_an_append_to_a_deleted_stream_fails_rather_than_counting_as_stored(
    nc: NatsClient,
) -> None:
    journal = Journal(nc, CONFIG, timeout=2.0)
    facts = await journal.open()
    await nc.jetstream().delete_stream(CONFIG.stream)
    with pytest.raises(JournalError, match="no stream stores"):
        await journal.append([write("a"), write("b")], facts.last_sequence)


async def test_a_large_drain_is_stored_whole(nc: NatsClient) -> None:
    journal = Journal(nc, CONFIG, timeout=2.0)
    facts = await journal.open()
    writes = [write(f"i-{n}") for n in range(2_500)]
    last = await journal.append(writes, facts.last_sequence)
    assert last == facts.last_sequence + len(writes)
    assert (await journal.open()).messages == len(writes)


async def test_a_batch_fenced_off_stores_none_of_its_writes(nc: NatsClient) -> None:
    """Each write conditional on the stream's sequence alone was not enough: with one
    foreign write in the gap, the first of two writes failed and the second, whose
    expected sequence now matched, was stored after the successor's write."""
    journal = Journal(nc, CONFIG, timeout=2.0)
    facts = await journal.open()
    await nc.jetstream().publish(f"{CONFIG.subject_prefix}.i.orders.intruder", b"")
    with pytest.raises(Fenced):
        await journal.append([write("a"), write("b")], facts.last_sequence)
    after = await journal.open()
    assert (after.messages, after.last_sequence) == (1, facts.last_sequence + 1)
