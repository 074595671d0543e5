"""Registry state transitions, leases, and the RegistryActor's message interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from actors.actor import Actor
from actors.registry import RegistryActor
from actors.registry_api import EventBatch, RegistryClient
from actors.registry_state import RegistryState
from protocol import (
    ErrorCode,
    EventType,
    GetServiceRequest,
    InstanceStatus,
    LeasePolicy,
    LeaseRequest,
    ListServicesRequest,
    ProtocolError,
    RegisterRequest,
    RegistryEvent,
    RegistryLimits,
    ServiceDetail,
    encode_json,
    encode_msgpack,
)
from protocol.models import MetadataValue
from tests.support.clock import FakeClock
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(10)

SESSION_A = "session-a-0123456789"
SESSION_B = "session-b-0123456789"
POLICY = LeasePolicy(heartbeat_interval=1.0, lease_ttl=3.0, offline_after=30.0, offline_retention=60.0)
ONLINE, UNHEALTHY, OFFLINE = InstanceStatus.ONLINE, InstanceStatus.UNHEALTHY, InstanceStatus.OFFLINE


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> RegistryState:
    return RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)


def request(
    service: str = "orders",
    instance: str = "orders-1",
    session: str | None = SESSION_A,
    metadata: dict[str, object] | None = None,
) -> RegisterRequest:
    return RegisterRequest(
        service_name=service, instance_id=instance, session_id=session, metadata=metadata or {}
    )


def lease(service: str = "orders", instance: str = "orders-1", session: str = SESSION_A) -> LeaseRequest:
    return LeaseRequest(service_name=service, instance_id=instance, session_id=session)


def detail(
    state: RegistryState, service: str = "orders", status: InstanceStatus | None = None
) -> ServiceDetail:
    return state.get_service(GetServiceRequest(service_name=service, status=status, limit=1000))


def status_of(state: RegistryState, instance: str = "orders-1") -> InstanceStatus:
    [found] = [i for i in detail(state).instances if i.instance_id == instance]
    return found.status


def fails_with(status: int, call: object, *args: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.status == status
    return caught.value


# -- registration ------------------------------------------------------------------


def test_first_registration_creates_an_online_instance_with_a_lease(state: RegistryState) -> None:
    reply = state.register(request(metadata={"zone": "a"}))
    assert reply.status == 201
    assert reply.instance is not None
    assert reply.instance.status is ONLINE
    assert reply.instance.metadata == {"zone": "a"}
    assert reply.instance.registered_at.tzinfo is not None
    assert reply.heartbeat_interval == 1.0
    assert reply.lease_ttl == 3.0
    assert reply.instance.lease_expires_at is not None
    assert (reply.instance.lease_expires_at - reply.instance.registered_at).total_seconds() == 3.0


def test_same_session_repeating_gets_the_same_record_back_and_nothing_duplicates(
    state: RegistryState,
) -> None:
    first = state.register(request())
    again = state.register(request())
    assert again.status == 200
    assert again.instance == first.instance
    assert detail(state).instances == [first.instance]


def test_same_session_with_new_metadata_updates_it_and_keeps_registered_at(
    state: RegistryState,
) -> None:
    first = state.register(request(metadata={"v": 1}))
    again = state.register(request(metadata={"v": 2}))
    assert again.instance is not None and first.instance is not None
    assert again.instance.metadata == {"v": 2}
    assert again.instance.registered_at == first.instance.registered_at
    assert detail(state).instances[0].metadata == {"v": 2}


def test_second_session_claiming_live_instance_gets_conflict_with_existing(
    state: RegistryState,
) -> None:
    first = state.register(request(session=SESSION_A))
    error = fails_with(409, state.register, request(session=SESSION_B))
    assert error.code == ErrorCode.INSTANCE_CONFLICT
    assert error.details["existing"] == first.instance
    assert detail(state).instances == [first.instance]


def test_anonymous_registration_cannot_claim_or_repeat_an_instance(state: RegistryState) -> None:
    state.register(request(session=None))
    fails_with(409, state.register, request(session=None))
    fails_with(409, state.register, request(session=SESSION_A))


def test_anonymous_registration_conflicts_with_a_session_owned_instance(state: RegistryState) -> None:
    state.register(request(session=SESSION_A))
    fails_with(409, state.register, request(session=None))


def test_same_instance_id_in_different_services_is_not_a_conflict(state: RegistryState) -> None:
    state.register(request(service="orders", session=SESSION_A))
    assert state.register(request(service="payments", session=SESSION_B)).status == 201


def test_list_services_counts_instances_sorted_by_name(state: RegistryState) -> None:
    for service, instance in [("payments", "p1"), ("orders", "o1"), ("orders", "o2")]:
        state.register(request(service=service, instance=instance))
    listing = state.list_services()
    assert listing.total == 2
    assert [s.service_name for s in listing.services] == ["orders", "payments"]
    assert listing.services[0].instance_count == 2
    assert listing.services[0].status_counts == {ONLINE: 2}


def test_empty_registry_lists_nothing(state: RegistryState) -> None:
    assert state.list_services().total == 0


def test_unknown_service_is_not_found(state: RegistryState) -> None:
    state.register(request())
    error = fails_with(404, detail, state, "payments")
    assert error.code == ErrorCode.SERVICE_NOT_FOUND


def test_session_id_never_appears_in_any_output(state: RegistryState) -> None:
    reply = state.register(request(session=SESSION_A))
    with pytest.raises(ProtocolError) as conflict:
        state.register(request(session=SESSION_B))
    with pytest.raises(ProtocolError) as forbidden:
        state.heartbeat(lease(session=SESSION_B))
    outputs = [
        reply,
        conflict.value.details,
        forbidden.value.details,
        forbidden.value.message,
        state.heartbeat(lease()),
        state.list_services(),
        detail(state),
    ]
    for output in outputs:
        for encoded in (encode_json(output), encode_msgpack(output)):
            assert SESSION_A.encode() not in encoded
            assert SESSION_B.encode() not in encoded


# -- leases ------------------------------------------------------------------------


def test_heartbeats_within_the_ttl_keep_an_instance_online(
    state: RegistryState, clock: FakeClock
) -> None:
    state.register(request())
    for _ in range(10):
        clock.advance(2.9)
        reply = state.heartbeat(lease())
        assert reply.status == 200 and reply.instance_status is ONLINE
        state.expire()
    assert status_of(state) is ONLINE


def test_silence_for_the_ttl_makes_an_instance_unhealthy_then_offline_then_gone(
    state: RegistryState, clock: FakeClock
) -> None:
    state.register(request())
    state.transitions.clear()
    clock.advance(2.99)
    state.expire()
    assert status_of(state) is ONLINE
    clock.advance(0.01)
    state.expire()
    assert status_of(state) is UNHEALTHY
    clock.advance(29.99)
    state.expire()
    assert status_of(state) is UNHEALTHY
    clock.advance(0.01)
    state.expire()
    assert status_of(state) is OFFLINE
    assert detail(state).instances[0].lease_expires_at is None
    clock.advance(60.0)
    state.expire()
    fails_with(404, detail, state)
    assert [(t.old, t.new) for t in state.transitions] == [
        (ONLINE, UNHEALTHY),
        (UNHEALTHY, OFFLINE),
        (OFFLINE, None),
    ]
    assert "no heartbeat for 3 s" in state.transitions[0].reason


def test_a_long_pause_applies_every_due_transition_at_once(
    state: RegistryState, clock: FakeClock
) -> None:
    state.register(request())
    clock.advance(1000)
    state.expire()
    fails_with(404, detail, state)


def test_heartbeat_brings_an_unhealthy_instance_back_online(
    state: RegistryState, clock: FakeClock
) -> None:
    state.register(request())
    clock.advance(5)
    state.expire()
    assert status_of(state) is UNHEALTHY
    reply = state.heartbeat(lease())
    assert reply.instance_status is ONLINE
    assert state.transitions[-1].reason == "heartbeat: back online"
    # The stale OFFLINE deadline must not take it offline; the new lease applies.
    clock.advance(2.9)
    state.expire()
    assert status_of(state) is ONLINE
    clock.advance(0.2)
    state.expire()
    assert status_of(state) is UNHEALTHY


def test_registering_again_renews_the_lease(state: RegistryState, clock: FakeClock) -> None:
    state.register(request())
    clock.advance(5)
    state.expire()
    assert state.register(request()).status == 200
    assert status_of(state) is ONLINE


def test_heartbeat_for_an_unknown_instance_is_404_so_the_client_registers_again(
    state: RegistryState,
) -> None:
    error = fails_with(404, state.heartbeat, lease())
    assert error.code == ErrorCode.INSTANCE_NOT_FOUND
    assert "register it again" in error.message


def test_another_session_cannot_renew_or_deregister_an_instance(state: RegistryState) -> None:
    state.register(request(session=SESSION_A))
    assert fails_with(403, state.heartbeat, lease(session=SESSION_B)).code == ErrorCode.NOT_OWNER
    assert fails_with(403, state.deregister, lease(session=SESSION_B)).code == ErrorCode.NOT_OWNER
    assert status_of(state) is ONLINE


def test_an_anonymous_instance_cannot_be_renewed_by_anyone(state: RegistryState) -> None:
    state.register(request(session=None))
    fails_with(403, state.heartbeat, lease(session=SESSION_A))


def test_deregistration_takes_an_instance_offline_and_is_idempotent(
    state: RegistryState, clock: FakeClock
) -> None:
    state.register(request())
    assert state.deregister(lease()).status == 200
    assert status_of(state) is OFFLINE
    assert state.transitions[-1].reason == "deregistered"
    assert state.deregister(lease()).status == 200
    assert state.deregister(lease(instance="never-registered")).status == 200
    fails_with(404, state.heartbeat, lease())
    clock.advance(60)
    state.expire()
    fails_with(404, detail, state)


def test_an_offline_instance_id_can_be_claimed_by_a_new_session(
    state: RegistryState, clock: FakeClock
) -> None:
    state.register(request(session=SESSION_A))
    state.deregister(lease(session=SESSION_A))
    assert state.register(request(session=SESSION_B)).status == 201
    # The old tombstone's purge deadline must not remove the new instance.
    clock.advance(2.0)
    state.heartbeat(lease(session=SESSION_B))
    clock.advance(59.0)  # past the tombstone's purge time, before the new one's
    state.expire()
    assert status_of(state) is OFFLINE


def test_status_filters_apply_to_lists_and_details(state: RegistryState, clock: FakeClock) -> None:
    state.register(request(instance="quiet"))
    clock.advance(2)
    state.register(request(instance="alive"))
    clock.advance(1.5)
    state.expire()
    listing = state.list_services(ListServicesRequest(status=UNHEALTHY))
    assert listing.services[0].instance_count == 1
    assert listing.services[0].status_counts == {ONLINE: 1, UNHEALTHY: 1}
    assert state.list_services(ListServicesRequest(status=OFFLINE)).total == 0
    online = detail(state, status=ONLINE)
    assert [i.instance_id for i in online.instances] == ["alive"]
    assert detail(state, status=OFFLINE).instances == []


def test_heartbeats_do_not_grow_the_deadline_heap(state: RegistryState, clock: FakeClock) -> None:
    for n in range(100):
        state.register(request(instance=f"i{n}"))
    for _ in range(50):
        clock.advance(1.0)
        for n in range(100):
            state.heartbeat(lease(instance=f"i{n}"))
        state.expire()
    assert len(state._deadlines) == 100


def test_expiry_touches_only_what_is_due(state: RegistryState, clock: FakeClock) -> None:
    for n in range(1000):
        state.register(request(instance=f"i{n}"))
        clock.advance(0.001)
    earliest = state.next_deadline()
    assert earliest is not None
    clock.now = earliest
    state.expire()
    assert [t.new for t in state.transitions if t.old is not None] == [UNHEALTHY]
    assert len(state._deadlines) == 1000


# -- the actor ----------------------------------------------------------------------


class EventSink(Actor):
    """Stands in for the NATS gateway: collects the registry's event batches."""

    def __init__(self) -> None:
        super().__init__("events")
        self.events: list[RegistryEvent] = []
        self.changed = asyncio.Event()

    async def handle(self, message: Any) -> None:
        assert isinstance(message, EventBatch)
        self.events.extend(message.events)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[list[RegistryEvent]], bool]) -> None:
        while not predicate(self.events):
            self.changed.clear()
            await self.changed.wait()


