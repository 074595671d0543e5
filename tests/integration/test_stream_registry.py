"""The registry on a JetStream stream, with routers in the test's process on one real
nats-server (issue 11): what is stored (and what never is), standbys that follow,
and a leader fenced off by someone else's write."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgpack
import nats
import pytest
from nats.aio.client import Client as NatsClient

from actors.actor import Lane
from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.errors import StartupError
from actors.journal import JournalConfig
from actors.leadership import LeaderElector
from actors.registry import RegistryActor
from actors.role_state import LeaseView, Resign, Role
from protocol import (
    REGISTER_SUBJECT,
    InstanceStatus,
    LeasePolicy,
    ProtocolError,
    RegisterRequest,
    Status,
    encode_msgpack,
)
from protocol.stored import TermMarker, decode_stored_instance, instance_subject, term_subject
from sdk import ServiceClient
from tests.support.actors import incarnation
from tests.support.routers import InProcessRouters
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

POLICY = LeasePolicy(heartbeat_interval=0.2, lease_ttl=0.8, offline_after=30, offline_retention=60)
STREAM = JournalConfig().stream
PREFIX = JournalConfig().subject_prefix


async def stream_router(routers: InProcessRouters, **config: object) -> Router:
    config.setdefault("lease_policy", POLICY)
    router = await routers.start(store="stream", presence_wait=0.05, **config)

    async def settled() -> bool:
        status = await router.registry.status()
        return status is not None and status.ready

    await eventually(settled, what="the router to read the stream")
    return router


async def leader_of(routers: list[Router]) -> Router:
    found: list[Router] = []

    async def one() -> bool:
        for router in routers:
            status = await router.registry.status()
            if status is not None and status.role == "leader":
                found[:] = [router]
                return True
        return False

    await eventually(one, what="a leader")
    return found[0]


async def stream_messages(url: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """Every message in the registry's stream, read with a plain consumer."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        found: list[tuple[str, bytes, dict[str, str]]] = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                message = await js.get_msg(STREAM, sequence)
            except nats.js.errors.NotFoundError:
                continue
            headers = {str(k): str(v) for k, v in (message.headers or {}).items()}
            found.append((message.subject or "", message.data or b"", headers))
        return found
    finally:
        await nc.close()


