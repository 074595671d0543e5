"""The NATS client's link survives a server that answers late, and every connection
of the router pings as often as `--dead-link-after` asks.

nats-py leaves a flush that timed out in the queue of pings awaiting their PONG; when
that PONG comes after all (a paused server, a congested link), the read loop failed
and the connection was dropped and made again. The router's heartbeat-link watcher
flushes with a short timeout, so a late PONG must cost nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

import actors.nats_connection
import sdk.connection
from actors.embedded_nats import NatsServerProcess
from sdk.connection import GuardedClient
from tests.support.routers import InProcessRouters
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)


async def test_a_pong_that_comes_after_its_flush_gave_up_costs_no_reconnect(
    nats_server: NatsServerProcess,
) -> None:
    disconnects: list[str] = []

    async def on_disconnect() -> None:
        disconnects.append("disconnected")

    nc = GuardedClient()
    await nc.connect(nats_server.url, disconnected_cb=on_disconnect, allow_reconnect=True)
    pid = nats_server.pid
    assert pid is not None
    try:
        os.kill(pid, signal.SIGSTOP)
        await eventually(lambda: _state(pid) == "T", what="the server to be stopped")
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):  # (as the router's heartbeat-link watcher)
                    await nc.flush()
        finally:
            os.kill(pid, signal.SIGCONT)
        await nc.flush(timeout=10)  # answered after the late PONG of the flush that gave up
        await nc.flush(timeout=10)
        assert disconnects == [] and nc.is_connected
        assert not nc._pongs
    finally:
        await nc.close()


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> dict[str, GuardedClient]:
    """Every connection the routers started afterwards make, by its client name."""
    connections: dict[str, GuardedClient] = {}
    connect = sdk.connection.connect

    async def recording(nc: GuardedClient, url: str, **options: Any) -> None:
        connections[options["name"]] = nc
        await connect(nc, url, **options)

    monkeypatch.setattr(actors.nats_connection, "connect", recording)
    return connections


async def test_every_router_connection_finds_a_dead_link_within_dead_link_after(
    routers: InProcessRouters, made: dict[str, GuardedClient]
) -> None:
    """Five connections in stream mode (requests, heartbeats, stream, leadership, event
    feed): each pings a third of `dead_link_after` apart, three unanswered being a dead
    link, whatever actor made it."""
    await routers.start(store="stream", dead_link_after=1.2)
    assert set(made) == {
        "ipc-router", "ipc-router-heartbeats", "ipc-router-registry",
        "ipc-router-leadership", "ipc-router-events",
    }  # fmt: skip
    for name, nc in made.items():
        assert nc.options["ping_interval"] == pytest.approx(0.4), name
        assert nc.options["max_outstanding_pings"] == 3, name


async def test_the_gateway_stops_and_closes_its_links_even_when_a_flush_swallows_its_cancel(
    routers: InProcessRouters, made: dict[str, GuardedClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 a cancellation can be lost inside `asyncio.wait_for` (CPython
    gh-86296), which nats-py's flush uses. The heartbeat-link watcher, cancelled there
    at a stop, went on probing for ever: the gateway's stop waited for it until the
    actor's stop budget ran out, and its two connections were never closed (they went
    on reconnecting after the server had gone, and hung the test's event loop)."""
    router = await routers.start(store="memory")
    probing = asyncio.Event()
    lost: list[bool] = []
    beats = made["ipc-router-heartbeats"]
    flush = beats.flush

    async def flush_losing_its_cancel(timeout: int = 10) -> None:
        if lost:
            return await flush(timeout)
        probing.set()
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            lost.append(True)  # the watcher's cancellation lost, as wait_for may lose one

    monkeypatch.setattr(beats, "flush", flush_losing_its_cancel)
    await asyncio.wait_for(probing.wait(), 10)  # no heartbeat yet: the watcher probes
    await router.stop()
    routers.started.remove(router)
    assert lost == [True]
    assert beats.is_closed and made["ipc-router"].is_closed


def _state(pid: int) -> str:
    """The process state letter of `pid` ("T": stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]
