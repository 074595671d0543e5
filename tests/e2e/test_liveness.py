"""Liveness from the outside: real service processes killed, paused and stopped,
and a router killed and restarted, all watched through the router's JSON log."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from actors.embedded_nats import NatsServerProcess
from tests.conftest import free_port
from tests.e2e.conftest import RouterProcess

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
INTERVAL, TTL, OFFLINE_AFTER = 0.2, 0.6, 0.6


def lease_args(interval: float = INTERVAL, ttl: float = TTL) -> list[str]:
    return [
        "--heartbeat-interval", str(interval),
        "--lease-ttl", str(ttl),
        "--offline-after", str(OFFLINE_AFTER),
        "--offline-retention", "30",
    ]  # fmt: skip


def log_time(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


class ServiceProcess:
    """`tests/e2e/service_process.py` in a subprocess."""

    def __init__(self, nats_url: str, service: str, *instances: str, deregister_on_exit: bool = False):
        self.args = [nats_url, service, *instances]
        if deregister_on_exit:
            self.args.append("--deregister-on-exit")
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.e2e.service_process", *self.args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 20)
        assert line.strip() == b"READY", line

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def services() -> AsyncIterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    try:
        yield started
    finally:
        for service in started:
            await service.stop()


async def start_router(nats_url: str, http_port: int, *extra: str) -> RouterProcess:
    router = RouterProcess("--nats-url", nats_url, "--http-port", str(http_port), *extra)
    await router.start()
    await router.wait_for_event("router_started")
    return router


async def test_killed_instance_goes_unhealthy_within_ttl_plus_interval_then_offline(
    nats_server: NatsServerProcess, services: list[ServiceProcess]
) -> None:
    router = await start_router(nats_server.url, free_port(), *lease_args())
    try:
        service = ServiceProcess(nats_server.url, "orders", "orders-1")
        services.append(service)
        await service.start()
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
    finally:
        await router.kill()


async def test_paused_instance_goes_unhealthy_and_comes_back_online_after_sigcont(
    nats_server: NatsServerProcess, services: list[ServiceProcess]
) -> None:
    router = await start_router(nats_server.url, free_port(), *lease_args())
    try:
        service = ServiceProcess(nats_server.url, "orders", "orders-1")
        services.append(service)
        await service.start()
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
    finally:
        await router.kill()


async def test_sigterm_with_deregister_on_exit_takes_the_instance_offline_at_once(
    nats_server: NatsServerProcess, services: list[ServiceProcess]
) -> None:
    # A long TTL: an OFFLINE seen within it can only come from the deregistration.
    router = await start_router(nats_server.url, free_port(), *lease_args(interval=1, ttl=30))
    try:
        service = ServiceProcess(nats_server.url, "orders", "orders-1", deregister_on_exit=True)
        services.append(service)
        await service.start()
        service.send(signal.SIGTERM)
        offline = await router.wait_for_event(
            "instance_status_changed", instance_id="orders-1", new="OFFLINE", timeout=10
        )
        assert offline["reason"] == "deregistered"
        assert service.process is not None
        assert await asyncio.wait_for(service.process.wait(), 10) == -signal.SIGTERM
    finally:
        await router.kill()


async def test_router_sigkill_and_restart_heals_every_instance_within_two_intervals(
    nats_server: NatsServerProcess, services: list[ServiceProcess]
) -> None:
    interval = 0.5
    args = lease_args(interval=interval, ttl=1.5)
    http_port = free_port()
    expected = {f"orders-{p}-{i}" for p in range(3) for i in range(2)}
    first = await start_router(nats_server.url, http_port, *args)
    try:
        for p in range(3):
            service = ServiceProcess(nats_server.url, "orders", f"orders-{p}-0", f"orders-{p}-1")
            services.append(service)
            await service.start()
        first.send(signal.SIGKILL)
        await first.wait_exit()
    finally:
        await first.kill()
    second = await start_router(nats_server.url, http_port, *args)
    try:
        ready = await second.wait_for_event("router_started")
        healed = [
            await second.wait_for_event("registration", instance_id=instance, outcome="created")
            for instance in sorted(expected)
        ]
        heal_time = max(log_time(event) for event in healed) - log_time(ready)
        print(f"router restart: {len(expected)} instances back in {heal_time:.3f} s")
        assert heal_time <= 2 * interval
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{http_port}/api/v1/admin/services/orders"
            async with http.get(url) as response:
                instances = (await response.json())["instances"]
        assert {i["instance_id"] for i in instances} == expected
        assert {i["status"] for i in instances} == {"ONLINE"}
    finally:
        await second.kill()



async def test_cache_never_empties_across_a_router_sigkill_and_restart(
    nats_server: NatsServerProcess, services: list[ServiceProcess]
) -> None:
    from sdk import ServiceClient

    interval = 0.3
    args = lease_args(interval=interval, ttl=1.0)
    http_port = free_port()
    expected = [f"orders-{p}-{i}" for p in range(4) for i in range(5)]
    first = await start_router(nats_server.url, http_port, *args)
    sizes: list[int] = []
    try:
        for p in range(4):
            service = ServiceProcess(nats_server.url, "orders", *[f"orders-{p}-{i}" for i in range(5)])
            services.append(service)
            await service.start()
        async with ServiceClient(nats_server.url) as watcher:
            cache = await watcher.discover("orders", on_change=lambda i: sizes.append(len(i)))
            try:
                assert sorted(i.instance_id for i in cache.instances) == sorted(expected)
                old_epoch = cache.epoch
                first.send(signal.SIGKILL)
                await first.wait_exit()
                second = await start_router(nats_server.url, http_port, *args)
                try:
                    await cache.wait_for(
                        lambda i: cache.epoch != old_epoch and cache._grace_until is None,
                        timeout=20,
                    )
                    assert sorted(i.instance_id for i in cache.instances) == sorted(expected)
                finally:
                    await second.kill()
            finally:
                await cache.close()
    finally:
        await first.kill()
    print(f"cache sizes across the restart: min {min(sizes)}, last {sizes[-1]}")
    assert 0 not in sizes
    assert sizes[-1] == 20
