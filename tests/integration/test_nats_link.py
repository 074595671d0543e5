"""The NATS client's link survives a server that answers late.

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

import pytest

from actors.embedded_nats import NatsServerProcess
from sdk.connection import GuardedClient
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


def _state(pid: int) -> str:
    """The process state letter of `pid` ("T": stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]