async def test_the_stream_holds_one_message_per_instance_and_never_a_session_id(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    await stream_router(routers)
    async with ServiceClient(nats_server.url) as client:
        for round_ in range(3):  # changes to the same instance replace its message
            await client.register("orders", "orders-1", {"round": round_})
        await client.register("orders", "orders-2")
        await client.deregister("orders", "orders-2")
        session = client._session_id
    messages = await stream_messages(nats_server.url)
    subjects = [subject for subject, _, _ in messages]
    assert subjects.count(f"{PREFIX}.i.orders.orders-1") == 1
    assert subjects.count(f"{PREFIX}.i.orders.orders-2") == 1
    assert all(session.encode() not in data for _, data, _ in messages)
    stored = [decode_stored_instance(data) for s, data, _ in messages if ".i." in s and data]
    assert {s.instance_id: s.status.value for s in stored} == {
        "orders-1": "OFFLINE",  # (the client deregistered it on close)
        "orders-2": "OFFLINE",
    }
    assert all(s.session_hash is not None and len(s.session_hash) == 16 for s in stored)


async def test_a_standby_shows_what_the_leader_shows_at_the_same_revision(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    first = await stream_router(routers)
    second = await stream_router(routers)
    async with ServiceClient(nats_server.url) as client:
        for n in range(30):
            await client.register("orders", f"orders-{n:02d}", {"n": n})
        await client.deregister("orders", "orders-07")
        leader = await leader_of([first, second])
        standby = second if leader is first else first
        target = (await leader.registry.status()).revision  # type: ignore[union-attr]

        async def caught_up() -> bool:
            status = await standby.registry.status()
            return status is not None and status.revision == target

        await eventually(caught_up, what="the standby at the leader's revision")
        mine = await leader.registry.get_service("orders")
        theirs = await standby.registry.get_service("orders")
        assert mine.revision == theirs.revision == target
        assert [(i.instance_id, i.status, i.metadata, i.registered_at) for i in mine.instances] == [
            (i.instance_id, i.status, i.metadata, i.registered_at) for i in theirs.instances
        ]


async def test_a_standby_with_a_small_mailbox_reads_a_big_stream_whole(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    leader = await leader_of([await stream_router(routers)])
    nc = await nats.connect(nats_server.url)
    try:
        await _register_all(nc, leader, range(3_000))
        await eventually(
            lambda: _instances(leader, 3_000), what="the leader to hold 3,000 instances"
        )
    finally:
        await nc.close()
    standby = await stream_router(routers, registry_mailbox_size=16)
    status = await standby.registry.status()
    assert status is not None and status.instances == 3_000


async def _register_all(nc: NatsClient, router: Router, numbers: range) -> None:
    """Register instance i<n> of service s<n % 50> for each n, 500 in flight at a time.
    A burst may cost a loaded machine's leader its leadership (its renewal waits behind
    the burst): what was answered 503 is sent again, as the SDK would."""
    pending = list(numbers)
    for _ in range(20):
        refused: list[int] = []
        for start in range(0, len(pending), 500):
            chunk = pending[start : start + 500]
            replies = await asyncio.gather(
                *(
                    nc.request(
                        REGISTER_SUBJECT,
                        msgpack.packb({"service_name": f"s{n % 50}", "instance_id": f"i{n}"}),
                        timeout=10,
                    )
                    for n in chunk
                ),
                return_exceptions=True,
            )
            refused += [
                n
                for n, reply in zip(chunk, replies, strict=True)
                if isinstance(reply, BaseException) or msgpack.unpackb(reply.data)["status"] != 201
            ]
        if not refused:
            return
        pending = refused
        await leader_of([router])  # leading again
    raise AssertionError(f"{len(pending)} registrations still refused")


async def _instances(router: Router, count: int) -> bool:
    status = await router.registry.status()
    return status is not None and status.instances == count


async def test_a_leader_fenced_off_by_another_write_stands_down_and_loses_nothing(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    """Someone else's write to the stream (here a term marker, as a new leader's first
    write) makes the leader's next conditional append fail: it stores nothing, reads
    the stream again, and serves again once it is elected again."""
    router = await stream_router(routers)
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "before")
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await js.publish(
                term_subject(PREFIX), encode_msgpack(TermMarker(term=10**9, router="intruder"))
            )
        finally:
            await nc.close()
        await client.register("orders", "after")  # 503 from the fenced leader, then retried
        detail = await router.registry.get_service("orders")
        assert sorted(i.instance_id for i in detail.instances) == ["after", "before"]
    messages = await stream_messages(nats_server.url)
    terms = [
        json.dumps(dict(headers)) for subject, _, headers in messages if subject.endswith(".term")
    ]
    assert terms  # the router's own term marker, after the intruder's


async def test_a_status_asked_in_a_drain_whose_changes_were_not_stored_is_answered(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    """The drain's register gets the 503; the status asked in the same drain (health
    checks, metrics) still gets its answer: it raised the 503 too, and `/metrics` or a
    gateway restart asking it failed with it."""
    router = await leader_of([await stream_router(routers)])
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().publish(
            term_subject(PREFIX), encode_msgpack(TermMarker(term=10**9, router="intruder"))
        )
    finally:
        await nc.close()
    registered, status = await asyncio.gather(  # told before the registry drains: one drain
        router.registry.register(RegisterRequest(service_name="orders", instance_id="o-1")),
        router.registry.status(),
        return_exceptions=True,
    )
    assert isinstance(registered, ProtocolError) and registered.status == Status.SERVICE_UNAVAILABLE
    assert not isinstance(status, BaseException) and status is not None


async def test_a_drain_that_outlasts_the_leadership_still_stores_what_it_accepted(
    routers: InProcessRouters, nats_server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy leader (here a drain that blocks the loop past the leadership's validity)
    stores what it accepted while it led: the conditional append decides, not the
    clock. It refused the drain with 503 and stood down, while its elector kept
    renewing the key: a router that no router could take over from."""
    router = await leader_of([await stream_router(routers)])
    registry = incarnation(router.registry.ref)
    assert isinstance(registry, RegistryActor)
    register = registry.state.register

    def busy_register(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.undo()
        time.sleep(0.6)  # past failover_after (0.5 s): a busy loop, not a pause
        return register(*args, **kwargs)

    monkeypatch.setattr(registry.state, "register", busy_register)
    reply = await router.registry.register(
        RegisterRequest(service_name="orders", instance_id="o-1")
    )
    assert reply.status == Status.CREATED
    stored = [subject for subject, _, _ in await stream_messages(nats_server.url)]
    assert instance_subject(PREFIX, "orders", "o-1") in stored
    await leader_of([router])  # leading again (its elector noticed the lapse and left)
    detail = await router.registry.get_service("orders")
    assert [i.instance_id for i in detail.instances] == ["o-1"]


async def test_a_leader_whose_leadership_may_have_lapsed_expires_nobody(
    routers: InProcessRouters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its elector stops renewing (cut off from the KV bucket, say): past the lease of
    an instance that sends no heartbeat, the leader still expires nothing, since a
    successor may hold the instance's fresh lease by now."""
    policy = LeasePolicy(heartbeat_interval=1, lease_ttl=3, offline_after=30, offline_retention=60)
    router = await leader_of([await stream_router(routers, lease_policy=policy)])
    await router.registry.register(RegisterRequest(service_name="orders", instance_id="o-1"))
    loop = asyncio.get_running_loop()
    expires_at = loop.time() + policy.lease_ttl
    elector = incarnation(router.supervisor.ref("leader-elector"))
    assert isinstance(elector, LeaderElector)
    kv = elector._kv

    async def cut_off(*args: Any, **kwargs: Any) -> int:
        raise TimeoutError("cut off")

    monkeypatch.setattr(kv, "update", cut_off)
    registry = incarnation(router.registry.ref)
    assert isinstance(registry, RegistryActor)
    assert registry.role is not None
    role = registry.role
    await eventually(lambda: not role.may_write(loop.time()), what="the leadership to lapse")
    assert loop.time() < expires_at  # (or expiring would have been right)
    await eventually(lambda: loop.time() > expires_at + 0.2, what="the lease to end", timeout=10)
    await router.registry.status()
    status = await router.registry.status()  # two drains: the timer's has been handled
    assert status is not None and status.status_counts == {InstanceStatus.ONLINE: 1}


async def test_an_elector_keeps_a_later_term_than_the_one_resigned(
    routers: InProcessRouters,
) -> None:
    router = await leader_of([await stream_router(routers)])
    elector = router.supervisor.ref("leader-elector")
    status = await router.registry.status()
    assert status is not None
    elector.tell(Resign(term=-1, reason="an old term"), lane=Lane.URGENT)
    await elector.ask(Resign(term=-2, reason="again"), lane=Lane.URGENT)  # the first is done
    status = await router.registry.status()
    assert status is not None and status.role == Role.LEADER


async def test_more_replicas_than_jetstream_servers_fails_at_start_with_the_reason(
    routers: InProcessRouters,
) -> None:
    config = JournalConfig(stream="IPC_TOO_MANY_REPLICAS", replicas=3)
    with pytest.raises(
        StartupError, match=r"replicas > 1 not supported.*3 replica\(s\).*--replicas"
    ):
        await routers.start(store="stream", journal=config, presence_wait=0.05)


async def test_a_leader_that_lost_its_leadership_arms_no_lease_timer(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    """Expiry is the leader's: a router that stands down keeps its records' deadlines
    but must not wake up for them (it did, every 50 ms, until its next reload)."""
    router = await stream_router(routers)
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        registry = incarnation(router.registry.ref)
        assert isinstance(registry, RegistryActor)
        assert registry._timer is not None  # the leader waits for orders-1's deadline
        router.registry.ref.tell(LeaseView(None, 0.0, serial=10**9), lane=Lane.URGENT)
        status = await router.registry.status()
        assert status is not None and status.role == Role.STANDBY
        await router.registry.status()  # a later drain: the one that stood down is over
        assert registry._timer is None
