"""The faults of issue 15, each performed against real processes: three `ipc-router
serve` on one real nats-server (each router behind its own NATS-aware proxy, so that
one of its connections can be cut alone), under a steady SDK load. After each: writes
answered again within 2 s, nothing acknowledged lost, no live instance marked
UNHEALTHY, exactly one router says "leader", every router shows the same registry."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NatsClient

from actors.embedded_nats import NatsServerProcess
from actors.journal import JournalConfig
from sdk import ServiceClient
from tests.support.events import EventLog, watching_events
from tests.support.fleet import Fleet, Load, assert_recovered
from tests.support.nats_proxy import NatsProxy
from tests.support.processes import FAULTY_ROUTER, RouterLauncher, RouterProcess
from tests.support.waiting import Repeating, eventually

pytestmark = pytest.mark.timeout(90)

STREAM = JournalConfig().stream
BUCKET = "IPC_ROUTER_LEADER"
OPTIONS = ("--failover-after", "0.5")


class Routers:
    """The fleet, each router's proxy, and the load."""

    def __init__(self, fleet: Fleet, proxies: dict[RouterProcess, NatsProxy], load: Load) -> None:
        self.fleet, self.proxies, self.load = fleet, proxies, load


@pytest.fixture
async def proxies(nats_server: NatsServerProcess) -> AsyncIterator[list[NatsProxy]]:
    started = [NatsProxy(nats_server.port) for _ in range(3)]
    for proxy in started:
        await proxy.start()
    try:
        yield started
    finally:
        for proxy in started:
            await proxy.stop()


@pytest.fixture
async def events(nats_server: NatsServerProcess) -> AsyncIterator[EventLog]:
    async with watching_events(nats_server.url) as log:
        yield log


@pytest.fixture
async def cluster(
    routers: RouterLauncher, proxies: list[NatsProxy], nats_server: NatsServerProcess
) -> AsyncIterator[Routers]:
    fleet = Fleet(routers)
    started = await fleet.start(*(p.url for p in proxies), options=OPTIONS, command=FAULTY_ROUTER)
    await fleet.leader()
    load = Load(nats_server.url)
    await load.start()
    await load.written(20)
    try:
        yield Routers(fleet, dict(zip(started, proxies, strict=True)), load)
    finally:
        await load.close()


@pytest.fixture
async def js_client(nats_server: NatsServerProcess) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc
    finally:
        await nc.close()


def now() -> float:
    return asyncio.get_running_loop().time()


