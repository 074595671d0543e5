"""Routers as a fleet of `ipc-router serve` processes on one NATS system, a steady SDK
load against them, and the checks every leadership fault test makes afterwards:
writes came back in time, nothing acknowledged was lost, no live instance was marked
UNHEALTHY, exactly one router says "leader", and every router shows the same
registry."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp

from protocol import EventType
from sdk import ServiceClient
from tests.support.events import EventLog
from tests.support.http import healthz
from tests.support.network import free_port
from tests.support.processes import RouterLauncher, RouterProcess
from tests.support.waiting import eventually

__all__ = ["Fleet", "Load", "assert_recovered"]


class Fleet:
    """Router subprocesses, and how to ask each about itself."""

    def __init__(self, launcher: RouterLauncher) -> None:
        self.launcher = launcher
        self.ports: dict[RouterProcess, int] = {}

    async def start(
        self, *urls: str, options: tuple[str, ...] = (), command: list[str] | None = None
    ) -> list[RouterProcess]:
        """One router per NATS URL (the same URL several times for several routers)."""
        started = []
        for url in urls:
            port = free_port()
            router = await self.launcher.start(
                "--nats-url", url, "--http-port", str(port), *options, command=command
            )
            self.ports[router] = port
            started.append(router)
        return started

    async def restart(self, router: RouterProcess) -> RouterProcess:
        """SIGKILL `router` and start it again (same options, same admin port)."""
        port = self.ports.pop(router)
        again = await self.launcher.restart(router)
        self.ports[again] = port
        return again

    def forget(self, router: RouterProcess) -> None:
        del self.ports[router]

    async def health(self, router: RouterProcess) -> dict[str, Any] | None:
        try:
            answer = await healthz(self.ports[router], timeout=2)
        except (OSError, TimeoutError):
            return None
        body: dict[str, Any] = answer.json()
        return body

    async def leaders(self) -> list[RouterProcess]:
        """The routers whose /healthz says "leader" now."""
        healths = await asyncio.gather(*(self.health(router) for router in self.ports))
        return [r for r, h in zip(self.ports, healths, strict=True) if h and h.get("role") == "leader"]

    async def leader(self, timeout: float = 15) -> RouterProcess:
        """The one router that says "leader" (waiting for there to be exactly one)."""
        found: list[RouterProcess] = []

        async def one() -> bool:
            found[:] = await self.leaders()
            return len(found) == 1

        await eventually(one, timeout=timeout, what="exactly one leader")
        return found[0]

    async def page(self, router: RouterProcess, service: str) -> dict[str, Any]:
        """One service's instances as `router` shows them: the first page's fields, with
        the instances of every page."""
        url = f"http://127.0.0.1:{self.ports[router]}/api/v1/admin/services/{service}"
        params = {"limit": "1000"}
        async with aiohttp.ClientSession() as http:
            async with http.get(url, params=params) as reply:
                first: dict[str, Any] = await reply.json()
            page = first
            while page.get("next_cursor"):
                async with http.get(url, params={**params, "cursor": page["next_cursor"]}) as reply:
                    page = await reply.json()
                first["instances"] += page["instances"]
        return first


    async def status_counts(self, router: RouterProcess) -> dict[str, int]:
        """Instances by status over every service, as `router` counts them."""
        url = f"http://127.0.0.1:{self.ports[router]}/api/v1/admin/services"
        counts: dict[str, int] = {}
        params: dict[str, str] = {"limit": "1000"}
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(url, params=params) as reply:
                    page = await reply.json()
                for service in page["services"]:
                    for status, count in service["status_counts"].items():
                        counts[status] = counts.get(status, 0) + count
                if not page.get("next_cursor"):
                    return counts
                params = {**params, "cursor": page["next_cursor"]}


class Load:
    """A steady load: `keep` instances kept alive by the SDK's heartbeats, and a stream
    of new registrations, each acknowledgement timed."""

    def __init__(self, url: str, keep: int = 50, service: str = "written", retries: int = 4) -> None:
        """`retries`: of the writer's requests (more to ride out a longer outage)."""
        self.keeper = ServiceClient(url)
        self.writer = ServiceClient(url, heartbeat=False, retries=retries)
        self.keep = keep
        self.service = service
        self.acknowledged: list[str] = []
        self.acked_at: list[float] = []
        """Loop time of each acknowledgement."""
        self.failures: list[BaseException] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.keeper.connect()
        await self.writer.connect()
        for n in range(self.keep):
            await self.keeper.register("steady", f"s-{n:02d}")
        self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        n = 0
        while not self._stop.is_set():
            try:
                await self.writer.register(self.service, f"w-{n:05d}")
                self.acknowledged.append(f"w-{n:05d}")
                self.acked_at.append(loop.time())
            except Exception as error:  # noqa: BLE001 - recorded: the test fails on it
                self.failures.append(error)
            n += 1
            await asyncio.sleep(0.01)  # a steady trickle, not a flood

    async def written(self, count: int, timeout: float = 20) -> None:
        start = len(self.acknowledged)
        await eventually(lambda: len(self.acknowledged) >= start + count, timeout=timeout,
                         what=f"{count} more acknowledged registrations")  # fmt: skip

    def longest_gap(self, since: float) -> float:
        """The longest time without an acknowledgement from `since` (loop time) on: how
        long writes were unavailable."""
        times = [since, *(t for t in self.acked_at if t > since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    async def stop(self) -> None:
        """Stop writing (the instances stay registered until `close`). Idempotent."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def close(self) -> None:
        await self.stop()
        await self.writer.close()
        await self.keeper.close()


async def assert_recovered(
    fleet: Fleet, load: Load, events: EventLog, *, fault_at: float, within: float = 2.0
) -> float:
    """What every leadership fault test checks once the fault happened at `fault_at`
    (loop time): writes answered again within `within` seconds (the longest gap
    between acknowledgements since), no exception in the writer, no live instance
    marked UNHEALTHY (the writer's own stop renewing: they expire in their time), exactly one leader, and every router at the same revision with the same
    content, which holds every acknowledged registration. Returns the gap."""
    await load.written(20)
    await load.stop()
    gap = load.longest_gap(fault_at - 0.5)
    assert load.failures == [], load.failures[:3]
    assert gap <= within, f"writes unavailable for {gap:.2f} s"
    assert events.of(EventType.UNHEALTHY, "steady") == []  # (the live, heartbeating ones)
    await fleet.leader()

    async def agreed() -> bool:
        pages = [await fleet.page(router, load.service) for router in fleet.ports]
        return len({page.get("revision") for page in pages}) == 1

    await eventually(agreed, timeout=15, what="every router at the same revision")
    pages = [await fleet.page(router, load.service) for router in fleet.ports]
    contents = [
        sorted((i["instance_id"], i["status"], i["registered_at"]) for i in page["instances"])
        for page in pages
    ]
    for content in contents[1:]:
        assert content == contents[0], set(content) ^ set(contents[0])
    stored = {instance_id for instance_id, _, _ in contents[0]}
    lost = set(load.acknowledged) - stored
    assert not lost, f"{len(lost)} acknowledged registrations lost: {sorted(lost)[:5]}"
    assert len(await fleet.leaders()) == 1
    return gap