@pytest.fixture
async def sink() -> AsyncIterator[EventSink]:
    sink = EventSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


@pytest.fixture
async def registry(sink: EventSink) -> AsyncIterator[RegistryClient]:
    actor = RegistryActor(
        policy=LeasePolicy(heartbeat_interval=0.02, lease_ttl=0.06, offline_after=0.06),
        events=sink.ref,
    )
    await actor.start()
    try:
        yield RegistryClient(actor.ref)
    finally:
        await actor.stop()


async def test_actor_serves_register_heartbeat_list_get_and_deregister(registry: RegistryClient) -> None:
    reply = await registry.register(request(metadata={"zone": "a"}))
    assert reply.status == 201
    assert (await registry.heartbeat(lease())).status == 200
    assert (await registry.list_services()).total == 1
    found = await registry.get_service("orders")
    assert [i.instance_id for i in found.instances] == ["orders-1"]
    assert (await registry.deregister(lease())).status == 200
    offline = await registry.get_service(GetServiceRequest(service_name="orders", status=OFFLINE))
    assert offline.instances[0].instance_id == "orders-1"


async def test_actor_returns_conflict_to_the_caller_and_keeps_running(registry: RegistryClient) -> None:
    await registry.register(request(session=SESSION_A))
    with pytest.raises(ProtocolError):
        await registry.register(request(session=SESSION_B))
    assert registry.alive
    assert (await registry.list_services()).total == 1


