"""Heartbeats, deregistration and self-healing through the SDK, against a real
nats-server and an in-process router with short lease times."""

from __future__ import annotations

from tests.conftest import incarnation

from actors.registry_state import Transition

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client as NatsClient

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.registry import RegistryActor
from protocol import DEREGISTER_SUBJECT, HEARTBEAT_SUBJECT, InstanceStatus, LeasePolicy, ProtocolError
from sdk import RegistryError, ServiceClient

pytestmark = pytest.mark.timeout(30)

POLICY = LeasePolicy(heartbeat_interval=0.1, lease_ttl=0.3, offline_after=0.3, offline_retention=30)


@pytest.fixture
def lease_policy() -> LeasePolicy:
    return POLICY


async def status_of(router: Router, instance: str) -> InstanceStatus | None:
    try:
        detail = await router.registry.get_service("orders")
    except ProtocolError:
        return None
    found = [i.status for i in detail.instances if i.instance_id == instance]
    return found[0] if found else None


async def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Re-check after every heartbeat-sized tick; fail after `timeout`."""

    async def loop() -> None:
        while not await check():
            await asyncio.sleep(POLICY.heartbeat_interval / 2)

    await asyncio.wait_for(loop(), timeout)


async def lease_request(nc: NatsClient, subject: str, session: str, instance: str = "orders-1") -> dict[str, Any]:
    payload = {"service_name": "orders", "instance_id": instance, "session_id": session}
    reply = await nc.request(subject, msgpack.packb(payload), timeout=5)
    decoded: dict[str, Any] = msgpack.unpackb(reply.data, timestamp=3)
    return decoded


async def test_register_reply_tells_the_heartbeat_interval_and_ttl(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        info = await client.register("orders", "orders-1")
    assert info.heartbeat_interval == POLICY.heartbeat_interval
    assert info.lease_ttl == POLICY.lease_ttl


async def test_sdk_heartbeats_keep_an_instance_online_well_past_its_ttl(
    router: Router, nats_server: NatsServerProcess
) -> None:
    unhealthy: list[str] = []
    registry = incarnation(router.registry.ref)
    assert isinstance(registry, RegistryActor)
    original = registry._log_transitions

    def watch(transitions: list[Transition]) -> None:
        unhealthy.extend(t.instance_id for t in transitions if t.new is InstanceStatus.UNHEALTHY)
        original(transitions)

    registry._log_transitions = watch  # type: ignore[method-assign]
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        beats = 0

        async def ten_ttls_of_beats() -> bool:
            nonlocal beats
            beats += 1
            return beats > 20  # 20 half-intervals = 10 intervals = 3+ TTLs

        await wait_until(ten_ttls_of_beats)
        assert await status_of(router, "orders-1") is InstanceStatus.ONLINE
    assert unhealthy == []


async def test_instance_without_heartbeats_goes_unhealthy_then_offline(
    router: Router, nats_server: NatsServerProcess
) -> None:
    client = ServiceClient(nats_server.url, heartbeat=False)
    await client.connect()
    try:
        await client.register("orders", "orders-1")
        await wait_until(lambda: _is(router, "orders-1", InstanceStatus.UNHEALTHY))
        await wait_until(lambda: _is(router, "orders-1", InstanceStatus.OFFLINE))
    finally:
        await client.close()


async def _is(router: Router, instance: str, status: InstanceStatus) -> bool:
    return await status_of(router, instance) is status


async def test_leaving_the_context_deregisters_the_instances(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        await client.register("orders", "orders-2")
    assert await status_of(router, "orders-1") is InstanceStatus.OFFLINE
    assert await status_of(router, "orders-2") is InstanceStatus.OFFLINE


async def test_explicit_deregistration_is_idempotent_and_stops_heartbeats(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        await client.deregister("orders", "orders-1")
        await client.deregister("orders", "orders-1")
        assert client.registered == []
        assert await status_of(router, "orders-1") is InstanceStatus.OFFLINE


async def test_another_session_cannot_renew_or_deregister_someone_elses_instance(
    router: Router, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        for subject in (HEARTBEAT_SUBJECT, DEREGISTER_SUBJECT):
            reply = await lease_request(nc, subject, "intruder-session-000001")
            assert reply["status"] == 403
            assert reply["error"]["code"] == "not_owner"
        other = ServiceClient(nc=nc)
        with pytest.raises(RegistryError) as caught:
            await other.deregister("orders", "orders-1")
        assert caught.value.status == 403
        assert await status_of(router, "orders-1") is InstanceStatus.ONLINE


async def test_heartbeat_for_an_unknown_instance_is_404(router: Router, nc: NatsClient) -> None:
    reply = await lease_request(nc, HEARTBEAT_SUBJECT, "any-session-00000001", "ghost")
    assert reply["status"] == 404
    assert reply["error"]["code"] == "instance_not_found"


async def test_invalid_heartbeat_is_a_400_with_the_field(router: Router, nc: NatsClient) -> None:
    reply = await nc.request(HEARTBEAT_SUBJECT, msgpack.packb({"service_name": "orders"}), timeout=5)
    body = msgpack.unpackb(reply.data)
    assert body["status"] == 400
    assert body["error"]["details"]["field"] == "$.instance_id"


async def test_registry_crash_and_restart_is_healed_by_the_sdk(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1", {"zone": "a"})
        old = incarnation(router.registry.ref)
        old.crash(RuntimeError("injected fault"))
        await wait_until(lambda: _restarted(router, old))
        await wait_until(lambda: _is(router, "orders-1", InstanceStatus.ONLINE))
        detail = await router.registry.get_service("orders")
        assert detail.instances[0].metadata == {"zone": "a"}


async def _restarted(router: Router, old: object) -> bool:
    return router.registry.alive and incarnation(router.registry.ref) is not old


async def test_instance_claimed_by_another_client_while_forgotten_is_given_up(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as first, ServiceClient(nats_server.url) as second:
        await first.register("orders", "orders-1")
        await first._stop_heartbeats()  # hold the first client's beats for the set-up
        old = incarnation(router.registry.ref)
        old.crash(RuntimeError("injected fault"))
        await wait_until(lambda: _restarted(router, old))
        await second.register("orders", "orders-1")
        first._start_heartbeats()  # 404 -> registers again -> 409 -> gives the id up
        await wait_until(lambda: _given_up(first))
        assert second.registered == [("orders", "orders-1")]
        assert await status_of(router, "orders-1") is InstanceStatus.ONLINE


async def _given_up(client: ServiceClient) -> bool:
    return client.registered == []
