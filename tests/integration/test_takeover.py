"""Restarting a crashed service just works (issue 12.4): a registration for an instance
whose holder stopped renewing takes it over; a holder that still renews keeps it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from protocol import EventType, LeasePolicy
from sdk import ConflictError, InstanceStatus, ServiceClient
from tests.support.events import EventLog, watching_events
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

POLICY = LeasePolicy(heartbeat_interval=0.2, lease_ttl=0.8, offline_after=30, offline_retention=60)


@pytest.fixture
def lease_policy() -> LeasePolicy:
    return POLICY


@pytest.fixture
async def events(nats_server: NatsServerProcess) -> AsyncIterator[EventLog]:
    async with watching_events(nats_server.url) as log:
        yield log


async def test_a_restarted_service_takes_its_id_back_once_the_old_lease_runs_out(
    router: Router, nats_server: NatsServerProcess, events: EventLog
) -> None:
    crashed = ServiceClient(nats_server.url, heartbeat=False)  # stops renewing, as if killed
    restarted = ServiceClient(nats_server.url)
    try:
        await crashed.register("orders", "orders-1", {"run": "1"})
        loop = asyncio.get_running_loop()
        started = loop.time()
        info = await restarted.register("orders", "orders-1", {"run": "2"})  # no ConflictError
        waited = loop.time() - started
        assert info.created
        assert info.metadata == {"run": "2"}
        assert waited <= POLICY.lease_ttl + 1.5
        replaced = await events.wait_for(EventType.REPLACED, timeout=15)
        assert replaced.instance.metadata == {"run": "2"}
        assert replaced.instance.status is InstanceStatus.ONLINE
    finally:
        await restarted.close()
        await crashed.close()


async def test_a_holder_that_keeps_renewing_keeps_its_id(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with (
        ServiceClient(nats_server.url) as holder,
        ServiceClient(nats_server.url, stale_holder_wait=POLICY.lease_ttl + 1) as other,
    ):
        await holder.register("orders", "orders-1")
        with pytest.raises(ConflictError):
            await other.register("orders", "orders-1")
        assert holder.registered == [("orders", "orders-1")]


async def test_the_old_holder_gives_the_id_up_when_its_heartbeat_is_refused(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as old, ServiceClient(nats_server.url) as new:
        await old.register("orders", "orders-1")
        await old._leases.stop()  # paused, as by a long GC or a SIGSTOP
        await new.register("orders", "orders-1")  # waits the old lease out, takes over
        old._start_heartbeats()  # its next heartbeat: 403 -> it gives the id up
        await eventually(lambda: old.registered == [], timeout=10, what="the old holder to give up")
        assert new.registered == [("orders", "orders-1")]
        detail = await router.registry.get_service("orders")
        assert [i.status for i in detail.instances] == [InstanceStatus.ONLINE]
