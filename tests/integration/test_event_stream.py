"""The admin event stream (`GET /api/v1/admin/events`, Server-Sent Events) of real
routers on a real nats-server: the same events as on NATS, a service filter,
`Last-Event-ID` replay or an explicit resync, bounded clients, keepalives, and the
feed's own gaps (a NATS restart, a registry that starts afresh)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import structlog
from nats.aio.client import Client as NatsClient

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.event_feed import EventFeedLimits, FeedSubscriber, _Gap
from actors.registry import RegistryActor
from protocol import (
    EVENTS_WILDCARD,
    EventType,
    Instance,
    InstanceStatus,
    LeasePolicy,
    RegistryEvent,
    decode_event,
    encode_json,
    encode_msgpack,
)
from sdk import NatsAuth, ServiceClient
from tests.support.actors import incarnation
from tests.support.network import free_port
from tests.support.routers import InProcessRouters
from tests.support.sse import EVENTS, SseStream, open_stream
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

TOKEN = "event-stream-admin-token-0123456789"


def base_url(router: Router) -> str:
    return f"http://127.0.0.1:{router.http_port}"


async def feed_listening(router: Router) -> bool:
    stats = await router.event_feed.stats()
    return stats is not None and stats.listening


async def first_resync(stream: SseStream) -> dict[str, Any]:
    frame = await stream.next()
    assert frame.event == "resync", frame
    body: dict[str, Any] = frame.json()
    assert set(body) == {"reason", "epoch", "revision"}
    return body


async def test_a_new_client_is_told_to_read_a_snapshot_then_gets_every_change_as_on_nats(
    router: Router, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    on_nats: list[bytes] = []
    seen = asyncio.Event()

    async def collect(msg: Any) -> None:
        on_nats.append(msg.data)
        if len(on_nats) == 4:
            seen.set()

    await nc.subscribe(EVENTS_WILDCARD, cb=collect)
    await nc.flush()
    async with open_stream(base_url(router)) as stream:
        assert "no Last-Event-ID" in (await first_resync(stream))["reason"]
        assert stream.retry == 2000
        client = ServiceClient(nats_server.url)
        async with client:
            await client.register("orders", "orders-1", {"zone": "a"})
            await client.register("payments", "payments-1")
        frames = await stream.events(4)  # two registrations, two deregistrations
    await asyncio.wait_for(seen.wait(), 10)
    # The same events, in the same order: the revision as the id, the Struct as JSON.
    assert [f.json() for f in frames] == [json.loads(encode_json(decode_event(d))) for d in on_nats]
    assert [f.id for f in frames] == [str(decode_event(d).revision) for d in on_nats]
    assert [f.json()["type"] for f in frames][:2] == ["registered", "registered"]
    assert client._session_id not in repr([f.data for f in frames])


async def test_a_service_filter_streams_only_that_services_events(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with open_stream(base_url(router), service="payments") as stream:
        await first_resync(stream)
        async with ServiceClient(nats_server.url) as client:
            await client.register("orders", "orders-1")
            await client.register("payments", "payments-1")
            await client.register("orders", "orders-2")
        frames = await stream.events(2)  # payments-1 registered, then deregistered
    assert {f.json()["instance"]["service_name"] for f in frames} == {"payments"}
    assert [f.json()["type"] for f in frames] == ["registered", "deregistered"]


async def test_a_client_that_reconnects_with_last_event_id_gets_what_it_missed_and_no_resync(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        async with open_stream(base_url(router)) as stream:
            await first_resync(stream)
            await client.register("orders", "orders-1")
            last = (await stream.next()).id
        assert last is not None
        # Disconnected: two changes happen meanwhile (the feed lingers, listening).
        await client.register("orders", "orders-2")
        await client.register("payments", "payments-1")
        await eventually(
            lambda: feed_has_received(router, 3), what="the feed to see the missed events"
        )
        async with open_stream(base_url(router), last_event_id=last) as stream:
            missed = await stream.events(2)
            assert [f.event for f in missed] == ["message", "message"]
            assert [f.json()["instance"]["instance_id"] for f in missed] == ["orders-2", "payments-1"]
            assert all(int(f.id or 0) > int(last) for f in missed)
            await client.register("orders", "orders-3")  # and then the live ones
            assert (await stream.next()).json()["instance"]["instance_id"] == "orders-3"
        # A filtered client continues after its own last event just the same.
        async with open_stream(base_url(router), service="payments", last_event_id=last) as stream:
            frame = await stream.next()
            assert (frame.event, frame.json()["instance"]["instance_id"]) == ("message", "payments-1")


async def feed_has_received(router: Router, count: int) -> bool:
    stats = await router.event_feed.stats()
    return stats is not None and stats.events_received >= count


@pytest.mark.parametrize("last_event_id", ["", "abc", "-1", "1e3", "9" * 40, "١"])
async def test_a_last_event_id_that_is_no_revision_gets_a_resync(
    router: Router, last_event_id: str
) -> None:
    async with open_stream(base_url(router), last_event_id=last_event_id) as stream:
        await first_resync(stream)


async def test_a_last_event_id_older_than_the_buffer_gets_a_resync_not_a_silent_gap(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    router = await routers.start(event_feed=EventFeedLimits(buffer_events=2))
    async with ServiceClient(nats_server.url) as client:
        async with open_stream(base_url(router)) as stream:
            await first_resync(stream)
            await client.register("orders", "orders-1")
            first = (await stream.next()).id
            for n in range(2, 5):
                await client.register("orders", f"orders-{n}")
            await stream.events(3)
        assert first is not None
        async with open_stream(base_url(router), last_event_id=first) as stream:
            body = await first_resync(stream)
            assert "no longer buffered" in body["reason"]
            assert body["revision"] == 4  # read a snapshot at least this recent
            await client.register("orders", "orders-5")
            assert (await stream.next()).json()["instance"]["instance_id"] == "orders-5"


async def test_a_last_event_id_ahead_of_this_router_gets_a_resync(
    router: Router, nats_server: NatsServerProcess
) -> None:
    """An id this router has not reached (another router's, or an earlier run's) cannot
    be continued here: the client reads a snapshot rather than skip what lies between."""
    async with ServiceClient(nats_server.url) as client:
        async with open_stream(base_url(router)) as stream:
            await first_resync(stream)
            await client.register("orders", "orders-1")
            await stream.next()
        async with open_stream(base_url(router), last_event_id="1000") as stream:
            assert "continue from" in (await first_resync(stream))["reason"]


async def test_a_standby_router_streams_the_leaders_events(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    policy = LeasePolicy(heartbeat_interval=0.2, lease_ttl=0.8, offline_after=30, offline_retention=60)
    started = [
        await routers.start(store="stream", lease_policy=policy, presence_wait=0.05) for _ in range(2)
    ]
    found: list[Router] = []

    async def a_ready_standby() -> bool:
        for router in started:
            status = await router.registry.status()
            if status is not None and status.ready and status.role == "standby":
                found[:] = [router]
                return True
        return False

    await eventually(a_ready_standby, what="a standby that has read the stream")
    async with open_stream(base_url(found[0])) as stream:
        await first_resync(stream)
        async with ServiceClient(nats_server.url) as client:
            await client.register("orders", "orders-1")
            frame = await stream.next()
    assert frame.json()["instance"]["instance_id"] == "orders-1"
    assert int(frame.id or 0) == frame.json()["revision"]


async def test_beyond_the_client_cap_the_stream_is_a_json_503_with_retry_after(
    routers: InProcessRouters,
) -> None:
    router = await routers.start(event_feed=EventFeedLimits(max_clients=2))
    async with open_stream(base_url(router)) as one, open_stream(base_url(router)) as two:
        await first_resync(one)
        await first_resync(two)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{base_url(router)}{EVENTS}") as refused,
        ):
            body = await refused.json()
            assert refused.status == 503
            assert refused.headers["Retry-After"] == "10"
            assert body["error"]["code"] == "router_unavailable"
            assert body["error"]["details"] == {"limit": 2}
    # The two left: room again.
    await eventually(lambda: clients_below(router, 2), what="the streams to be counted out")
    async with open_stream(base_url(router)) as again:
        await first_resync(again)
    stats = await router.event_feed.stats()
    assert stats is not None and stats.clients_refused == 1


async def clients_below(router: Router, limit: int) -> bool:
    stats = await router.event_feed.stats()
    return stats is not None and stats.clients < limit


async def test_a_quiet_stream_sends_keepalive_comments(routers: InProcessRouters) -> None:
    router = await routers.start(event_feed=EventFeedLimits(keepalive=0.2))
    async with open_stream(base_url(router)) as stream:
        await first_resync(stream)
        assert await stream.next_comment(timeout=5) == "keepalive"
        assert await stream.next_comment(timeout=5) == "keepalive"


async def test_a_client_that_does_not_keep_up_is_dropped_not_buffered(
    routers: InProcessRouters, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    """Straight at the feed: a subscriber whose queue is never taken from fills up
    to its bound, is closed, and is counted; the feed goes on for the others."""
    router = await routers.start(event_feed=EventFeedLimits(client_events=8))
    slow = await router.event_feed.subscribe()
    fast = await router.event_feed.subscribe()
    taken: list[bytes] = []

    def events_taken() -> int:
        return sum(frame.startswith(b"id: ") for frame in taken)

    async with ServiceClient(nats_server.url) as client:
        for n in range(12):
            await client.register("orders", f"orders-{n}")
            frames = await fast.subscriber.take(5.0)
            assert frames is not None
            taken += frames
        while events_taken() < 12:  # (the last event may come after the last reply)
            frames = await fast.subscriber.take(5.0)
            assert frames is not None, f"only {events_taken()} events reached the fast client"
            taken += frames
        await eventually(
            lambda: slow.subscriber.closed is not None, what="the slow client to be dropped"
        )
        assert "too slow" in (slow.subscriber.closed or "")
        assert await slow.subscriber.take(0.1) is None
        stats = await router.event_feed.stats()
        assert stats is not None and stats.clients_dropped_slow == 1 and stats.clients == 1
        router.event_feed.unsubscribe(fast.subscriber)


def test_a_subscriber_queue_is_bounded_by_bytes_too() -> None:
    subscriber = FeedSubscriber(None, max_frames=100, max_bytes=10)
    assert subscriber.push(b"12345")
    assert subscriber.push(b"12345")
    assert not subscriber.push(b"1")
    assert subscriber.closed is not None and "too slow" in subscriber.closed


async def test_after_a_nats_restart_every_client_is_told_to_resync(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with open_stream(base_url(router)) as stream:
        await first_resync(stream)
        await nats_server.stop()
        restarted = NatsServerProcess(port=nats_server.port, jetstream=False)
        await restarted.start()
        try:
            body = await first_resync_within(stream, 30)
            assert "missed events" in body["reason"]
            async with ServiceClient(restarted.url) as client:
                await client.register("orders", "after-restart")
                frame = await stream.next(timeout=15)
            assert frame.json()["instance"]["instance_id"] == "after-restart"
        finally:
            await restarted.stop()


async def first_resync_within(stream: SseStream, timeout: float) -> dict[str, Any]:
    frame = await stream.next(timeout=timeout)
    assert frame.event == "resync", frame
    body: dict[str, Any] = frame.json()
    return body


async def test_a_registry_that_starts_afresh_makes_every_client_resync(
    router: Router, nats_server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry crash in memory mode: the restarted registry has a new epoch and
    counts revisions from 1 again; the stream says so rather than mixing them up."""
    async with ServiceClient(nats_server.url) as client, open_stream(base_url(router)) as stream:
        await first_resync(stream)
        await client.register("orders", "orders-1")
        before = await stream.next()
        registry = incarnation(router.registry.ref)
        assert isinstance(registry, RegistryActor)

        def poisoned(request: Any) -> Any:
            raise RuntimeError("injected registry fault")

        monkeypatch.setattr(registry.state, "register", poisoned)
        with pytest.raises(Exception):  # noqa: B017 - whatever the SDK makes of the crash
            await client.register("orders", "orders-crash")
        await eventually(lambda: incarnation(router.registry.ref) is not registry, what="a restart")
        await client.register("orders", "orders-2")
        # The events of the new epoch come after a resync.
        frame = await stream.next(timeout=15)
        while frame.event != "resync":
            frame = await stream.next(timeout=15)
        assert "epoch" in frame.json()["reason"]
        after = await stream.next(timeout=15)
        assert after.json()["epoch"] != before.json()["epoch"]
    # And an id of the old epoch is not continued in the new one.
    async with open_stream(base_url(router), last_event_id=before.id) as stream:
        await first_resync(stream)


