"""Fault 1 of issue 15, performed: a lone router (`make run`: the bundled nats-server,
a data directory) restarted after the stream's last message, a tombstone, went at its
TTL. The stream's last sequence survives, the last message does not: a router that
loaded only to its last message wrote its term marker where the stream was not, was
fenced, and never wrote again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import pytest

from actors.journal import JournalConfig
from sdk import ServiceClient
from tests.support.http import healthz
from tests.support.network import free_port
from tests.support.processes import RouterLauncher
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

STREAM = JournalConfig().stream
OPTIONS = (
    "--tombstone-ttl", "1", "--lease-ttl", "1", "--heartbeat-interval", "0.3",
    "--offline-after", "0.5", "--offline-retention", "0.5", "--failover-after", "0.5",
)  # fmt: skip


async def stream_state(url: str) -> dict[str, int]:
    nc = await nats.connect(url)
    try:
        reply = await nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"{}", timeout=2)
        state: dict[str, int] = json.loads(reply.data)["state"]
        return state
    finally:
        await nc.close()


async def test_a_lone_router_restarted_after_its_last_tombstone_went_writes_again(
    routers: RouterLauncher, tmp_path: Path
) -> None:
    nats_port, http_port = free_port(), free_port()
    url = f"nats://127.0.0.1:{nats_port}"
    options = ("--embedded-nats-port", str(nats_port), "--http-port", str(http_port),
               "--data-dir", str(tmp_path / "data"), *OPTIONS)  # fmt: skip
    router = await routers.start(*options)
    async with ServiceClient(url) as client:
        await client.register("orders", "kept", {"zone": "a"})
        await client.register("orders", "gone")
        await client.deregister("orders", "gone")  # OFFLINE, then forgotten: a tombstone
        # The last message is the tombstone; then it goes at its TTL (one second).
        await eventually(
            lambda: _tombstone_gone(url), timeout=20, what="the stream's last message to go"
        )
        state = await stream_state(url)
        # Quiet (nothing written since), and the router restarts on its data.
        router = await routers.restart(router)
        started = asyncio.get_running_loop().time()
        await client.register("orders", "after-restart")  # retried until a router leads
        took = asyncio.get_running_loop().time() - started
    after = await stream_state(url)
    assert after["last_seq"] > state["last_seq"]  # a term marker, then the registration
    health = (await healthz(http_port)).json()
    assert health["role"] == "leader" and health["phase"] == "leading", health
    print(f"restart after a quiet period: writes answered {took:.3f} s after the router started")
    assert took < 2.0


async def _tombstone_gone(url: str) -> bool:
    """The stream's last sequence is past every message it holds, and nothing but the
    kept instance (and a term marker) is left."""
    state = await stream_state(url)
    return state["messages"] <= 2 and state["last_seq"] > state.get("first_seq", 0) + state["messages"] - 1
