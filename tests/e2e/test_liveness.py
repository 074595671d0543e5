"""Liveness from the outside: real service processes killed, paused and stopped,
and a router killed and restarted, all watched through the router's JSON log."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime

import aiohttp
import pytest

from actors.embedded_nats import NatsServerProcess
from sdk import ServiceClient
from tests.support.network import free_port
from tests.support.processes import RouterLauncher, ServiceLauncher
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

INTERVAL, TTL, OFFLINE_AFTER = 0.2, 0.6, 0.6


def router_options(
    nats_url: str, http_port: int | None = None, *, interval: float = INTERVAL, ttl: float = TTL
) -> list[str]:
    """`serve` options: the test's nats-server, short leases, an HTTP port (a free one
    unless given)."""
    return [
        "--nats-url", nats_url,
        "--http-port", str(http_port or free_port()),
        "--heartbeat-interval", str(interval),
        "--lease-ttl", str(ttl),
        "--offline-after", str(OFFLINE_AFTER),
        "--offline-retention", "30",
    ]  # fmt: skip


def log_time(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


async def test_killed_instance_goes_unhealthy_within_ttl_plus_interval_then_offline(
    nats_server: NatsServerProcess, routers: RouterLauncher, service_processes: ServiceLauncher
) -> None:
    router = await routers.start(*router_options(nats_server.url))
    service = await service_processes.start(nats_server.url, "orders", "orders-1")
    killed_at = time.time()
    service.send(signal.SIGKILL)
    unhealthy = await router.wait_for_event(
        "instance_status_changed", instance_id="orders-1", new="UNHEALTHY"
    )
    detection = log_time(unhealthy) - killed_at
    print(f"SIGKILL -> UNHEALTHY in {detection:.3f} s (ttl {TTL}, interval {INTERVAL})")
    assert detection <= TTL + INTERVAL
    offline = await router.wait_for_event(
        "instance_status_changed", instance_id="orders-1", new="OFFLINE"
    )
    assert log_time(offline) - log_time(unhealthy) == pytest.approx(OFFLINE_AFTER, abs=0.2)


async def test_paused_instance_goes_unhealthy_and_comes_back_online_after_sigcont(
    nats_server: NatsServerProcess, routers: RouterLauncher, service_processes: ServiceLauncher
) -> None:
    router = await routers.start(*router_options(nats_server.url))
    service = await service_processes.start(nats_server.url, "orders", "orders-1")
    service.send(signal.SIGSTOP)
    unhealthy = await router.wait_for_event(
        "instance_status_changed", instance_id="orders-1", new="UNHEALTHY"
    )
    mark = router.events.index(unhealthy)
    service.send(signal.SIGCONT)
    back = await router.wait_for_event(
        "instance_status_changed", after=mark, instance_id="orders-1", new="ONLINE"
    )
    assert back["old"] == "UNHEALTHY"
    assert not any(
        e.get("new") == "OFFLINE" for e in router.events if e.get("instance_id") == "orders-1"
    )


async def test_sigterm_with_deregister_on_exit_takes_the_instance_offline_at_once(
    nats_server: NatsServerProcess, routers: RouterLauncher, service_processes: ServiceLauncher
) -> None:
    # A long TTL: an OFFLINE seen within it can only come from the deregistration.
    router = await routers.start(*router_options(nats_server.url, interval=1, ttl=30))
    service = await service_processes.start(
        nats_server.url, "orders", "orders-1", deregister_on_exit=True
    )
    service.send(signal.SIGTERM)
    offline = await router.wait_for_event(
        "instance_status_changed", instance_id="orders-1", new="OFFLINE", timeout=10
    )
    assert offline["reason"] == "deregistered"
    assert service.process is not None
    assert await asyncio.wait_for(service.process.wait(), 10) == -signal.SIGTERM


async def test_router_sigkill_and_restart_in_memory_heals_every_instance_within_two_intervals(
    nats_server: NatsServerProcess, routers: RouterLauncher, service_processes: ServiceLauncher
) -> None:
    """In memory a restarted router has forgotten everything: the SDKs register again."""
    interval = 0.5
    http_port = free_port()
    first = await routers.start(
        *router_options(nats_server.url, http_port, interval=interval, ttl=1.5),
        "--store", "memory",
    )  # fmt: skip
    expected = {f"orders-{p}-{i}" for p in range(3) for i in range(2)}
    for p in range(3):
        instance_ids = [f"orders-{p}-{i}" for i in range(2)]
        await service_processes.start(nats_server.url, "orders", *instance_ids)
    second = await routers.restart(first)
    ready = await second.wait_for_event("router_started")
    healed = [
        await second.wait_for_event("registration", instance_id=instance, outcome="created")
        for instance in sorted(expected)
    ]
    heal_time = max(log_time(event) for event in healed) - log_time(ready)
    print(f"router restart: {len(expected)} instances back in {heal_time:.3f} s")
    assert heal_time <= 2 * interval
    assert await online_instances(http_port) == expected


async def test_router_sigkill_and_restart_on_a_stream_keeps_every_instance_online(
    nats_server: NatsServerProcess, routers: RouterLauncher, service_processes: ServiceLauncher
) -> None:
    """On a stream the restarted router reads the registry back and grants every
    instance a fresh lease: nothing to register again, nothing turns UNHEALTHY."""
    http_port = free_port()
    first = await routers.start(*router_options(nats_server.url, http_port, ttl=1.5))
    expected = {f"orders-{p}-{i}" for p in range(3) for i in range(2)}
    for p in range(3):
        await service_processes.start(
            nats_server.url, "orders", *(f"orders-{p}-{i}" for i in range(2))
        )
    second = await routers.restart(first)
    await second.wait_for_event("leadership_taken")
    assert await online_instances(http_port) == expected
    # One lease TTL later: still all there, none went UNHEALTHY, none registered anew.
    loop = asyncio.get_running_loop()
    settled = loop.time() + 1.5
    await eventually(lambda: loop.time() >= settled, timeout=5, what="one lease TTL")
    assert await online_instances(http_port) == expected
    assert not [e for e in second.events if e.get("new") == "UNHEALTHY"]
    assert not [e for e in second.events if e.get("event") == "registration"]


async def online_instances(http_port: int) -> set[str]:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{http_port}/api/v1/admin/services/orders?status=ONLINE"
        async with http.get(url) as response:
            return {i["instance_id"] for i in (await response.json())["instances"]}


@pytest.mark.parametrize("store", ["memory", "stream"])
async def test_cache_never_empties_across_a_router_sigkill_and_restart(
    nats_server: NatsServerProcess,
    routers: RouterLauncher,
    service_processes: ServiceLauncher,
    store: str,
) -> None:
    first = await routers.start(
        *router_options(nats_server.url, interval=0.3, ttl=1.0), "--store", store
    )
    expected = [f"orders-{p}-{i}" for p in range(4) for i in range(5)]
    for p in range(4):
        instance_ids = [f"orders-{p}-{i}" for i in range(5)]
        await service_processes.start(nats_server.url, "orders", *instance_ids)
    sizes: list[int] = []
    async with ServiceClient(nats_server.url) as watcher:
        cache = await watcher.discover("orders", on_change=lambda i: sizes.append(len(i)))
        try:
            assert sorted(i.instance_id for i in cache.instances) == sorted(expected)
            old_epoch = cache.epoch
            second = await routers.restart(first)
            if store == "memory":  # a new registry: the cache follows it, never to zero
                await cache.wait_for(
                    lambda i: cache.epoch != old_epoch and cache._grace_until is None,
                    timeout=20,
                )
            else:  # the same registry: same epoch, nothing to resync
                await second.wait_for_event("leadership_taken")
                await watcher.get_service("orders")
                assert cache.epoch == old_epoch and cache.resyncs == 0
            assert sorted(i.instance_id for i in cache.instances) == sorted(expected)
        finally:
            await cache.close()
    print(f"cache sizes across the restart: min {min(sizes)}, last {sizes[-1]}")
    assert 0 not in sizes
    assert sizes[-1] == 20


async def test_a_killed_service_restarted_at_once_gets_its_instance_back(
    nats_server: NatsServerProcess, routers: RouterLauncher, service_processes: ServiceLauncher
) -> None:
    """It used to get ConflictError until its old record went OFFLINE (about 33 s)."""
    router = await routers.start(*router_options(nats_server.url))
    first = await service_processes.start(nats_server.url, "orders", "orders-1")
    first.send(signal.SIGKILL)
    started = time.monotonic()
    await service_processes.start(nats_server.url, "orders", "orders-1")  # READY: registered
    took = time.monotonic() - started
    replaced = await router.wait_for_event(
        "instance_status_changed", instance_id="orders-1", change="replaced"
    )
    print(f"restarted service: its instance back in {took:.3f} s ({replaced['reason']})")
    assert took <= TTL + 2.0