async def test_actor_timer_expires_leases_without_any_other_message(
    registry: RegistryClient, sink: EventSink
) -> None:
    await registry.register(request())
    await asyncio.wait_for(sink.wait_for(lambda e: e[-1].instance.status is OFFLINE), 5)
    assert [e.type for e in sink.events] == [
        EventType.REGISTERED,
        EventType.UNHEALTHY,
        EventType.EXPIRED,
    ]


async def test_concurrent_claims_of_one_instance_create_it_exactly_once(registry: RegistryClient) -> None:
    sessions = [f"session-{i:04d}-abcdefghijkl" for i in range(200)]
    results = await asyncio.gather(
        *(registry.register(request(session=session)) for session in sessions),
        return_exceptions=True,
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, ProtocolError) and r.status == 409]
    assert len(created) == 1
    assert len(conflicts) == 199


async def test_unknown_message_crashes_the_actor(registry: RegistryClient) -> None:
    with pytest.raises(TypeError):
        await registry.ref.ask(object())
    assert not registry.alive


async def test_a_steady_stream_of_messages_does_not_starve_the_lease_timer() -> None:
    """Every message used to re-arm the timer 50 ms ahead once a deadline was near,
    so with traffic every 10 ms nothing ever expired."""
    actor = RegistryActor(policy=LeasePolicy(heartbeat_interval=0.05, lease_ttl=0.15))
    await actor.start()
    ref = RegistryClient(actor.ref)
    try:
        await ref.register(request(session=None))  # anonymous: never renewed

        async def unhealthy() -> bool:
            detail = await ref.get_service("orders")
            return detail.instances[0].status is UNHEALTHY

        # The checks themselves, every 10 ms, are the steady stream.
        await eventually(unhealthy, timeout=5, interval=0.01, what="the lease to run out")
    finally:
        await actor.stop()


