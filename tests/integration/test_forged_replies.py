"""Replies that someone else makes arrive on a client's inbox: the SDK believes only
the reply that echoes its own request's nonce (issue 10.2).

Here the attacker races the router: it listens on the request subjects as a second
responder would (on a server without permissions) and answers first, with a reply
that would stop a service renewing its instance for good (a 403), or put the
attacker's host into a discovery result. Under deploy/nats-server.conf it could not
listen there, but it could still make the router answer on a victim's inbox (see
test_least_privilege.py); either way, the forged reply lands on the victim's inbox.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from protocol import (
    GET_SUBJECT,
    HEARTBEAT_SUBJECT,
    LeasePolicy,
    encode_msgpack,
)
from sdk import ServiceClient
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

POLICY = LeasePolicy(heartbeat_interval=0.1, lease_ttl=0.5, offline_after=1, offline_retention=5)


@pytest.fixture
def lease_policy() -> LeasePolicy:
    return POLICY


class Forger:
    """Answers every request on `subject` before the router can, with `reply`."""

    def __init__(self, reply: dict[str, object]) -> None:
        self.reply = encode_msgpack(reply)
        self.forged = 0

    async def on_request(self, msg: Msg) -> None:
        if msg.reply:
            await msg.respond(self.reply)
            self.forged += 1


@pytest.fixture
def attacker(nc: NatsClient) -> NatsClient:
    """A plain client on the bus, racing the router."""
    return nc


async def test_a_forged_403_does_not_stop_a_service_renewing_its_instance(
    router: Router, nats_server: NatsServerProcess, attacker: NatsClient
) -> None:
    forger = Forger({"status": 403, "error": {"code": "not_owner", "message": "forged", "details": {}}})
    await attacker.subscribe(HEARTBEAT_SUBJECT, cb=forger.on_request)
    await attacker.flush()
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        # Many beats, each answered first by the forger.
        await eventually(lambda: forger.forged >= 20, timeout=10, what="20 forged replies")
        assert client.registered == [("orders", "orders-1")]
        detail = await router.registry.get_service("orders")
        assert [i.status.value for i in detail.instances] == ["ONLINE"]
        # Forged replies that came first were read and ignored (one believed 403 would
        # have ended the renewals); those that came after the genuine one found no
        # request waiting.
        assert client._exchange is not None and client._exchange.ignored >= 5


async def test_a_forged_get_reply_cannot_put_an_attackers_host_into_discovery(
    router: Router, nats_server: NatsServerProcess, attacker: NatsClient
) -> None:
    now = datetime.now(UTC)
    evil = {
        "service_name": "orders",
        "instance_id": "evil",
        "status": "ONLINE",
        "metadata": {"host": "attacker.example"},
        "registered_at": now,
    }
    forged = {
        "status": 200,
        "result": {
            "service_name": "orders",
            "instances": [evil],
            "next_cursor": None,
            "epoch": "x",
            "revision": 1,
            "service_revision": 1,
            "router_uptime": 100.0,
            "lease_ttl": 3.0,
        },
    }
    forger = Forger(forged)
    forger.reply = msgpack.packb(forged, datetime=True)
    await attacker.subscribe(GET_SUBJECT, cb=forger.on_request)
    await attacker.flush()
    async with ServiceClient(nats_server.url) as owner, ServiceClient(nats_server.url) as reader:
        await owner.register("orders", "real", {"host": "10.0.0.1"})
        instances = await reader.get_instances("orders")
        assert [(i.instance_id, i.metadata["host"]) for i in instances] == [("real", "10.0.0.1")]
        assert forger.forged >= 1
        cache = await reader.discover("orders")
        assert [i.instance_id for i in cache.instances] == ["real"]


async def test_a_genuine_reply_about_another_instance_is_not_taken_for_ours(
    router: Router, nats_server: NatsServerProcess
) -> None:
    """The nonce is the main check; the reply must also name what was asked for."""
    async with ServiceClient(nats_server.url) as client:
        info = await client.register("orders", "orders-1", {"zone": "a"})
        assert (info.service_name, info.instance_id) == ("orders", "orders-1")
        exchange = client._exchange
        assert exchange is not None and exchange.ignored == 0