async def test_head_answers_at_once_and_bad_queries_are_json_400s(router: Router) -> None:
    async with aiohttp.ClientSession(base_url(router)) as http:
        async with http.head(EVENTS) as head:
            assert head.status == 200
            assert head.headers["Content-Type"].startswith("text/event-stream")
        for query, field in [
            ("service=a.b", "query.service"),
            ("service=", "query.service"),
            ("service=a&service=b", "query.service"),
            ("service=" + "x" * 65, "query.service"),
            ("limit=1", "query.limit"),
        ]:
            async with http.get(f"{EVENTS}?{query}") as response:
                body = await response.json()
            assert response.status == 400, query
            assert body["error"]["code"] == "invalid_field"
            assert body["error"]["details"]["field"] == field
        async with http.post(EVENTS) as response:
            assert response.status == 405
            assert response.headers["Allow"] == "GET, HEAD"


async def test_the_stream_wants_the_admin_token(routers: InProcessRouters) -> None:
    router = await routers.start(admin_token=TOKEN)
    async with aiohttp.ClientSession(base_url(router)) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.get(EVENTS, headers=headers) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "unauthorized"
        async with http.get(f"{EVENTS}?access_token={TOKEN}") as response:
            assert response.status == 401  # never in a URL
    async with open_stream(base_url(router), token=TOKEN) as stream:
        await first_resync(stream)