def test_pages_end_early_to_stay_within_a_byte_budget(state: RegistryState) -> None:
    for n in range(50):
        state.register(request(instance=f"i{n:02d}", metadata={"blob": "x" * 1000}))
    page = state.get_service(
        GetServiceRequest(service_name="orders", status=None, limit=1000), max_bytes=10_000
    )
    assert 1 <= len(page.instances) < 10
    assert page.next_cursor is not None
    assert len(encode_msgpack(page)) <= 10_000 + 1024
    seen = [i.instance_id for i in page.instances]
    while page.next_cursor:
        page = state.get_service(
            GetServiceRequest(service_name="orders", status=None, limit=1000, cursor=page.next_cursor),
            max_bytes=10_000,
        )
        seen += [i.instance_id for i in page.instances]
    assert seen == [f"i{n:02d}" for n in range(50)]


def test_counts_and_order_stay_right_through_every_transition(
    state: RegistryState, clock: FakeClock
) -> None:
    state.register(request(instance="b"))
    state.list_services()
    detail(state)  # build the cached indexes, so that later changes must maintain them
    state.register(request(instance="a"))
    state.register(request(instance="c", session=SESSION_B))
    clock.advance(1)
    state.heartbeat(lease(instance="a"))
    state.deregister(lease(instance="c", session=SESSION_B))
    clock.advance(2.5)
    state.expire()  # b: UNHEALTHY
    assert [i.instance_id for i in detail(state).instances] == ["a", "b", "c"]
    assert state.list_services().services[0].status_counts == {ONLINE: 1, UNHEALTHY: 1, OFFLINE: 1}
    state.register(request(instance="c"))  # the OFFLINE id taken over by a new session
    assert state.list_services().services[0].status_counts == {ONLINE: 2, UNHEALTHY: 1}
    clock.advance(1000)
    state.expire()
    fails_with(404, detail, state)
    assert state.list_services().total == 0
    state.register(request(instance="z", service="orders"))
    assert [i.instance_id for i in detail(state).instances] == ["z"]


