"""The admin port against slowloris: a request head must arrive in time, and slow
connections cannot crowd out `/healthz` or the descriptors NATS needs (issue 10.4)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from actors.http_gateway import AdminLimits, GetAddress, HealthProbe, HttpGateway, build_admin_app
from actors.registry import RegistryActor
from actors.registry_api import RegistryClient
from protocol import LeasePolicy
from tests.support.http import healthz

pytestmark = pytest.mark.timeout(30)


async def connected() -> bool:
    return True


@pytest.fixture
async def admin() -> AsyncIterator[tuple[HttpGateway, int]]:
    """A real admin app on a free port, with a small connection cap and short timeouts."""
    registry = RegistryActor()
    await registry.start()
    client = RegistryClient(registry.ref)
    probe = HealthProbe(connected, lambda: client.alive, LeasePolicy())
    gateway = HttpGateway(
        lambda: build_admin_app(client, probe),
        "127.0.0.1",
        0,
        limits=AdminLimits(max_connections=20, head_timeout=1.0, idle_timeout=2.0),
    )
    await gateway.start()
    _, port = await gateway.ref.ask(GetAddress())
    try:
        yield gateway, port
    finally:
        await gateway.stop()
        await registry.stop()


async def open_slow(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has sent part of a request head, and no more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    return reader, writer


async def test_a_connection_that_trickles_its_request_head_is_closed_after_the_head_timeout(
    admin: tuple[HttpGateway, int],
) -> None:
    gateway, port = admin
    reader, writer = await open_slow(port)
    try:
        for _ in range(3):  # a byte now and then does not keep it open
            await asyncio.sleep(0.3)  # the trickle under test, not a wait for an outcome
            writer.write(b"X")
        loop = asyncio.get_running_loop()
        started = loop.time()
        data = await asyncio.wait_for(reader.read(), 5)
        assert data == b""  # closed without an answer
        assert loop.time() - started < 2.0
        assert gateway.guard is not None and gateway.guard.timed_out == 1
    finally:
        writer.close()


async def test_slow_connections_beyond_the_cap_make_room_and_healthz_still_answers(
    admin: tuple[HttpGateway, int],
) -> None:
    gateway, port = admin
    slow = [await open_slow(port) for _ in range(60)]  # three times the cap
    try:
        for _ in range(5):
            assert (await healthz(port, timeout=2)).status == 200
        assert gateway.guard is not None
        assert gateway.guard.open <= gateway.guard.max_connections
        assert gateway.guard.evicted >= 40
    finally:
        for _, writer in slow:
            writer.close()


async def test_a_complete_request_is_not_cut_by_the_head_timeout(
    admin: tuple[HttpGateway, int],
) -> None:
    _, port = admin
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for _ in range(3):  # one keep-alive connection, requests further apart than 1 s
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            await asyncio.sleep(1.2)  # the gap under test (> head_timeout), not a wait


def test_the_descriptor_budget_keeps_a_reserve() -> None:
    """Run where the hard limit is 1,024 (a child process: a lowered hard limit cannot
    be raised again)."""
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))\n"
        "from actors.http_guard import descriptor_budget\n"
        "print(descriptor_budget(5000, reserve=64), descriptor_budget(100, reserve=64),\n"
        "      resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=20
    ).stdout.split()
    # The soft limit is raised to the hard one, and 64 descriptors stay in reserve.
    assert output == ["960", "100", "1024"]