class LeaderWatch:
    """Polls every router's /healthz: the most routers that said "leader" at once."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.most = 0
        self._repeating = Repeating(self._look, interval=0.05)

    async def _look(self) -> None:
        self.most = max(self.most, len(await self.fleet.leaders()))

    async def stop(self) -> int:
        await self._repeating.stop()
        return self.most


async def test_the_leaders_registry_crashing_hands_the_leadership_over(
    cluster: Routers, events: EventLog
) -> None:
    """Fault 2: its supervisor restarts the registry, which loads the stream. Its
    elector resigns if it finds the registry gone, or told "not held"; or, the restart
    being quicker than a tick, the new registry takes the term up again, with a term
    marker of its own after all it read. Either way a router leads again at once."""
    leader = await cluster.fleet.leader()
    fault_at = now()
    leader.send(signal.SIGUSR1)
    await leader.wait_for_event("child_restarted", child="registry")
    gap = await assert_recovered(cluster.fleet, cluster.load, events, fault_at=fault_at)
    print(f"registry crash: writes unavailable {gap:.3f} s")


async def test_the_leaders_elector_crashing_leaves_no_second_leader(
    cluster: Routers, events: EventLog
) -> None:
    """Fault 3: the restarted elector tells the registry "no term" on its first tick
    (and lets its predecessor's key go): the old leader leaves the write subjects; it
    never says "leader" beside another router."""
    leader = await cluster.fleet.leader()
    watch = LeaderWatch(cluster.fleet)
    fault_at = now()
    leader.send(signal.SIGUSR2)
    await leader.wait_for_event("leadership_given_up")
    gap = await assert_recovered(cluster.fleet, cluster.load, events, fault_at=fault_at)
    assert await watch.stop() == 1
    print(f"elector crash: writes unavailable {gap:.3f} s")


async def test_a_cut_election_connection_hands_over_without_a_wrong_answer(
    cluster: Routers, events: EventLog
) -> None:
    """Fault 8a: only the leader's connection to the leadership bucket goes half-open.
    Its renewals time out within the validity; it goes silent (no 503 that would race
    the new leader's 201: the writer's registrations never raise) and stands down."""
    leader = await cluster.fleet.leader()
    fault_at = now()
    cluster.proxies[leader].cut("ipc-router-leadership")
    await leader.wait_for_event("leadership_given_up")
    gap = await assert_recovered(cluster.fleet, cluster.load, events, fault_at=fault_at)
    assert cluster.fleet.ports[leader] and leader not in await cluster.fleet.leaders()
    print(f"election connection cut: writes unavailable {gap:.3f} s")


async def test_a_cut_stream_connection_hands_over_within_the_failover_time(
    cluster: Routers, events: EventLog
) -> None:
    """Fault 8b: only the leader's connection to the stream goes half-open. Its next
    append is not acknowledged within --failover-after; it resigns, and another router
    takes over. Once the link is back, the dead connection is noticed (its pings go
    unanswered) and replaced, and the router reads the stream again."""
    leader = await cluster.fleet.leader()
    fault_at = now()
    cluster.proxies[leader].cut("ipc-router-registry")
    await leader.wait_for_event("leadership_given_up")
    await cluster.fleet.leader()
    cluster.proxies[leader].heal("ipc-router-registry")
    gap = await assert_recovered(cluster.fleet, cluster.load, events, fault_at=fault_at)
    print(f"stream connection cut: writes unavailable {gap:.3f} s")


async def test_a_registry_that_cannot_start_again_resigns_and_ends_its_process(
    cluster: Routers, events: EventLog
) -> None:
    """Fault 6: the leader's registry crashes, and cannot start again (its new
    connection to JetStream gets no answer). Its elector resigns at once, another
    router leads, and the process exits non-zero for an orchestrator to restart it,
    rather than holding the key while it retries."""
    leader = await cluster.fleet.leader()
    fault_at = now()
    cluster.proxies[leader].cut("ipc-router-registry")
    leader.send(signal.SIGUSR1)
    cluster.fleet.forget(leader)
    gap = await assert_recovered(cluster.fleet, cluster.load, events, fault_at=fault_at)
    code = await leader.wait_exit(timeout=30)
    assert code == 1
    assert any(e.get("event") == "router_failed" for e in leader.events), leader.raw_lines[-5:]
    print(f"registry cannot start: writes unavailable {gap:.3f} s; exit {code}")


async def test_a_deleted_stream_is_made_again_and_every_router_follows_it(
    cluster: Routers, events: EventLog, js_client: NatsClient, nats_server: NatsServerProcess
) -> None:
    """Fault 4: an operator deletes the stream. Every router notices (the leader's next
    append, every router's check), one makes a new stream (a new epoch), all read it,
    and services register again on their next heartbeat's 404: one epoch everywhere,
    and the caches resync."""
    async with ServiceClient(nats_server.url) as watcher:
        cache = await watcher.discover("steady")
        before = (await cluster.fleet.page(next(iter(cluster.fleet.ports)), "steady"))["epoch"]
        fault_at = now()
        await js_client.jetstream().delete_stream(STREAM)
        await _all_on_a_new_epoch(cluster.fleet, before)
        await eventually(
            lambda: cache.epoch != before and len(cache) == cluster.load.keep, timeout=15,
            what="the cache on the new epoch with every live instance again",
        )  # fmt: skip
        assert cache.epoch != before
    await _recovered_after_a_reset(cluster, events, fault_at)
    # Each router counted it, and says why it read the stream again.
    for router, port in cluster.fleet.ports.items():
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as http, http.get(url) as reply:
            metrics = await reply.text()
        # (A leader may find out first through its append, which no stream stored.)
        kinds = ("stream_changes", "reloads")
        assert any(f'leadership_events_total{{event="{kind}"}}' in metrics for kind in kinds)
        reasons = [str(e.get("reason")) for e in router.events if e.get("phase") == "loading"]
        assert any("stream" in reason for reason in reasons), reasons


async def test_a_purged_stream_gets_a_new_epoch_and_every_router_follows_it(
    cluster: Routers, events: EventLog, js_client: NatsClient
) -> None:
    """Fault 4: an operator purges the stream: the router that notices gives it a new
    epoch, so that every router (and cache) reads it again."""
    before = (await cluster.fleet.page(next(iter(cluster.fleet.ports)), "steady"))["epoch"]
    fault_at = now()
    await js_client.jetstream().purge_stream(STREAM)
    await _all_on_a_new_epoch(cluster.fleet, before)
    await _recovered_after_a_reset(cluster, events, fault_at)


async def test_a_stream_made_anew_behind_the_routers_is_followed_by_all(
    cluster: Routers, events: EventLog, js_client: NatsClient
) -> None:
    """Fault 4: the stream is deleted and at once made again (another router of another
    deployment, an operator restoring a config): nobody keeps the old view."""
    before = (await cluster.fleet.page(next(iter(cluster.fleet.ports)), "steady"))["epoch"]
    js = js_client.jetstream()
    info = await js_client.request(f"$JS.API.STREAM.INFO.{STREAM}", b"{}", timeout=2)
    config = json.loads(info.data)["config"]
    config["metadata"] = {**config["metadata"], "ipc_router_epoch": "0123456789abcdef"}
    fault_at = now()
    await js.delete_stream(STREAM)
    await js_client.request(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps(config).encode(), timeout=2)
    await _all_on_a_new_epoch(cluster.fleet, before, expected="0123456789abcdef")
    await _recovered_after_a_reset(cluster, events, fault_at)


async def test_a_deleted_leadership_bucket_is_made_again(
    cluster: Routers, events: EventLog, js_client: NatsClient
) -> None:
    """Fault 5: the leader's renewal finds no bucket: it gives the term up and makes
    the bucket again (with the configured replicas); a router leads within 2 s."""
    fault_at = now()
    await js_client.jetstream().delete_key_value(BUCKET)
    gap = await assert_recovered(cluster.fleet, cluster.load, events, fault_at=fault_at)
    info = json.loads((await js_client.request(f"$JS.API.STREAM.INFO.KV_{BUCKET}", b"{}")).data)
    assert info["config"]["num_replicas"] == 1
    recreated = [
        e for r in cluster.fleet.ports for e in r.events if e.get("event") == "leadership_bucket_missing"
    ]
    assert recreated
    print(f"bucket deleted: writes unavailable {gap:.3f} s")


# -- helpers ---------------------------------------------------------------------------


async def _all_on_a_new_epoch(fleet: Fleet, before: str, expected: str | None = None) -> None:
    async def moved() -> bool:
        epochs = {(await fleet.page(router, "steady")).get("epoch") for router in fleet.ports}
        return len(epochs) == 1 and before not in epochs and (expected is None or expected in epochs)

    await eventually(moved, timeout=15, what="every router on one new epoch")


async def _recovered_after_a_reset(cluster: Routers, events: EventLog, fault_at: float) -> None:
    """What was stored before an operator removed it is gone with it: what must hold is
    what was acknowledged after the stream was back, every live instance registered
    again (the SDK does, on its heartbeat's 404), and the rest of `assert_recovered`."""
    load = cluster.load
    await load.written(10)
    first_after = len(load.acknowledged)
    await eventually(
        lambda: _steady_online(cluster), timeout=15, what="every live instance registered again"
    )
    load.acknowledged = load.acknowledged[first_after:]
    gap = await assert_recovered(cluster.fleet, load, events, fault_at=fault_at, within=2.0)
    print(f"stream reset: writes unavailable {gap:.3f} s")


async def _steady_online(cluster: Routers) -> bool:
    page = await cluster.fleet.page(next(iter(cluster.fleet.ports)), "steady")
    online = [i for i in page.get("instances", []) if i["status"] == "ONLINE"]
    return len(online) == cluster.load.keep