def test_a_service_that_empties_keeps_its_revision_chain(state: RegistryState, clock: FakeClock) -> None:
    state.register(request(instance="a"))
    state.deregister(lease(instance="a"))
    clock.advance(100)
    state.expire()
    last = state.transitions[-1].event
    assert last.type is EventType.REMOVED
    state.transitions.clear()
    state.register(request(instance="b"))
    assert state.transitions[0].event.previous_revision == last.revision


def test_a_full_service_refuses_new_instances_with_507(clock: FakeClock) -> None:
    state = RegistryState(
        POLICY, limits=RegistryLimits(max_instances_per_service=2), clock=clock.monotonic, wall_clock=clock.wall
    )
    state.register(request(instance="a"))
    state.register(request(instance="b"))
    error = fails_with(507, state.register, request(instance="c"))
    assert error.code == ErrorCode.SERVICE_FULL
    assert error.details["limit"] == 2
    assert state.register(request(instance="a")).status == 200  # a repeat is no new instance
    assert state.register(request(service="payments", instance="c")).status == 201
    state.deregister(lease(instance="a"))  # OFFLINE instances do not count
    assert state.register(request(instance="c")).status == 201


def test_a_full_registry_refuses_new_instances_with_507(clock: FakeClock) -> None:
    state = RegistryState(
        POLICY, limits=RegistryLimits(max_instances=2), clock=clock.monotonic, wall_clock=clock.wall
    )
    state.register(request(service="x", instance="a"))
    state.register(request(service="y", instance="b"))
    error = fails_with(507, state.register, request(service="z", instance="c"))
    assert error.code == ErrorCode.REGISTRY_FULL
    clock.advance(POLICY.lease_ttl + POLICY.offline_after + 1)
    state.expire()  # both leases ran out: room again
    assert state.live == 0
    assert state.register(request(service="z", instance="c")).status == 201


def test_a_metadata_update_event_shows_the_instance_after_the_renewal(
    state: RegistryState, clock: FakeClock
) -> None:
    state.register(request(metadata={"v": 1}))
    clock.advance(5)
    state.expire()  # UNHEALTHY
    state.transitions.clear()
    reply = state.register(request(metadata={"v": 2}))
    [back, updated] = [t.event for t in state.transitions]
    assert (back.type, updated.type) == (EventType.ONLINE, EventType.METADATA_UPDATED)
    assert updated.instance.status is ONLINE and updated.instance.metadata == {"v": 2}
    assert updated.instance == reply.instance
    assert updated.instance.last_heartbeat == reply.instance.last_heartbeat


