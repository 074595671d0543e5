"""What docs/protocol.md says the registry does, pinned: each test names the section
it holds to its word. They drive `RegistryState` directly, with a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from actors.registry_state import SCAN_BUDGET, RegistryState
from protocol import (
    EventType,
    GetServiceRequest,
    InstanceStatus,
    LeasePolicy,
    LeaseRequest,
    ListServicesRequest,
    ProtocolError,
    RegisterRequest,
    RegistryEvent,
    decode_register_request,
    encode_json,
    encode_msgpack,
)
from protocol.models import Health, RegistryLimits
from tests.support.clock import FakeClock

pytestmark = pytest.mark.timeout(10)

SESSION = "documented-session-0001"
OTHER_SESSION = "documented-session-0002"
POLICY = LeasePolicy(heartbeat_interval=1.0, lease_ttl=3.0, offline_after=30.0, offline_retention=60.0)
ONLINE, UNHEALTHY = InstanceStatus.ONLINE, InstanceStatus.UNHEALTHY


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall_base=1_795_680_000.0)


@pytest.fixture
def state(clock: FakeClock) -> RegistryState:
    return RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)


def register(
    state: RegistryState, metadata: dict[str, object], *, session: str = SESSION, instance: str = "orders-1"
) -> int:
    reply = state.register(
        RegisterRequest(service_name="orders", instance_id=instance, metadata=metadata, session_id=session)
    )
    return reply.status


def events(state: RegistryState) -> list[RegistryEvent]:
    return [change.event for change in state.take_transitions()]


def at(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock.wall(), UTC)


def test_8_1_a_repeat_with_new_metadata_of_an_unhealthy_instance_is_online_then_metadata_updated(
    state: RegistryState, clock: FakeClock
) -> None:
    """Section 8.1 and 11.7: two events, `online` first, each showing the instance after
    the whole registration (new metadata, renewed lease)."""
    register(state, {"version": "1.4.2"})
    clock.advance(POLICY.lease_ttl + 0.5)
    state.expire()
    assert [e.type for e in events(state)] == [EventType.REGISTERED, EventType.UNHEALTHY]
    clock.advance(1.0)
    renewed = at(clock)

    assert register(state, {"version": "1.5.0"}) == 200
    online, updated = events(state)

    assert (online.type, updated.type) == (EventType.ONLINE, EventType.METADATA_UPDATED)
    assert updated.previous_revision == online.revision == updated.revision - 1
    for event in (online, updated):
        assert event.instance.status is ONLINE
        assert event.instance.metadata == {"version": "1.5.0"}
        assert event.instance.last_heartbeat == renewed  # not the pre-renewal value
        assert event.instance.lease_expires_at == renewed + timedelta(seconds=POLICY.lease_ttl)


def test_8_1_a_repeat_with_new_metadata_of_an_online_instance_shows_the_renewed_lease(
    state: RegistryState, clock: FakeClock
) -> None:
    register(state, {"version": "1.4.2"})
    events(state)
    clock.advance(0.25)
    assert register(state, {"version": "1.5.0"}) == 200
    [updated] = events(state)
    assert updated.type is EventType.METADATA_UPDATED
    assert updated.instance.last_heartbeat == at(clock)


def test_8_1_a_new_client_takes_over_an_unhealthy_instance_and_the_event_says_replaced(
    state: RegistryState, clock: FakeClock
) -> None:
    """Sections 3.1 and 8.1: 201 and `replaced` for an UNHEALTHY holder; 409 for an
    ONLINE one; the old holder's heartbeat is then refused (403)."""
    register(state, {"v": 1})
    with pytest.raises(ProtocolError) as conflict:  # ONLINE: still held
        register(state, {"v": 2}, session=OTHER_SESSION)
    assert conflict.value.status == 409
    clock.advance(POLICY.lease_ttl + 0.5)
    state.expire()
    events(state)

    assert register(state, {"v": 2}, session=OTHER_SESSION) == 201
    [replaced] = events(state)
    assert replaced.type is EventType.REPLACED
    assert replaced.instance.status is ONLINE and replaced.instance.metadata == {"v": 2}
    with pytest.raises(ProtocolError) as refused:
        state.heartbeat(LeaseRequest(service_name="orders", instance_id="orders-1", session_id=SESSION))
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("text", "found"),
    [("1e20", True), ("1e+20", False), ("100000000000000000000.0", False)],
)
def test_7_2_a_float_is_found_by_its_json_text(state: RegistryState, text: str, found: bool) -> None:
    """Section 7.2 (and 13.1): the text of a float is its JSON text, as the admin API
    writes it: 1e20 is found by "1e20", not by Python's repr "1e+20"."""
    register(state, {"big": 1e20})
    assert encode_json({"big": 1e20}) == b'{"big":1e20}'
    page = state.get_service(GetServiceRequest(service_name="orders", metadata={"big": text}))
    assert [i.instance_id for i in page.instances] == (["orders-1"] if found else [])


