"""Where the registry lives (issue 11.5): `make run` keeps it in a data directory
across restarts; `--store memory` keeps today's single-process registry and refuses
to start beside another router rather than split the registry silently."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from actors.embedded_nats import NatsServerProcess
from sdk import ServiceClient
from tests.support.network import free_port
from tests.support.processes import RouterLauncher
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(90)

TTL = 1.0


async def instances(http_port: int, service: str) -> dict[str, dict[str, Any]]:
    url = f"http://127.0.0.1:{http_port}/api/v1/admin/services/{service}"
    async with aiohttp.ClientSession() as http, http.get(url) as reply:
        body = await reply.json()
    return {i["instance_id"]: i for i in body["instances"]}


async def test_a_restarted_router_keeps_services_offline_records_and_registration_times(
    routers: RouterLauncher,
) -> None:
    nats_port, http_port = free_port(), free_port()
    options = [
        "--embedded-nats-port", str(nats_port), "--http-port", str(http_port),
        "--heartbeat-interval", "0.3", "--lease-ttl", str(TTL), "--offline-after", "30",
    ]  # fmt: skip
    first = await routers.start(*options)
    url = f"nats://127.0.0.1:{nats_port}"
    alive = ServiceClient(url)
    gone = ServiceClient(url, heartbeat=False)
    try:
        await alive.register("orders", "alive-1", {"zone": "a"})
        await alive.register("orders", "left-1")
        await alive.deregister("orders", "left-1")
        await gone.register("orders", "gone-1")
        before = await instances(http_port, "orders")
        assert {k: v["status"] for k, v in before.items()} == {
            "alive-1": "ONLINE", "left-1": "OFFLINE", "gone-1": "ONLINE",
        }  # fmt: skip
        first.send(signal.SIGTERM)
        assert await first.wait_exit() == 0
        second = await routers.start(*options)
        started = asyncio.get_running_loop().time()
        after = await instances(http_port, "orders")
        assert {k: v["registered_at"] for k, v in after.items()} == {
            k: v["registered_at"] for k, v in before.items()
        }
        assert after["left-1"]["status"] == "OFFLINE"
        # The client that is gone is found one lease TTL after the start; the one
        # that still beats stays ONLINE (same session: its heartbeats are accepted).
        await second.wait_for_event(
            "instance_status_changed", instance_id="gone-1", new="UNHEALTHY", timeout=10
        )
        found = asyncio.get_running_loop().time() - started
        now = await instances(http_port, "orders")
        assert now["alive-1"]["status"] == "ONLINE"
        assert now["alive-1"]["metadata"] == {"zone": "a"}
        assert TTL * 0.8 <= found <= TTL + 2.0
    finally:
        await gone.close()
        await alive.close()


async def test_a_second_router_in_memory_on_the_same_nats_is_refused(
    routers: RouterLauncher, nats_server: NatsServerProcess
) -> None:
    await routers.start("--nats-url", nats_server.url, "--http-port", str(free_port()),
                        "--store", "memory")  # fmt: skip
    for store in ("memory", "stream"):
        second = await routers.start(
            "--nats-url", nats_server.url, "--http-port", str(free_port()), "--store", store,
            ready=False,
        )  # fmt: skip
        assert await second.wait_exit() == 2
        errors = [line for line in second.raw_lines if line.startswith("ipc-router: error:")]
        assert len(errors) == 1, second.raw_lines
        assert "another ipc-router" in errors[0] and "--store stream" in errors[0]


async def test_routers_on_one_stream_run_side_by_side(
    routers: RouterLauncher, nats_server: NatsServerProcess
) -> None:
    ports = [free_port(), free_port()]
    for port in ports:
        await routers.start("--nats-url", nats_server.url, "--http-port", str(port))
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")

        async def both_know() -> bool:
            known = [await instances(port, "orders") for port in ports]
            return all("orders-1" in one for one in known)

        await eventually(both_know, timeout=10, what="both routers to show orders-1")
