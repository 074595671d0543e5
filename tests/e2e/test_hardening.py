"""Attacks and bad days against a real `ipc-router serve` subprocess (issue 10): a
paused router, a stray byte in the admin token's header line, slowloris against a
router with 1,024 file descriptors, and same-id churn watched through the RSS."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.embedded_nats import NatsServerProcess
from protocol import EventType
from sdk import ServiceCache, ServiceClient
from tests.support.events import EventLog, watching_events
from tests.support.http import healthz
from tests.support.network import free_port
from tests.support.processes import RouterLauncher, RouterProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(90)

TOKEN = "prod-admin-token-0123456789abcdef"
REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture
async def events(nats_server: NatsServerProcess) -> AsyncIterator[EventLog]:
    async with watching_events(nats_server.url) as log:
        yield log


async def pause(router: RouterProcess, seconds: float) -> None:
    router.send(signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)  # the pause under test, not a wait for an outcome
    finally:
        router.send(signal.SIGCONT)


@pytest.mark.parametrize(
    ("pause_seconds", "offline_after", "proof"),
    [
        pytest.param(5.0, "30", EventType.UNHEALTHY, id="5s-pause"),
        pytest.param(
            8.0, "3", EventType.EXPIRED, id="8s-pause-past-offline-after", marks=pytest.mark.slow
        ),
    ],
)
async def test_a_paused_router_declares_no_healthy_instance_dead(
    routers: RouterLauncher,
    nats_server: NatsServerProcess,
    events: EventLog,
    pause_seconds: float,
    offline_after: str,
    proof: EventType,
) -> None:
    """SIGSTOP for longer than the lease TTL used to turn all 200 instances UNHEALTHY
    (and OFFLINE, past --offline-after) the moment the router woke up, before it read
    the heartbeats that had queued up meanwhile; a discovery cache dropped to 0."""
    router = await routers.start(
        "--nats-url", nats_server.url, "--http-port", str(free_port()),
        "--offline-after", offline_after,
    )  # fmt: skip
    smallest: list[int] = []
    async with (
        ServiceClient(nats_server.url) as services,
        ServiceClient(nats_server.url) as watcher,
        ServiceClient(nats_server.url, heartbeat=False) as silent,
    ):
        for n in range(200):
            await services.register("paused", f"i-{n:03d}")
        cache: ServiceCache = await watcher.discover(
            "paused", on_change=lambda c: smallest.append(len(c))
        )
        await cache.wait_for(lambda instances: len(instances) == 200, timeout=10)
        before = {i.instance_id: i.registered_at for i in cache.instances}
        smallest.clear()
        await pause(router, pause_seconds)
        await router.wait_for_event("event_loop_stalled", timeout=10)
        # A canary registered after the pause, never renewed: once it has expired as
        # far as the test looks (UNHEALTHY, or OFFLINE past --offline-after), the
        # router has judged leases well past the pause; the 200 are still ONLINE.
        await silent.register("canary", "never-renewed")
        await events.wait_for(proof, "canary", timeout=30)
        after = await watcher.get_instances("paused")
    assert events.of(EventType.UNHEALTHY, "paused") == []
    assert events.of(EventType.EXPIRED, "paused") == []
    assert min(smallest, default=200) == 200
    assert {i.instance_id: i.registered_at for i in after} == before


async def test_the_admin_token_never_reaches_the_log(
    routers: RouterLauncher, nats_server: NatsServerProcess
) -> None:
    """A header line with one stray control character made aiohttp log a plain-text
    traceback holding the whole line, token included, at the default level."""
    http_port = free_port()
    router = await routers.start(
        "--nats-url", nats_server.url, "--http-port", str(http_port),
        env={"IPC_ROUTER_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip
    for stray in (b"\r", b"\x00", b"\x7f"):
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.write(
            b"GET /api/v1/admin/services HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + stray + b"\r\n\r\n"
        )
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)  # answered (a 400) and closed
        writer.close()
    # A request that gets through afterwards: everything before it is logged by then.
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    writer.close()
    router.send(signal.SIGTERM)
    await router.wait_exit()
    lines = router.raw_lines
    assert any("malformed HTTP request" in line for line in lines), lines
    assert all(TOKEN not in line for line in lines)
    assert all(isinstance(json.loads(line), dict) for line in lines)


LIMITED_ROUTER = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
from actors.cli import main
sys.exit(main(sys.argv[1:]))
"""


