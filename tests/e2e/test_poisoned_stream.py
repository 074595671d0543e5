"""Issue 16, attack 2, performed: well-formed records nobody should have stored,
published onto the registry stream's subjects (the default setup has no NATS auth:
anyone may). Before, one record with `registered_at` = 1e300 crashed the registry on
every router, for good. Now each is left out, logged, counted and named in
`/healthz`; the routers go on serving, and one restarted reads past them again."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import nats
import pytest

from actors.embedded_nats import NatsServerProcess
from actors.journal import JournalConfig
from protocol.stored import instance_subject
from tests.support.events import EventLog, watching_events
from tests.support.fleet import Fleet, Load, assert_recovered
from tests.support.processes import RouterLauncher

pytestmark = pytest.mark.timeout(90)

PREFIX = JournalConfig().subject_prefix
POISON: dict[str, dict[str, Any]] = {
    "huge": {"registered_at": 1e300},
    "nan": {"last_heartbeat": math.nan},
    "renamed": {"service_name": "elsewhere"},
}


@pytest.fixture
async def events(nats_server: NatsServerProcess) -> AsyncIterator[EventLog]:
    async with watching_events(nats_server.url) as log:
        yield log


async def test_poisoned_records_are_skipped_named_and_survived(
    routers: RouterLauncher, nats_server: NatsServerProcess, events: EventLog
) -> None:
    fleet = Fleet(routers)
    url = nats_server.url
    await fleet.start(url, url, options=("--failover-after", "0.5"))
    await fleet.leader()
    load = Load(url)
    await load.start()
    try:
        await load.written(10)
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for instance, poison in POISON.items():
                body = {
                    "service_name": "poisoned", "instance_id": instance, "status": "ONLINE",
                    "metadata": {}, "registered_at": 1.0, "last_heartbeat": 1.0, **poison,
                }  # fmt: skip
                await js.publish(instance_subject(PREFIX, "poisoned", instance), msgpack.packb(body))
        finally:
            await nc.close()
        fault_at = asyncio.get_running_loop().time()
        await _every_router_names_the_three(fleet)
        gap = await assert_recovered(fleet, load, events, fault_at=fault_at)
    finally:
        await load.close()
    for router, port in fleet.ports.items():
        metrics = await _text(f"http://127.0.0.1:{port}/metrics")
        assert "ipc_router_stream_records_skipped_total 3.0" in metrics
        assert not any(e.get("event") == "child_crashed" for e in router.events)
        skipped = [e for e in router.events if e.get("event") == "stream_record_skipped"]
        assert {e["subject"].rsplit(".", 1)[1] for e in skipped} == set(POISON)
    # A router started afresh reads past them again.
    again = await fleet.restart(next(iter(fleet.ports)))
    await again.wait_for_event("registry_loaded")
    await _every_router_names_the_three(fleet)
    print(f"poisoned records: writes unavailable {gap:.3f} s (the leader found another's "
          "writes in its stream, read it again and took the leadership up again)")  # fmt: skip


async def _every_router_names_the_three(fleet: Fleet) -> None:
    async def named() -> bool:
        for router in fleet.ports:
            health = await fleet.health(router)
            if health is None or health["status"] != "ok":
                return False
            names = " ".join(health.get("skipped_records") or [])
            if not all(f"poisoned.{instance}" in names for instance in POISON):
                return False
        return True

    deadline = asyncio.get_running_loop().time() + 15
    while not await named():
        assert asyncio.get_running_loop().time() < deadline, "not every router named them"
        await asyncio.sleep(0.1)


async def _text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as reply:
        return await reply.text()
