"""Three routers on a three-node NATS cluster, one registry replicated three times
(issues 11 and 15): the leader SIGKILLed or paused, a NATS server killed, every router
restarted, all under a steady load of SDK registrations and heartbeats."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator

import msgpack
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from actors.journal import JournalConfig
from protocol import REGISTER_SUBJECT
from sdk.connection import servers
from tests.support.cluster import NatsCluster
from tests.support.events import EventLog, watching_events
from tests.support.fleet import Fleet, Load, assert_recovered
from tests.support.processes import RouterLauncher, RouterProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

OPTIONS = ("--replicas", "3", "--failover-after", "0.5")
STREAM = JournalConfig().stream


@pytest.fixture
async def cluster() -> AsyncIterator[NatsCluster]:
    nats_cluster = NatsCluster(3)
    await nats_cluster.start()
    try:
        yield nats_cluster
    finally:
        await nats_cluster.stop()


@pytest.fixture
def router_options() -> tuple[str, ...]:
    """The routers' options; a test overrides it for others."""
    return OPTIONS


@pytest.fixture
async def fleet(
    routers: RouterLauncher, cluster: NatsCluster, router_options: tuple[str, ...]
) -> Fleet:
    started = Fleet(routers)
    await started.start(cluster.url, cluster.url, cluster.url, options=router_options)
    return started


@pytest.fixture
async def load(fleet: Fleet, cluster: NatsCluster) -> AsyncIterator[Load]:
    steady = Load(cluster.url)
    await steady.start()
    try:
        yield steady
    finally:
        await steady.close()


@pytest.fixture
async def events(cluster: NatsCluster) -> AsyncIterator[EventLog]:
    async with watching_events(servers(cluster.url)) as log:
        yield log


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_a_sigkilled_leader_is_replaced_within_a_second_and_nothing_is_lost(
    fleet: Fleet, load: Load, events: EventLog
) -> None:
    leader = await fleet.leader()
    await load.written(20)
    killed_at = now()
    leader.send(signal.SIGKILL)
    await leader.wait_exit()
    fleet.forget(leader)
    gap = await assert_recovered(fleet, load, events, fault_at=killed_at)
    print(f"leader SIGKILLed: writes unavailable {gap:.3f} s")


async def test_a_paused_leader_writes_nothing_after_its_successor_and_stands_down(
    fleet: Fleet, load: Load, events: EventLog
) -> None:
    leader = await fleet.leader()
    await load.written(10)
    paused_at = now()
    leader.send(signal.SIGSTOP)
    try:
        others = [router for router in fleet.ports if router is not leader]
        await eventually(
            lambda: any(e.get("event") == "leadership_taken" for r in others for e in r.events),
            timeout=15,
            what="a standby to take over",
        )
        await load.written(20)
    finally:
        leader.send(signal.SIGCONT)
    await leader.wait_for_event("leadership_given_up", timeout=15)
    gap = await assert_recovered(fleet, load, events, fault_at=paused_at)
    # The old leader reads the stream again and follows it as a standby.
    health = await fleet.health(leader)
    assert health is not None and health["role"] == "standby"
    print(f"leader paused: writes unavailable {gap:.3f} s")