class LimitedRouter(RouterProcess):
    """`ipc-router serve` with 1,024 file descriptors, soft and hard."""

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LIMITED_ROUTER, "serve", "--log-format", "json", *self.options,
            env={**os.environ, **self.extra_env},
            cwd=REPOSITORY,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())


async def test_slowloris_cannot_hold_the_admin_port_nor_starve_nats_of_descriptors(
    nats_server: NatsServerProcess,
) -> None:
    """3,000 requests trickling a byte every 10 s all stayed open; with 1,024
    descriptors, 1,100 of them made /healthz time out and, after a NATS blip, the
    router could not reconnect (`Too many open files`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and (hard == resource.RLIM_INFINITY or hard > soft):
        wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the attacker's own
    http_port = free_port()
    router = LimitedRouter(
        "--nats-url", nats_server.url, "--http-port", str(http_port),
        "--admin-head-timeout", "3",
    )  # fmt: skip
    await router.start()
    slow: list[asyncio.StreamWriter] = []
    try:
        await router.wait_for_event("router_started")
        for _ in range(1_100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", http_port)
            except OSError:
                continue  # refused at the door: fine, that is one of the defences
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            slow.append(writer)
        assert len(slow) > 1_024  # more than the router has descriptors
        assert (await healthz(http_port)).status == 200
        # A NATS blip while the slow connections are open: the router must come back.
        await nats_server.stop()
        await router.wait_for_event("nats_disconnected")
        await nats_server.start()
        await router.wait_for_event("nats_reconnected", timeout=20)
        assert (await healthz(http_port)).json()["nats_connected"] is True
        assert not any("Too many open files" in line for line in router.raw_lines)
    finally:
        for writer in slow:
            writer.close()
        await router.kill()


async def _answers(port: int) -> bool:
    try:
        return (await healthz(port)).status == 200
    except OSError:
        return False


def rss_mib(pid: int) -> float:
    """The resident set size of process `pid`, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
async def test_same_id_churn_leaves_memory_flat(
    routers: RouterLauncher, nats_server: NatsServerProcess
) -> None:
    """32 workers registering and deregistering the same 32 ids (4 KB metadata) took
    the router from 46 to 1,221 MiB in 60 s."""
    http_port = free_port()
    router = await routers.start(
        "--nats-url", nats_server.url, "--http-port", str(http_port),
        "--offline-retention", "2", "--log-level", "warning",
        ready=False,  # (no router_started line at warning level)
    )  # fmt: skip
    await eventually(lambda: _answers(http_port), timeout=20, what="the router to serve")
    assert router.process is not None
    metadata = {"blob": "x" * 4000}
    stop = asyncio.Event()
    rounds = 0

    async def worker(client: ServiceClient, instance: str) -> None:
        nonlocal rounds
        while not stop.is_set():
            await client.register("churn", instance, metadata)
            await client.deregister("churn", instance)
            rounds += 1

    clients = [ServiceClient(nats_server.url, heartbeat=False) for _ in range(4)]
    for client in clients:
        await client.connect()
    try:
        tasks = [
            asyncio.create_task(worker(clients[n % 4], f"id-{n}")) for n in range(32)
        ]
        await eventually(lambda: rounds >= 5_000, timeout=60, what="5,000 churn rounds")
        warm = rss_mib(router.process.pid)
        await eventually(lambda: rounds >= 40_000, timeout=120, what="40,000 churn rounds")
        after = rss_mib(router.process.pid)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.close()
    print(f"churn: {rounds} rounds, RSS {warm:.1f} MiB after warm-up, {after:.1f} MiB at the end")
    assert after - warm < 8.0