async def test_stopping_the_router_ends_open_streams_promptly(routers: InProcessRouters) -> None:
    router = await routers.start()
    async with open_stream(base_url(router)) as stream:
        await first_resync(stream)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(router.stop(), 10)
        assert loop.time() - started < 5
        assert await stream.ended(timeout=5)
    routers.started.remove(router)


async def test_the_feed_stops_listening_when_nobody_watches(
    routers: InProcessRouters, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    router = await routers.start(event_feed=EventFeedLimits(linger=0.2))
    assert not await feed_listening(router)  # nothing paid until somebody watches
    async with open_stream(base_url(router)) as stream:
        await first_resync(stream)
        assert await feed_listening(router)
    await eventually(lambda: not_listening(router), what="the feed to stop listening")


async def test_foreign_messages_on_the_event_subjects_are_counted_never_streamed(
    router: Router, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    forged = RegistryEvent(
        epoch="f" * 16,
        revision=7,
        previous_revision=0,
        type=EventType.REGISTERED,
        instance=Instance(
            service_name="orders",
            instance_id="forged",
            status=InstanceStatus.ONLINE,
            metadata={},
            registered_at=datetime.now(UTC),
        ),
    )
    async with open_stream(base_url(router)) as stream:
        await first_resync(stream)
        await nc.publish("ipc.registry.events.orders", b"\xc1 not msgpack")
        await nc.publish("ipc.registry.events.orders", msgpack.packb({"x": 1}))
        await nc.publish("ipc.registry.events.payments", encode_msgpack(forged))  # wrong subject
        await nc.flush()
        await eventually(lambda: malformed_at_least(router, 3), what="the foreign messages counted")
        async with ServiceClient(nats_server.url) as client:
            await client.register("orders", "orders-1")
            frame = await stream.next()
        assert frame.json()["instance"]["instance_id"] == "orders-1"


async def not_listening(router: Router) -> bool:
    return not await feed_listening(router)


async def malformed_at_least(router: Router, count: int) -> bool:
    stats = await router.event_feed.stats()
    return stats is not None and stats.events_malformed >= count


async def test_a_burst_of_gaps_resyncs_the_clients_at_once_and_once_more_after_it(
    router: Router,
) -> None:
    """NATS drops events one by one in a flood: each drop is a gap, but the clients get
    one resync at once and one more after the burst (so that a snapshot read in
    between is not taken for complete), not one per drop."""
    subscription = await router.event_feed.subscribe()
    subscriber = subscription.subscriber
    assert [frame.startswith(b"event: resync") for frame in await take(subscriber)] == [True]
    for n in range(5):
        router.event_feed.ref.tell(_Gap(f"drop {n}", True))
    assert b"drop 0" in b"".join(await take(subscriber))
    later = b"".join(await take(subscriber, timeout=5))
    assert later.startswith(b"event: resync") and later.count(b"event: resync") == 1
    assert await subscriber.take(1.5) == []  # and nothing more
    stats = await router.event_feed.stats()
    assert stats is not None and stats.gaps == 5
    router.event_feed.unsubscribe(subscriber)


async def take(subscriber: FeedSubscriber, timeout: float = 5.0) -> list[bytes]:
    frames = await subscriber.take(timeout)
    assert frames, "no frame in time"
    return frames


async def test_a_router_refused_the_events_subjects_says_so_and_keeps_serving(
    tmp_path: Path,
) -> None:
    """A NATS user that may not subscribe to ipc.registry.events.> (an older least-
    privilege configuration): the feed logs why no event comes, the stream still
    answers (with its resync), and nothing crashes."""
    conf = tmp_path / "nats.conf"
    conf.write_text(
        "authorization {\n"
        "  users: [\n"
        '    { user: router, password: "router-pw-0123456789",\n'
        '      permissions: { subscribe: { deny: ["ipc.registry.events.>"] } } }\n'
        "  ]\n"
        "}\n"
    )
    server = NatsServerProcess(port=free_port(), jetstream=False, config_file=conf)
    await server.start()
    started = InProcessRouters(server.url)
    try:
        router = await started.start(
            nats_auth=NatsAuth(user="router", password="router-pw-0123456789")
        )
        with structlog.testing.capture_logs() as logs:
            async with open_stream(base_url(router)) as stream:
                await first_resync(stream)
                await eventually(
                    lambda: any(e["event"] == "event_feed_refused" for e in logs),
                    what="the refusal to be logged",
                )
        assert router.supervisor.ref("event-feed").alive
    finally:
        await started.stop_all()
        await server.stop()
