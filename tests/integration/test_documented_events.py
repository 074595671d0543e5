"""What docs/protocol.md says about the wire, pinned over real NATS: nonces echoed in
every reply (sections 1 and 4), the order and content of the events of a repeat
registration and of a takeover (8.1), and revisions and epochs in stream mode (8.1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from actors.embedded_nats import NatsServerProcess
from protocol import (
    HEARTBEAT_SUBJECT,
    LIST_SUBJECT,
    REGISTER_SUBJECT,
    LeasePolicy,
    events_subject,
)
from tests.support.nats_requests import nats_request
from tests.support.routers import InProcessRouters
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

POLICY = LeasePolicy(heartbeat_interval=0.1, lease_ttl=0.3, offline_after=30.0, offline_retention=60.0)
SESSION = "documented-session-0001"
OTHER = "documented-session-0002"
NONCE = "documented-nonce-0001"


class Events:
    """The change events of one service, decoded, as they arrive."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_message(self, msg: Msg) -> None:
        self.queue.put_nowait(msgpack.unpackb(msg.data, timestamp=3))

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next event of type `kind`, skipping others."""
        while (event := await self.next(timeout))["type"] != kind:
            pass
        return event


@pytest.fixture
async def orders_events(nc: NatsClient) -> Events:
    events = Events()
    await nc.subscribe(events_subject("orders"), cb=events.on_message)
    await nc.flush()
    return events


@pytest.fixture(params=["memory", "stream"])
async def routers(request: pytest.FixtureRequest, nats_server: NatsServerProcess) -> AsyncIterator[InProcessRouters]:
    """Routers in each store mode on the test's nats-server (one started here)."""
    started = InProcessRouters(nats_server.url)
    await start_serving(started, request.param)
    try:
        yield started
    finally:
        await started.stop_all()


async def start_serving(routers: InProcessRouters, store: str) -> None:
    """Start a router; return once it takes registrations (a stream's leader)."""
    router = await routers.start(store=store, lease_policy=POLICY, failover_after=0.2)

    async def writing() -> bool:
        status = await router.registry.status()
        return status is not None and status.role in ("leader", "memory")

    await eventually(writing, timeout=10, what="the router to take registrations")


def registration(metadata: dict[str, Any], session: str = SESSION, **extra: Any) -> dict[str, Any]:
    return {"service_name": "orders", "instance_id": "orders-1", "metadata": metadata,
            "session_id": session, **extra}  # fmt: skip


async def test_every_reply_echoes_the_nonce_when_the_request_could_be_read(
    routers: InProcessRouters, nc: NatsClient
) -> None:
    created = await nats_request(nc, REGISTER_SUBJECT, registration({}, nonce=NONCE))
    assert (created["status"], created["nonce"]) == (201, NONCE)
    conflict = await nats_request(nc, REGISTER_SUBJECT, registration({}, OTHER, nonce=NONCE))
    assert (conflict["status"], conflict["nonce"]) == (409, NONCE)
    invalid = await nats_request(
        nc, REGISTER_SUBJECT, {"service_name": "a.b", "instance_id": "x", "nonce": NONCE}
    )
    assert (invalid["status"], invalid["nonce"]) == (400, NONCE)
    lease = {"service_name": "orders", "instance_id": "nope", "session_id": SESSION, "nonce": NONCE}
    assert (await nats_request(nc, HEARTBEAT_SUBJECT, lease))["nonce"] == NONCE
    assert (await nats_request(nc, LIST_SUBJECT, {"nonce": NONCE}))["nonce"] == NONCE
    without = await nats_request(nc, REGISTER_SUBJECT, registration({}))
    assert "nonce" not in without
    unreadable = await nats_request(nc, REGISTER_SUBJECT, b"hello")
    assert unreadable["status"] == 400 and "nonce" not in unreadable


async def test_a_repeat_with_new_metadata_of_an_unhealthy_instance_sends_online_then_metadata_updated(
    routers: InProcessRouters, nc: NatsClient, orders_events: Events
) -> None:
    await nats_request(nc, REGISTER_SUBJECT, registration({"version": "1.4.2"}))
    registered = await orders_events.until("registered")
    unhealthy = await orders_events.until("unhealthy")  # no heartbeats: after lease_ttl

    reply = await nats_request(nc, REGISTER_SUBJECT, registration({"version": "1.5.0"}))
    online, updated = await orders_events.next(), await orders_events.next()

    assert reply["status"] == 200
    assert [online["type"], updated["type"]] == ["online", "metadata_updated"]
    assert online["previous_revision"] == unhealthy["revision"]
    assert updated["previous_revision"] == online["revision"]
    for event in (online, updated):
        assert event["instance"] == reply["instance"]  # new metadata, renewed lease
    assert updated["instance"]["last_heartbeat"] > registered["instance"]["last_heartbeat"]


async def test_a_new_client_takes_over_an_unhealthy_instance_with_201_and_a_replaced_event(
    routers: InProcessRouters, nc: NatsClient, orders_events: Events
) -> None:
    await nats_request(nc, REGISTER_SUBJECT, registration({"v": 1}))
    assert (await nats_request(nc, REGISTER_SUBJECT, registration({"v": 2}, OTHER)))["status"] == 409
    await orders_events.until("unhealthy")
    taken = await nats_request(nc, REGISTER_SUBJECT, registration({"v": 2}, OTHER))
    replaced = await orders_events.until("replaced")
    assert taken["status"] == 201
    assert replaced["instance"] == taken["instance"]
    old_holder = {"service_name": "orders", "instance_id": "orders-1", "session_id": SESSION}
    assert (await nats_request(nc, HEARTBEAT_SUBJECT, old_holder))["status"] == 403


@pytest.mark.parametrize("routers", ["stream"], indirect=True)
async def test_in_stream_mode_revisions_go_on_across_a_restart_and_the_epoch_stays(
    routers: InProcessRouters, nc: NatsClient, orders_events: Events
) -> None:
    await nats_request(nc, REGISTER_SUBJECT, registration({}))
    first = await orders_events.until("registered")
    await routers.stop_all()
    routers.started.clear()
    await start_serving(routers, "stream")
    reply = await nats_request(
        nc, REGISTER_SUBJECT, {**registration({}), "instance_id": "orders-2"}
    )
    second = await orders_events.until("registered")
    assert reply["status"] == 201
    assert second["epoch"] == first["epoch"]
    # Increasing, not contiguous: the new leader's term marker took a sequence number.
    assert second["revision"] > first["revision"] + 1
    assert second["previous_revision"] >= first["revision"]
