"""Drain and force-deregister (issue 17.1), against routers on a real nats-server.

An instance's own client puts it into maintenance through the SDK; an operator does
it, or removes an instance, through the admin API (behind the token). On a router
that does not lead, the operator's write is signed and passed on to the leader over
NATS; a forged or replayed command on that subject changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.msg import Msg

from actors.admin_commands import AdminAction, AdminCommand, seal_command
from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.openapi import ADMIN_BASE
from protocol import (
    ROUTER_ADMIN_SUBJECT,
    ErrorCode,
    EventType,
    InstanceStatus,
    LeasePolicy,
    decode_instance_reply,
)
from sdk import RegistryError, ServiceClient
from tests.support.events import EventLog, watching_events
from tests.support.nats_logs import LogEntries
from tests.support.routers import InProcessRouters
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

TOKEN = "operator-token-0123456789abcdef"
POLICY = LeasePolicy(heartbeat_interval=0.2, lease_ttl=0.8, offline_after=30, offline_retention=60)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def events(nats_server: NatsServerProcess) -> AsyncIterator[EventLog]:
    async with watching_events(nats_server.url) as log:
        yield log


@pytest.fixture
async def router(routers: InProcessRouters) -> Router:
    return await routers.start(lease_policy=POLICY, admin_token=TOKEN)


def instance_url(router: Router, instance: str, service: str = "orders") -> str:
    return f"http://127.0.0.1:{router.http_port}{ADMIN_BASE}/services/{service}/instances/{instance}"


async def call(method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers, **kwargs) as reply:
        return reply.status, await reply.json(content_type=None)


async def test_the_owner_drains_its_instance_and_discovery_leaves_it_out(
    router: Router, nats_server: NatsServerProcess, events: EventLog
) -> None:
    async with ServiceClient(nats_server.url) as owner, ServiceClient(nats_server.url) as caller:
        await owner.register("orders", "orders-1")
        await owner.register("orders", "orders-2")
        cache = await caller.discover("orders")
        await cache.wait_for(lambda found: len(found) == 2, timeout=10)

        instance = await owner.set_maintenance("orders", "orders-1", True, reason="deploying 1.4.3")
        assert instance.status is InstanceStatus.ONLINE and instance.maintenance is not None
        assert (instance.maintenance.by, instance.maintenance.reason) == ("owner", "deploying 1.4.3")
        await cache.wait_for(lambda found: [i.instance_id for i in found] == ["orders-2"], timeout=10)
        assert [i.instance_id for i in await caller.get_instances("orders")] == ["orders-2"]
        every = await caller.get_instances("orders", status=None)
        assert [(i.instance_id, i.maintenance is not None) for i in every] == [
            ("orders-1", True), ("orders-2", False),
        ]  # fmt: skip
        [summary] = await caller.list_services()
        assert summary.in_maintenance == 1 and summary.status_counts == {InstanceStatus.ONLINE: 2}
        entered = await events.wait_for(EventType.MAINTENANCE_ON, "orders", timeout=10)
        assert entered.reason == "deploying 1.4.3"

        await owner.set_maintenance("orders", "orders-1", False)
        await cache.wait_for(lambda found: len(found) == 2, timeout=10)
        await events.wait_for(EventType.MAINTENANCE_OFF, "orders", timeout=10)

        with pytest.raises(RegistryError) as caught:
            await caller.set_maintenance("orders", "orders-1", True)
        assert (caught.value.status, caught.value.code) == (403, ErrorCode.NOT_OWNER)


async def test_an_instance_in_maintenance_keeps_its_lease(router: Router, nats_server: NatsServerProcess) -> None:
    async with ServiceClient(nats_server.url) as owner:
        await owner.register("orders", "orders-1")
        await owner.set_maintenance("orders", "orders-1", True, reason="drain")
        before = (await router.registry.get_service("orders")).instances[0].last_heartbeat

        async def renewed() -> bool:
            [now] = (await router.registry.get_service("orders")).instances
            return now.last_heartbeat != before

        await eventually(renewed, timeout=10, what="a heartbeat while in maintenance")
        [now] = (await router.registry.get_service("orders")).instances
        assert now.status is InstanceStatus.ONLINE and now.maintenance is not None


async def test_an_operator_drains_through_the_admin_api_and_only_an_operator_ends_it(
    router: Router, nats_server: NatsServerProcess, server_log: LogEntries
) -> None:
    async with ServiceClient(nats_server.url) as owner:
        await owner.register("orders", "orders-1")
        url = instance_url(router, "orders-1") + "/maintenance"
        status, body = await call("PUT", url, json={"reason": "bad disk"})
        assert (status, body["error"]["code"]) == (401, "unauthorized")

        status, body = await call("PUT", url, AUTH, json={"reason": "bad disk"})
        assert status == 200, body
        assert body["instance"]["maintenance"]["by"] == "admin"
        assert body["instance"]["maintenance"]["reason"] == "bad disk"
        assert body["instance"]["maintenance"]["since"].endswith("Z")
        with pytest.raises(RegistryError) as caught:
            await owner.set_maintenance("orders", "orders-1", False)
        assert (caught.value.status, caught.value.code) == (403, ErrorCode.MAINTENANCE_HELD)

        status, body = await call("DELETE", url, AUTH)
        assert status == 200 and "maintenance" not in body["instance"]
    writes = [e for e in server_log if e.get("event") == "operator_write"]
    assert [(w["action"], w["by"], w["status"]) for w in writes] == [
        ("maintenance_on", "admin", 200), ("maintenance_off", "admin", 200),
    ]  # fmt: skip
    assert TOKEN not in repr(server_log)


async def test_an_instance_an_operator_removed_is_not_registered_again_by_its_sdk(
    router: Router, nats_server: NatsServerProcess, events: EventLog
) -> None:
    removed: list[tuple[str, str]] = []
    got_removed = asyncio.Event()

    def on_removed(service: str, instance: str) -> None:
        removed.append((service, instance))
        got_removed.set()

    async with ServiceClient(nats_server.url, on_removed=on_removed) as owner:
        await owner.register("orders", "orders-1")
        await owner.register("orders", "orders-2")
        status, body = await call("DELETE", instance_url(router, "orders-1"), AUTH)
        assert status == 200 and body["instance"]["status"] == "OFFLINE"
        event = await events.wait_for(EventType.DEREGISTERED, "orders", timeout=10)
        assert (event.instance.instance_id, event.reason) == ("orders-1", "admin")

        await asyncio.wait_for(got_removed.wait(), 10)  # its next heartbeat said so
        assert removed == [("orders", "orders-1")]
        # It is no longer renewed, hence never registered again by the SDK ...
        assert owner.registered == [("orders", "orders-2")]
        detail = await router.registry.get_service("orders")
        assert {i.instance_id: i.status for i in detail.instances}["orders-1"] is InstanceStatus.OFFLINE
        # ... while its owner may bring it back explicitly.
        await owner.register("orders", "orders-1")
        assert sorted(owner.registered) == [("orders", "orders-1"), ("orders", "orders-2")]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("DELETE", "/services/orders/instances/nobody", {}, 404, "instance_not_found"),
        ("PUT", "/services/orders/instances/nobody/maintenance", {}, 404, "instance_not_found"),
        ("PUT", "/services/bad.name/instances/x/maintenance", {}, 404, "instance_not_found"),
        ("PUT", "/services/orders/instances/orders-1/maintenance", {"json": {"reason": "x" * 201}}, 400, "invalid_field"),
        ("PUT", "/services/orders/instances/orders-1/maintenance", {"json": {"why": "x"}}, 400, "invalid_field"),
        ("PUT", "/services/orders/instances/orders-1/maintenance", {"data": "reason=x"}, 400, "invalid_payload"),
        ("PUT", "/services/orders/instances/orders-1/maintenance", {"data": b"{" * 5000,
         "headers": {"Content-Type": "application/json", **AUTH}}, 413, "payload_too_large"),
        ("POST", "/services/orders/instances/orders-1/maintenance", {}, 405, "method_not_allowed"),
    ],
)  # fmt: skip
async def test_an_operator_write_that_cannot_be_applied_gets_a_clear_error_and_changes_nothing(
    router: Router, nats_server: NatsServerProcess, method: str, path: str, kwargs: dict[str, Any],
    status: int, code: str,
) -> None:  # fmt: skip
    async with ServiceClient(nats_server.url) as owner:
        await owner.register("orders", "orders-1")
        headers = kwargs.pop("headers", AUTH)
        got, body = await call(method, f"http://127.0.0.1:{router.http_port}{ADMIN_BASE}{path}", headers, **kwargs)
        assert (got, body["error"]["code"]) == (status, code), body
        [instance] = (await router.registry.get_service("orders")).instances
        assert instance.maintenance is None and instance.status is InstanceStatus.ONLINE


async def stream_routers(routers: InProcessRouters, count: int) -> list[Router]:
    started = [
        await routers.start(store="stream", lease_policy=POLICY, presence_wait=0.05, admin_token=TOKEN)
        for _ in range(count)
    ]

    async def one_leads() -> bool:
        roles = [await role(router) for router in started]
        return roles.count("leader") == 1 and all(found in ("leader", "standby") for found in roles)

    await eventually(one_leads, timeout=20, what="one leader and the rest standing by")
    return started


async def role(router: Router) -> str | None:
    status = await router.registry.status()
    return str(status.role) if status else None


async def test_a_standbys_admin_api_passes_the_write_to_the_leader_and_it_survives_failover(
    routers: InProcessRouters, nats_server: NatsServerProcess, server_log: LogEntries
) -> None:
    first, second = await stream_routers(routers, 2)
    leader, standby = (first, second) if await role(first) == "leader" else (second, first)
    async with ServiceClient(nats_server.url) as owner:
        await owner.register("orders", "orders-1")
        await owner.register("orders", "orders-2")
        status, body = await call("PUT", instance_url(standby, "orders-1") + "/maintenance", AUTH,
                                  json={"reason": "investigating"})  # fmt: skip
        assert status == 200, body
        assert body["instance"]["maintenance"]["reason"] == "investigating"
        [write] = [e for e in server_log if e.get("event") == "operator_write"]
        assert write["applied"] == "leader" and write["by"] == "admin"

        async def standby_sees_it() -> bool:
            detail = await standby.registry.get_service("orders")
            return any(i.maintenance is not None for i in detail.instances)

        await eventually(standby_sees_it, timeout=10, what="the standby to read the change")
        await leader.stop()

        async def standby_leads() -> bool:
            return await role(standby) == "leader"

        await eventually(standby_leads, timeout=20, what="the standby to take over")
        assert [i.instance_id for i in await owner.get_instances("orders")] == ["orders-2"]
        with pytest.raises(RegistryError) as caught:
            await owner.set_maintenance("orders", "orders-1", False)
        assert caught.value.code == ErrorCode.MAINTENANCE_HELD
        status, body = await call("DELETE", instance_url(standby, "orders-1") + "/maintenance", AUTH)
        assert status == 200 and "maintenance" not in body["instance"]


async def test_a_forged_or_replayed_operator_command_changes_nothing(
    routers: InProcessRouters, nats_server: NatsServerProcess, server_log: LogEntries
) -> None:
    """Anyone on the bus can publish on `ipc.router.admin`: an eavesdropper records the
    sealed command a standby passes on, then replays it; another sends garbage and a
    command signed with a key of its own."""
    first, second = await stream_routers(routers, 2)
    standby = second if await role(first) == "leader" else first
    spy = await nats.connect(nats_server.url)
    overheard: list[bytes] = []

    async def overhear(msg: Msg) -> None:
        overheard.append(msg.data)

    await spy.subscribe(ROUTER_ADMIN_SUBJECT, cb=overhear)
    await spy.flush()
    try:
        async with ServiceClient(nats_server.url) as owner:
            await owner.register("orders", "orders-1")
            url = instance_url(standby, "orders-1") + "/maintenance"
            assert (await call("PUT", url, AUTH, json={"reason": "x"}))[0] == 200
            assert (await call("DELETE", url, AUTH))[0] == 200
            await eventually(lambda: len(overheard) == 2, timeout=10, what="the spy to overhear both")

            forged = seal_command(
                AdminCommand(action=AdminAction.DEREGISTER, service_name="orders", instance_id="orders-1"),
                b"k" * 32,
            )
            for attempt in (overheard[0], b"\x80", b"garbage" * 10, forged):
                reply = await spy.request(ROUTER_ADMIN_SUBJECT, attempt, timeout=5)
                answer = decode_instance_reply(reply.data)
                assert answer.status == 403 and answer.error is not None, answer
            [instance] = (await owner.get_instances("orders", status=None))
            assert instance.status is InstanceStatus.ONLINE and instance.maintenance is None
    finally:
        await spy.close()
    refused = [e for e in server_log if e.get("event") == "operator_command_refused"]
    assert refused and "replay" in refused[0]["reason"]
