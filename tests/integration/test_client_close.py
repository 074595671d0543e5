"""Issue 16, attack 7, performed: `ServiceClient.close()` while its `ServiceCache` is
busy with events. On Python 3.11 `asyncio.wait_for` can swallow the cancellation that
comes just as an event does (CPython gh-86296), and close() then waited for ever (8
of 10 shutdowns). Now every close returns within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from sdk import ServiceClient

pytestmark = pytest.mark.timeout(120)

CLOSE_BOUND = 3.0
"""Seconds a close may take: its deregistrations' one try each, the cache's second."""


async def test_a_client_closes_in_time_however_busy_its_cache_is(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url, heartbeat=False) as churner:
        stop = asyncio.Event()

        async def churn() -> None:
            """Events for `orders`, as fast as the router makes them."""
            for n in itertools.count():
                if stop.is_set():
                    return
                with contextlib.suppress(Exception):
                    await churner.register("orders", f"o-{n % 20}", {"n": n})
                    await churner.deregister("orders", f"o-{n % 20}")

        churning = asyncio.create_task(churn())
        loop = asyncio.get_running_loop()
        slowest = 0.0
        try:
            for _ in range(20):
                client = ServiceClient(nats_server.url)
                await client.connect()
                cache = await client.discover("orders")
                await client.register("watchers", "w-1")
                await asyncio.sleep(0.05)  # events arrive meanwhile
                assert cache.service_revision > 0
                started = loop.time()
                await asyncio.wait_for(client.close(), CLOSE_BOUND * 2)
                slowest = max(slowest, loop.time() - started)
        finally:
            stop.set()
            await churning
    print(f"20 closes while events arrived: the slowest took {slowest:.3f} s")
    assert slowest < CLOSE_BOUND