@pytest.mark.parametrize(
    ("value", "texts"),
    [(3, ["3"]), (3.0, ["3.0"]), (0.5, ["0.5"]), (True, ["true"]), (None, ["null"])],
)
def test_7_2_strings_find_numbers_bools_and_nil_by_their_text(
    state: RegistryState, value: object, texts: list[str]
) -> None:
    register(state, {"k": value})
    for text in texts:
        page = state.get_service(GetServiceRequest(service_name="orders", metadata={"k": text}))
        assert len(page.instances) == 1, text
    assert not state.get_service(GetServiceRequest(service_name="orders", metadata={"k": "3.00"})).instances


def test_7_3_a_page_looks_at_a_bounded_number_of_entries_and_may_be_empty_with_a_cursor(
    state: RegistryState,
) -> None:
    """Section 7.3: a selective filter may give pages with fewer than `limit` entries,
    even none, that still carry a `next_cursor`; reading on finds the rest."""
    for n in range(SCAN_BUDGET + 10):
        register(state, {"zone": "b" if n < SCAN_BUDGET else "a"}, instance=f"i-{n:05d}")
    first = state.get_service(GetServiceRequest(service_name="orders", metadata={"zone": "a"}))
    assert first.instances == [] and first.next_cursor is not None
    second = state.get_service(
        GetServiceRequest(service_name="orders", metadata={"zone": "a"}, cursor=first.next_cursor)
    )
    assert len(second.instances) == 10 and second.next_cursor is None


@pytest.mark.parametrize("tamper", ["flip", "forge", "foreign"])
def test_7_3_a_cursor_not_made_by_this_registry_is_a_400(
    state: RegistryState, clock: FakeClock, tamper: str
) -> None:
    for n in range(3):
        register(state, {}, instance=f"i-{n}")
    cursor = state.get_service(GetServiceRequest(service_name="orders", limit=1)).next_cursor
    assert cursor is not None
    if tamper == "flip":
        cursor = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")
    elif tamper == "forge":
        cursor = "AmktMQ"  # version byte + "i-1", unsigned
    else:  # a genuine cursor, from another registry (another secret)
        other = RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)
        for n in range(3):
            other.register(RegisterRequest(service_name="orders", instance_id=f"i-{n}", session_id=SESSION))
        cursor = other.get_service(GetServiceRequest(service_name="orders", limit=1)).next_cursor or ""
    with pytest.raises(ProtocolError) as refused:
        state.get_service(GetServiceRequest(service_name="orders", cursor=cursor))
    assert refused.value.status == 400 and refused.value.details == {"field": "$.cursor"}
    with pytest.raises(ProtocolError):
        state.list_services(ListServicesRequest(cursor=cursor))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_2_3_a_timestamp_must_be_finite(value: float) -> None:
    """Section 2.3: NaN and infinite timestamps are refused, 400 at $.timestamp."""
    data = encode_msgpack({"service_name": "orders", "instance_id": "orders-1", "timestamp": value})
    with pytest.raises(ProtocolError) as refused:
        decode_register_request(data)
    assert refused.value.status == 400 and refused.value.details == {"field": "$.timestamp"}


def test_13_5_healthz_has_role_and_revision_and_no_max_request_bytes() -> None:
    """Section 13.5: the fields of the body."""
    assert [f.name for f in msgspec.structs.fields(Health)] == [
        "status", "nats_connected", "registry_running", "role", "revision", "lease_policy", "limits",
        "phase", "phase_reason", "not_serving_queries", "skipped_records",
    ]  # fmt: skip
    assert [f.name for f in msgspec.structs.fields(RegistryLimits)] == [
        "max_instances", "max_instances_per_service", "max_metadata_bytes",
    ]  # fmt: skip
