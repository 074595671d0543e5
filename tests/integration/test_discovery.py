"""Discovery over real NATS: paginated queries, change events with revisions, and
the SDK's watch and always-fresh ServiceCache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from actors.actor import Envelope
from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.registry_api import EventBatch
from protocol import (
    GET_SUBJECT,
    LIST_SUBJECT,
    EventType,
    Instance,
    InstanceStatus,
    LeasePolicy,
    RegistryEvent,
    decode_event,
    encode_msgpack,
    events_subject,
)
from sdk import ServiceClient
from tests.support.actors import gateway_stats, incarnation
from tests.support.nats_requests import nats_request
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)

POLICY = LeasePolicy(heartbeat_interval=0.1, lease_ttl=0.3, offline_after=0.3, offline_retention=0.3)


@pytest.fixture
def lease_policy() -> LeasePolicy:
    return POLICY


@pytest.fixture
async def client(router: Router, nats_server: NatsServerProcess) -> AsyncIterator[ServiceClient]:
    async with ServiceClient(nats_server.url) as client:
        yield client


def names(instances: list[Instance]) -> list[str]:
    return [instance.instance_id for instance in instances]


# -- queries --------------------------------------------------------------------------


async def test_list_pages_through_services_with_an_opaque_cursor(
    client: ServiceClient, nc: NatsClient
) -> None:
    for n in range(5):
        await client.register(f"svc-{n}", "i-1")
    first = await nats_request(nc, LIST_SUBJECT, {"limit": 2})
    assert first["status"] == 200
    page = first["result"]
    assert [s["service_name"] for s in page["services"]] == ["svc-0", "svc-1"]
    assert page["total"] == 5
    assert page["revision"] == 5 and page["epoch"]
    seen = [s["service_name"] for s in page["services"]]
    while page["next_cursor"] is not None:
        page = (await nats_request(nc, LIST_SUBJECT, {"limit": 2, "cursor": page["next_cursor"]}))["result"]
        seen += [s["service_name"] for s in page["services"]]
    assert seen == [f"svc-{n}" for n in range(5)]
    assert {s.service_name for s in await client.list_services()} == set(seen)


async def test_get_defaults_to_online_and_filters_by_status_and_metadata(
    client: ServiceClient, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    await client.register("orders", "a", {"zone": "a", "replicas": 3})
    await client.register("orders", "b", {"zone": "b"})
    await client.register("orders", "c", {"zone": "a"})
    await client.deregister("orders", "c")
    assert names(await client.get_instances("orders")) == ["a", "b"]
    assert names(await client.get_instances("orders", status=None)) == ["a", "b", "c"]
    assert names(await client.get_instances("orders", InstanceStatus.OFFLINE)) == ["c"]
    assert names(await client.get_instances("orders", metadata={"zone": "a"})) == ["a"]
    assert names(await client.get_instances("orders", metadata={"replicas": 3})) == ["a"]
    assert names(await client.get_instances("orders", metadata={"replicas": "3"})) == ["a"]
    assert await client.get_instances("orders", metadata={"zone": "z"}) == []
    raw = await nats_request(nc, GET_SUBJECT, {"service_name": "orders", "limit": 1})
    result = raw["result"]
    assert [i["instance_id"] for i in result["instances"]] == ["a"]
    assert result["next_cursor"]
    assert result["service_revision"] == result["revision"]
    assert result["lease_ttl"] == POLICY.lease_ttl


async def test_get_for_an_unknown_service_is_an_empty_page_with_stamps(
    client: ServiceClient, nc: NatsClient
) -> None:
    raw = await nats_request(nc, GET_SUBJECT, {"service_name": "nobody"})
    assert raw["status"] == 200
    assert raw["result"]["instances"] == []
    assert raw["result"]["service_revision"] == 0
    assert await client.get_instances("nobody") == []


@pytest.mark.parametrize(
    ("subject", "payload", "field"),
    [
        (LIST_SUBJECT, {"limit": 0}, "$.limit"),
        (LIST_SUBJECT, {"limit": 1001}, "$.limit"),
        (LIST_SUBJECT, {"cursor": "not-a-cursor"}, "$.cursor"),
        (LIST_SUBJECT, {"status": "SLEEPY"}, "$.status"),
        (GET_SUBJECT, {}, "$.service_name"),
        (GET_SUBJECT, {"service_name": "a", "metadata": {"k": [1]}}, "$.metadata"),
    ],
)
async def test_bad_queries_get_400_with_the_field(
    router: Router, nc: NatsClient, subject: str, payload: dict[str, Any], field: str
) -> None:
    reply = await nats_request(nc, subject, payload)
    assert reply["status"] == 400
    assert reply["error"]["details"]["field"].startswith(field)


# -- events ---------------------------------------------------------------------------


async def collect(nc: NatsClient, service: str) -> list[RegistryEvent]:
    """The change events of `service` from now on, as they arrive."""
    events: list[RegistryEvent] = []

    async def on_event(msg: Msg) -> None:
        events.append(decode_event(msg.data))

    await nc.subscribe(events_subject(service), cb=on_event)
    await nc.flush()
    return events


async def wait_events(events: list[RegistryEvent], count: int) -> None:
    await eventually(lambda: len(events) >= count, what=f"{count} events")


def drop_event_batches(
    router: Router, monkeypatch: pytest.MonkeyPatch, drop: Callable[[EventBatch], bool]
) -> None:
    """Make the NATS gateway lose the event batches `drop` picks: they are never published."""
    gateway = incarnation(router.supervisor.ref("nats-gateway"))
    handle_batch = gateway.handle_batch

    async def handle_the_rest(batch: list[Envelope]) -> None:
        await handle_batch(
            [e for e in batch if not (isinstance(e.message, EventBatch) and drop(e.message))]
        )

    monkeypatch.setattr(gateway, "handle_batch", handle_the_rest)


async def test_every_change_is_published_once_in_revision_order(
    router: Router, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    events = await collect(nc, "orders")
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "a", {"v": 1})
        await client.register("orders", "a", {"v": 2})
        await client.register("orders", "b")
        await client.deregister("orders", "b")
    await wait_events(events, 5)  # + "a" deregistered when the client closed
    types = [(e.type, e.instance.instance_id) for e in events]
    assert types == [
        (EventType.REGISTERED, "a"),
        (EventType.METADATA_UPDATED, "a"),
        (EventType.REGISTERED, "b"),
        (EventType.DEREGISTERED, "b"),
        (EventType.DEREGISTERED, "a"),
    ]
    assert [e.revision for e in events] == [1, 2, 3, 4, 5]
    assert [e.previous_revision for e in events] == [0, 1, 2, 3, 4]
    assert len({e.epoch for e in events}) == 1
    assert events[1].instance.metadata == {"v": 2}
    await wait_events(events, 7)  # both OFFLINE tombstones are forgotten after retention
    assert {(e.type, e.instance.instance_id) for e in events[5:]} == {
        (EventType.REMOVED, "a"),
        (EventType.REMOVED, "b"),
    }


async def test_lease_transitions_are_published(
    router: Router, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    events = await collect(nc, "orders")
    async with ServiceClient(nats_server.url, heartbeat=False) as client:
        await client.register("orders", "a")
        await wait_events(events, 4)
    assert [e.type for e in events[:4]] == [
        EventType.REGISTERED,
        EventType.UNHEALTHY,
        EventType.EXPIRED,
        EventType.REMOVED,
    ]
    assert events[1].instance.status is InstanceStatus.UNHEALTHY
    assert events[2].instance.status is InstanceStatus.OFFLINE


async def test_a_change_costs_one_publish_however_many_watch_it(
    router: Router, nats_server: NatsServerProcess, client: ServiceClient
) -> None:
    caches = [await client.discover("orders") for _ in range(20)]
    before = (await gateway_stats(router.nats_gateway)).events_published
    try:
        for n in range(10):
            await client.register("orders", f"i-{n}")
        for cache in caches:
            await cache.wait_for(lambda instances: len(instances) == 10, timeout=10)
    finally:
        for cache in caches:
            await cache.close()
    assert (await gateway_stats(router.nats_gateway)).events_published - before == 10


async def test_watch_yields_events_as_they_happen(
    router: Router, client: ServiceClient, nats_server: NatsServerProcess
) -> None:
    stream = client.watch("orders")
    first = asyncio.ensure_future(stream.__anext__())
    async with ServiceClient(nats_server.url) as other:
        # The generator subscribes on its first step; register until it has seen one.
        for n in range(100):
            await other.register("orders", f"a-{n}")
            done, _ = await asyncio.wait({first}, timeout=0.05)
            if done:
                break
        event = await asyncio.wait_for(first, 5)
    assert event.type is EventType.REGISTERED
    assert event.instance.instance_id.startswith("a-")
    assert isinstance(stream, AsyncGenerator)
    await stream.aclose()


# -- the cache ------------------------------------------------------------------------


async def test_cache_starts_from_a_snapshot_and_follows_changes(
    router: Router, nats_server: NatsServerProcess, client: ServiceClient
) -> None:
    await client.register("orders", "a")
    async with ServiceClient(nats_server.url) as other:
        cache = await client.discover("orders")
        try:
            assert names(cache.instances) == ["a"]
            await other.register("orders", "b", {"zone": "x"})
            await cache.wait_for(lambda i: names(i) == ["a", "b"], timeout=5)
            await other.register("orders", "b", {"zone": "y"})
            await cache.wait_for(lambda i: i[1].metadata == {"zone": "y"}, timeout=5)
            await other.deregister("orders", "b")
            await cache.wait_for(lambda i: names(i) == ["a"], timeout=5)
            assert cache.resyncs == 0
        finally:
            await cache.close()


async def test_cache_notices_a_missed_event_and_resyncs(
    router: Router,
    nats_server: NatsServerProcess,
    client: ServiceClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dropped: list[RegistryEvent] = []

    def the_first(batch: EventBatch) -> bool:
        if dropped:
            return False
        dropped.extend(batch.events)
        return True

    cache = await client.discover("orders", check_interval=60)
    drop_event_batches(router, monkeypatch, the_first)
    try:
        await client.register("orders", "lost")  # its event never reaches the cache
        await client.register("orders", "next")  # previous_revision exposes the gap
        await cache.wait_for(lambda i: names(i) == ["lost", "next"], timeout=5)
        assert cache.resyncs == 1
        assert dropped[0].instance.instance_id == "lost"
    finally:
        await cache.close()


async def test_cache_notices_a_missed_last_event_by_its_periodic_check(
    router: Router,
    nats_server: NatsServerProcess,
    client: ServiceClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = await client.discover("orders", check_interval=0.1)
    drop_event_batches(router, monkeypatch, lambda batch: True)
    try:
        await client.register("orders", "silent")
        await cache.wait_for(lambda i: names(i) == ["silent"], timeout=5)
    finally:
        await cache.close()


async def test_cache_ignores_stale_and_duplicate_events(
    router: Router, nats_server: NatsServerProcess, client: ServiceClient, nc: NatsClient
) -> None:
    events = await collect(nc, "orders")
    cache = await client.discover("orders", check_interval=60)
    try:
        await client.register("orders", "a")
        await client.deregister("orders", "a")
        await cache.wait_for(lambda i: i == [], timeout=5)
        await wait_events(events, 2)
        registered = events[0]
        assert registered.type is EventType.REGISTERED
        # Replayed old events must neither resurrect "a" nor add it twice.
        for _ in range(3):
            await nc.publish(events_subject("orders"), encode_msgpack(registered))
        await client.register("orders", "b")
        await cache.wait_for(lambda i: names(i) == ["b"], timeout=5)
        assert cache.resyncs == 0
    finally:
        await cache.close()


async def test_cache_keeps_its_view_when_the_registry_restarts_empty(
    router: Router, nats_server: NatsServerProcess
) -> None:
    """The registry forgets everything on a restart; the cache must not report an
    empty service while the instances come back."""
    services = [ServiceClient(nats_server.url) for _ in range(4)]
    for n, service in enumerate(services):
        await service.connect()
        await service.register("orders", f"i-{n}")
    sizes: list[int] = []
    async with ServiceClient(nats_server.url) as watcher:
        cache = await watcher.discover("orders", on_change=lambda i: sizes.append(len(i)))
        try:
            old = incarnation(router.registry.ref)
            epoch = cache.epoch
            old.crash(RuntimeError("injected fault"))
            await cache.wait_for(lambda i: cache.epoch != epoch and len(i) == 4, timeout=10)
            # Past the grace period the router's own view takes over: still all four.
            await cache.wait_for(lambda i: cache._grace_until is None, timeout=10)
            assert names(cache.instances) == [f"i-{n}" for n in range(4)]
        finally:
            await cache.close()
            for service in services:
                await service.close()
    assert 0 not in sizes


async def test_cache_choose_alternates_between_instances_and_drops_a_deregistered_one(
    router: Router, nats_server: NatsServerProcess, client: ServiceClient
) -> None:
    await client.register("orders", "a", {"zone": "a"})
    await client.register("orders", "b", {"zone": "b"})
    cache = await client.discover("orders")

    def chosen(calls: int, **options: Any) -> list[str | None]:
        return [i.instance_id if (i := cache.choose(**options)) else None for _ in range(calls)]

    try:
        picks = chosen(6)
        assert set(picks) == {"a", "b"}
        assert picks[0::2] == [picks[0]] * 3 and picks[1::2] == [picks[1]] * 3
        assert chosen(4, prefer={"zone": "b"}) == ["b"] * 4
        await client.deregister("orders", "a")
        await cache.wait_for(lambda i: names(i) == ["b"], timeout=5)
        for strategy in ("round_robin", "random", "weighted"):
            assert chosen(10, strategy=strategy) == ["b"] * 10
        assert chosen(2, prefer={"zone": "a"}) == ["b", "b"]  # no "a" left: any usable one
    finally:
        await cache.close()