async def test_losing_a_nats_server_costs_writes_at_most_a_second_more_than_jetstream(
    fleet: Fleet, cluster: NatsCluster, events: EventLog
) -> None:
    """Fault 9: the server that leads the registry's stream dies (SIGKILL). JetStream
    elects new leaders (seconds: the streams', and the metadata leader's when it was
    that server); the routers' own overhead beyond that
    is at most one second: their appends and renewals give up within --failover-after,
    not nats-py's five seconds, and they read the stream again at once. (A writer
    patient enough for JetStream's own pause keeps writing; a probe request every 50 ms
    finds when writes are answered again.)"""
    load = Load(cluster.url, retries=40)
    await load.start()
    try:
        await load.written(10)
        nc = await nats.connect(servers(cluster.url))
        try:
            leaders = await _stream_leaders(nc)
            victim = next(s for s in cluster.servers if s.server_name == leaders[STREAM])
            killed_at = now()
            victim.send_signal(signal.SIGKILL)  # (a SIGTERM would hand its leaderships over)
            probe = asyncio.create_task(_first_write(nc))
            await eventually(lambda: _moved(nc, victim.server_name), timeout=30,
                             what="JetStream's new leaders")  # fmt: skip
            jetstream_back = now()
            written = await probe
        finally:
            await nc.close()
        gap = await assert_recovered(fleet, load, events, fault_at=killed_at, within=30)
    finally:
        await load.close()
    overhead = written - jetstream_back
    print(f"NATS server lost: JetStream had new leaders {jetstream_back - killed_at:.2f} s after "
          f"the kill, writes were answered {written - killed_at:.2f} s after it (router "
          f"overhead {overhead:.2f} s; the SDK writer's longest gap {gap:.2f} s)")  # fmt: skip
    assert overhead <= 1.0


@pytest.mark.parametrize(
    "router_options", [(*OPTIONS, "--lease-ttl", "30", "--heartbeat-interval", "5")]
)
async def test_every_router_restarted_keeps_the_registry(fleet: Fleet, load: Load) -> None:
    """A rolling restart of every router (its writer sends no heartbeats: the leases are
    long enough for a restart on a busy machine)."""
    await load.written(20)
    await load.writer.deregister("written", load.acknowledged[0])  # an OFFLINE record too
    before = await fleet.page(next(iter(fleet.ports)), "written")
    restarted: list[RouterProcess] = []
    for router in list(fleet.ports):
        router.send(signal.SIGTERM)
        await router.wait_exit()
        port = fleet.ports.pop(router)
        again = await fleet.launcher.start(*router.options, env=router.extra_env)
        fleet.ports[again] = port
        restarted.append(again)
    await fleet.leader()
    after = await fleet.page(restarted[-1], "written")

    def content(page: dict[str, object]) -> set[tuple[str, str, str]]:
        instances = page["instances"]
        assert isinstance(instances, list)
        return {(i["instance_id"], i["status"], i["registered_at"]) for i in instances}

    assert content(before) <= content(after)
    assert (load.acknowledged[0], "OFFLINE") in {(i, s) for i, s, _ in content(after)}
    assert before["epoch"] == after["epoch"]
    assert int(str(after["revision"])) >= int(str(before["revision"]))


async def _stream_leaders(nc: NatsClient) -> dict[str, str]:
    """The server that leads each of the two streams (registry, leadership bucket)."""
    found = {}
    for stream in (STREAM, "KV_IPC_ROUTER_LEADER"):
        reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"{}", timeout=0.25)
        found[stream] = json.loads(reply.data)["cluster"]["leader"]
    return found


async def _moved(nc: NatsClient, dead: str | None) -> bool:
    """Both streams answer, each with a leader that is not the dead server, and the
    cluster has a metadata leader again (it answers `$JS.API.INFO`): consumers are made
    through it, and each router's stream follower on the dead server needs a new one.
    (Killed with the streams' leader, the metadata leader came back 2 s after them in a
    CI run, and the routers wrote 0.03 s after it.)"""
    try:
        now_leading = await _stream_leaders(nc)
        account = json.loads((await nc.request("$JS.API.INFO", b"", timeout=0.25)).data)
    except (nats.errors.Error, KeyError):
        return False
    return "error" not in account and all(leader and leader != dead for leader in now_leading.values())


async def _first_write(nc: NatsClient) -> float:
    """Loop time of the first registration answered 201, asked every 50 ms."""
    n = 0
    while True:
        n += 1
        body = msgpack.packb({"service_name": "probe", "instance_id": f"p-{n}"})
        try:
            reply = await nc.request(REGISTER_SUBJECT, body, timeout=0.25)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            await asyncio.sleep(0.05)
            continue
        if msgpack.unpackb(reply.data).get("status") == 201:
            return now()
        await asyncio.sleep(0.05)
