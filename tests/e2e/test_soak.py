"""Bounded soak: 1,000 instances heartbeating at the default 1 s interval for 30 s
while new registrations keep arriving: not one false UNHEALTHY transition."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from actors.embedded_nats import NatsServerProcess
from sdk import ServiceClient
from tests.support.network import free_port
from tests.support.processes import RouterLauncher

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CLIENTS, PER_CLIENT, SOAK_SECONDS = 10, 100, 30.0


async def test_thousand_instances_heartbeating_for_30_s_have_no_false_unhealthy(
    nats_server: NatsServerProcess, routers: RouterLauncher
) -> None:
    http_port = free_port()
    router = await routers.start("--nats-url", nats_server.url, "--http-port", str(http_port))
    clients = [ServiceClient(nats_server.url) for _ in range(CLIENTS)]
    try:
        for client in clients:
            await client.connect()
        await asyncio.gather(
            *(
                client.register(f"soak-{c}", f"instance-{i}", {"zone": "a", "n": str(i)})
                for c, client in enumerate(clients)
                for i in range(PER_CLIENT)
            )
        )
        churn = ServiceClient(nats_server.url, heartbeat=False)
        registered_during_soak = 0
        async with churn:
            deadline = time.monotonic() + SOAK_SECONDS
            while time.monotonic() < deadline:
                await churn.register("churn", f"new-{registered_during_soak}")
                registered_during_soak += 1
                await asyncio.sleep(0.02)
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{http_port}/api/v1/admin/services"
                async with http.get(url) as response:
                    listing = await response.json()
        unhealthy = [
            e for e in router.events
            if e.get("event") == "instance_status_changed" and e.get("new") == "UNHEALTHY"
            and str(e.get("service_name", "")).startswith("soak-")
        ]  # fmt: skip
        print(
            f"soak: {CLIENTS * PER_CLIENT} instances x {SOAK_SECONDS:.0f} s, "
            f"{registered_during_soak} registrations during it, {len(unhealthy)} false UNHEALTHY"
        )
        assert unhealthy == []
        soak = [s for s in listing["services"] if s["service_name"].startswith("soak-")]
        assert sum(s["status_counts"].get("ONLINE", 0) for s in soak) == CLIENTS * PER_CLIENT
        assert registered_during_soak > 100
    finally:
        for client in clients:
            await client.close()