def test_a_string_filter_matches_numbers_by_their_json_text(state: RegistryState) -> None:
    state.register(request(instance="big", metadata={"n": 1e20, "flag": True, "none": None}))
    filters: list[dict[str, MetadataValue]] = [
        {"n": "1e20"}, {"flag": "true"}, {"none": "null"}, {"n": 1e20}
    ]
    for wanted in filters:
        page = state.get_service(GetServiceRequest(service_name="orders", metadata=wanted))
        assert [i.instance_id for i in page.instances] == ["big"], wanted
    page = state.get_service(GetServiceRequest(service_name="orders", metadata={"n": "1e+20"}))
    assert page.instances == []


def test_register_deregister_churn_cannot_pile_up_offline_records(clock: FakeClock) -> None:
    state = RegistryState(
        POLICY, limits=RegistryLimits(max_instances=10), clock=clock.monotonic, wall_clock=clock.wall
    )
    for n in range(100):
        state.register(request(instance=f"i{n}"))
        state.deregister(lease(instance=f"i{n}"))
    assert state.offline == 10
    assert len(detail(state).instances) == 10
    assert [i.instance_id for i in detail(state).instances] == [f"i{n}" for n in range(90, 100)]
    removed = [t for t in state.transitions if t.event.type is EventType.REMOVED]
    assert len(removed) == 90 and removed[0].reason.startswith("forgotten early")
    clock.advance(POLICY.offline_retention + 1)
    state.expire()
    assert state.offline == 0 and len(state._offline) == 0
    fails_with(404, detail, state)


def test_a_service_emptied_and_created_again_gets_a_new_stamp(state: RegistryState, clock: FakeClock) -> None:
    state.register(request(instance="old"))
    before = state.service_stamp("orders")
    state.deregister(lease(instance="old"))
    clock.advance(POLICY.offline_retention + 1)
    state.expire()
    state.register(request(instance="new"))
    assert state.service_stamp("orders") != before


def test_transitions_carry_the_record_to_store_only_when_asked(clock: FakeClock) -> None:
    kept = RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)
    in_memory = RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall, keep_stored=False)
    for state in (kept, in_memory):
        state.register(request(metadata={"zone": "a"}))
    [stored] = [change.stored for change in kept.take_transitions()]
    assert stored is not None
    assert (stored.instance_id, stored.status, dict(stored.metadata)) == ("orders-1", ONLINE, {"zone": "a"})
    assert [change.stored for change in in_memory.take_transitions()] == [None]


def test_expiry_applies_at_most_its_limit_and_says_when_more_is_due(
    state: RegistryState, clock: FakeClock
) -> None:
    """A mass expiry is spread over drains (issue 15, fault 7): each bounded, so that
    none keeps the event loop, and the leader's renewals, waiting."""
    for n in range(10):
        state.register(request(instance=f"orders-{n}"))
    state.take_transitions()
    clock.advance(POLICY.lease_ttl + 0.1)
    assert state.expire(limit=4) is True
    assert len(state.take_transitions()) == 4
    assert state.expire(limit=4) is True
    assert state.expire(limit=4) is False
    assert len(state.take_transitions()) == 6
    assert state.instances_in[UNHEALTHY] == 10


def test_leases_granted_at_a_takeover_end_spread_over_half_a_lease(clock: FakeClock) -> None:
    """Not all at one moment: a fleet whose services are all gone expires over half a
    lease after a new leader takes over, not in one drain."""
    leader = RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)
    for n in range(100):
        leader.register(request(instance=f"orders-{n:03d}"))
    granted_at = clock.now
    leader.grant_leases()
    deadlines = sorted(entry[0] for entry in leader._deadlines)
    assert deadlines[0] > granted_at + POLICY.lease_ttl
    assert deadlines[-1] <= granted_at + POLICY.lease_ttl * 1.5 + 1e-9
    assert len(set(deadlines)) == 100
    clock.advance(POLICY.lease_ttl + POLICY.lease_ttl / 4)
    leader.expire()
    assert 40 <= leader.instances_in[UNHEALTHY] <= 60  # about half, by then
