"""Faults against real processes: a crash inside the RegistryActor, and the NATS
server going away and coming back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from actors.actor import ActorDeadError
from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.registry import RegistryActor
from protocol import REGISTER_SUBJECT, InstanceStatus, LeasePolicy, ProtocolError
from sdk import ServiceClient
from tests.support.actors import incarnation
from tests.support.nats_requests import nats_request
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

POLICY = LeasePolicy(heartbeat_interval=0.2, lease_ttl=0.6, offline_after=30, offline_retention=30)


@pytest.fixture
def lease_policy() -> LeasePolicy:
    return POLICY


async def statuses(router: Router, service: str = "orders") -> dict[str, InstanceStatus]:
    try:
        detail = await router.registry.get_service(service)
    except (ProtocolError, ActorDeadError):  # unknown service, or registry restarting
        return {}
    return {i.instance_id: i.status for i in detail.instances}


async def all_have_status(router: Router, instances: list[str], status: InstanceStatus) -> bool:
    now = await statuses(router)
    return all(now.get(i) is status for i in instances)


async def gateway_disconnected(router: Router) -> bool:
    return not await router.nats_gateway.connected()


async def test_a_crash_inside_the_registry_answers_every_caller_and_heals(
    router: Router, nats_server: NatsServerProcess, nc: NatsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ServiceClient(nats_server.url) as survivor:
        await survivor.register("orders", "survivor", {"zone": "a"})
        registry = incarnation(router.registry.ref)
        assert isinstance(registry, RegistryActor)
        original = registry.state.register

        def poisoned(request: Any) -> Any:
            if request.instance_id == "poison":
                raise RuntimeError("injected fault")
            return original(request)

        monkeypatch.setattr(registry.state, "register", poisoned)

        async def status_of_registering(instance: str) -> int:
            request = {"service_name": "orders", "instance_id": instance}
            return int((await nats_request(nc, REGISTER_SUBJECT, request))["status"])

        names = [f"before-{n}" for n in range(20)] + ["poison"] + [f"after-{n}" for n in range(20)]
        answers = await asyncio.gather(*(status_of_registering(n) for n in names))
        replies = dict(zip(names, answers, strict=True))  # every caller got an answer
        assert replies["poison"] == 500
        assert set(replies.values()) <= {201, 500, 503}
        assert incarnation(router.registry.ref) is not registry  # restarted by its supervisor
        took = await eventually(
            lambda: all_have_status(router, ["survivor"], InstanceStatus.ONLINE)
        )
        print(f"registry crash: the survivor was back ONLINE {took:.3f} s after the crash")
        detail = await router.registry.get_service("orders")
        assert [i.metadata for i in detail.instances if i.instance_id == "survivor"] == [{"zone": "a"}]


async def test_nats_server_restart_is_survived_by_router_and_clients(
    router: Router, nats_server: NatsServerProcess
) -> None:
    clients = [ServiceClient(nats_server.url) for _ in range(3)]
    names = [f"orders-{n}" for n in range(3)]
    try:
        for client, name in zip(clients, names, strict=True):
            await client.connect()
            await client.register("orders", name)
        await nats_server.stop()
        await eventually(lambda: gateway_disconnected(router))
        # Down for longer than the lease TTL: every instance goes UNHEALTHY meanwhile.
        await eventually(lambda: all_have_status(router, names, InstanceStatus.UNHEALTHY))
        restarted = NatsServerProcess(port=nats_server.port, jetstream=False)
        await restarted.start()
        try:
            took = await eventually(lambda: all_have_status(router, names, InstanceStatus.ONLINE))
            print(f"nats restart: all instances ONLINE {took:.3f} s after the server was back")
            assert took < 10 * POLICY.heartbeat_interval + 2.0  # reconnect wait + a few beats
            assert await router.nats_gateway.connected()
            async with ServiceClient(restarted.url) as late:
                assert (await late.register("orders", "late")).created
        finally:
            for client in clients:
                await client.close()
            await restarted.stop()
    finally:
        for client in clients:
            await client.close()
