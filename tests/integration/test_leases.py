"""Heartbeats, deregistration and self-healing through the SDK, against a real
nats-server and an in-process router with short lease times."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient

from actors.actor import Actor
from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.registry import RegistryActor
from actors.registry_state import Transition
from protocol import (
    DEREGISTER_SUBJECT,
    HEARTBEAT_SUBJECT,
    InstanceStatus,
    LeasePolicy,
    LeaseReply,
    LeaseRequest,
    ProtocolError,
)
from sdk import RegistryError, ServiceClient
from tests.support.actors import incarnation
from tests.support.nats_requests import nats_request
from tests.support.waiting import eventually

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


async def has_status(router: Router, instance: str, status: InstanceStatus) -> bool:
    return await status_of(router, instance) is status


def restarted(router: Router, old: Actor) -> bool:
    """The registry runs again, as a new incarnation."""
    return router.registry.alive and incarnation(router.registry.ref) is not old


def lease(session: str, instance: str = "orders-1") -> dict[str, str]:
    """A heartbeat or deregistration of an "orders" instance, as a foreign client sends it."""
    return {"service_name": "orders", "instance_id": instance, "session_id": session}


async def test_register_reply_tells_the_heartbeat_interval_and_ttl(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        info = await client.register("orders", "orders-1")
    assert info.heartbeat_interval == POLICY.heartbeat_interval
    assert info.lease_ttl == POLICY.lease_ttl


async def test_sdk_heartbeats_keep_an_instance_online_well_past_its_ttl(
    router: Router, nats_server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = incarnation(router.registry.ref)
    assert isinstance(registry, RegistryActor)
    beats: list[LeaseRequest] = []
    unhealthy: list[str] = []
    renew = registry.state.heartbeat
    log_transitions = registry._log.transitions

    def count_beat(request: LeaseRequest) -> LeaseReply:
        beats.append(request)
        return renew(request)

    def watch(transitions: list[Transition]) -> None:
        unhealthy.extend(t.instance_id for t in transitions if t.new is InstanceStatus.UNHEALTHY)
        log_transitions(transitions)

    monkeypatch.setattr(registry.state, "heartbeat", count_beat)
    monkeypatch.setattr(registry._log, "transitions", watch)
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        await eventually(lambda: len(beats) >= 10, what="ten heartbeats")  # over 3 TTLs
        assert await status_of(router, "orders-1") is InstanceStatus.ONLINE
    assert unhealthy == []


async def test_instance_without_heartbeats_goes_unhealthy_then_offline(
    router: Router, nats_server: NatsServerProcess
) -> None:
    client = ServiceClient(nats_server.url, heartbeat=False)
    await client.connect()
    try:
        await client.register("orders", "orders-1")
        await eventually(lambda: has_status(router, "orders-1", InstanceStatus.UNHEALTHY))
        await eventually(lambda: has_status(router, "orders-1", InstanceStatus.OFFLINE))
    finally:
        await client.close()


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
            reply = await nats_request(nc, subject, lease("intruder-session-000001"))
            assert reply["status"] == 403
            assert reply["error"]["code"] == "not_owner"
        other = ServiceClient(nc=nc)
        with pytest.raises(RegistryError) as caught:
            await other.deregister("orders", "orders-1")
        assert caught.value.status == 403
        assert await status_of(router, "orders-1") is InstanceStatus.ONLINE


async def test_heartbeat_for_an_unknown_instance_is_404(router: Router, nc: NatsClient) -> None:
    reply = await nats_request(nc, HEARTBEAT_SUBJECT, lease("any-session-00000001", "ghost"))
    assert reply["status"] == 404
    assert reply["error"]["code"] == "instance_not_found"


async def test_invalid_heartbeat_is_a_400_with_the_field(router: Router, nc: NatsClient) -> None:
    reply = await nats_request(nc, HEARTBEAT_SUBJECT, {"service_name": "orders"})
    assert reply["status"] == 400
    assert reply["error"]["details"]["field"] == "$.instance_id"


async def test_registry_crash_and_restart_is_healed_by_the_sdk(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1", {"zone": "a"})
        old = incarnation(router.registry.ref)
        old.crash(RuntimeError("injected fault"))
        await eventually(lambda: restarted(router, old))
        await eventually(lambda: has_status(router, "orders-1", InstanceStatus.ONLINE))
        detail = await router.registry.get_service("orders")
        assert detail.instances[0].metadata == {"zone": "a"}


async def test_instance_claimed_by_another_client_while_forgotten_is_given_up(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as first, ServiceClient(nats_server.url) as second:
        await first.register("orders", "orders-1")
        await first._leases.stop()  # hold the first client's beats for the set-up
        old = incarnation(router.registry.ref)
        old.crash(RuntimeError("injected fault"))
        await eventually(lambda: restarted(router, old))
        await second.register("orders", "orders-1")
        first._start_heartbeats()  # 404 -> registers again -> 409 -> gives the id up
        await eventually(lambda: first.registered == [])
        assert second.registered == [("orders", "orders-1")]
        assert await status_of(router, "orders-1") is InstanceStatus.ONLINE
