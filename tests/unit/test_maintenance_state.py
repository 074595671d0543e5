"""Maintenance and an operator's deregistration, in the pure `RegistryState`.

Maintenance is a flag with a reason, a time and who set it, not a fourth status: an
instance in maintenance stays ONLINE (or UNHEALTHY) and renews its lease, but the
ONLINE view (what discovery reads) leaves it out.
"""

from __future__ import annotations

import random

import pytest

from actors.registry_state import RegistryState
from protocol import (
    OWNER,
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
)
from tests.support.clock import FakeClock

pytestmark = pytest.mark.timeout(30)

SESSION = "session-a-0123456789"
OTHER = "session-b-0123456789"
POLICY = LeasePolicy(heartbeat_interval=1.0, lease_ttl=3.0, offline_after=30.0, offline_retention=60.0)
ONLINE, UNHEALTHY, OFFLINE = InstanceStatus.ONLINE, InstanceStatus.UNHEALTHY, InstanceStatus.OFFLINE


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> RegistryState:
    return RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)


def register(state: RegistryState, instance: str = "orders-1", session: str = SESSION) -> None:
    state.register(RegisterRequest(service_name="orders", instance_id=instance, session_id=session))


def lease(instance: str = "orders-1", session: str = SESSION) -> LeaseRequest:
    return LeaseRequest(service_name="orders", instance_id=instance, session_id=session)


def ids(state: RegistryState, **query: object) -> list[str]:
    request = GetServiceRequest(service_name="orders", limit=1000, **query)  # type: ignore[arg-type]
    return [i.instance_id for i in state.get_service(request, missing_ok=True).instances]


def events(state: RegistryState) -> list[RegistryEvent]:
    return [change.event for change in state.take_transitions()]


def refused(call: object, *args: object, **kwargs: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def test_an_instance_in_maintenance_is_left_out_of_the_online_view_only(
    state: RegistryState, clock: FakeClock
) -> None:
    register(state, "orders-1")
    register(state, "orders-2")
    events(state)
    reply = state.set_maintenance("orders", "orders-1", True, reason="deploying 1.4.3", by=OWNER,
                                  session_id=SESSION)  # fmt: skip
    assert reply.instance is not None and reply.instance.status is ONLINE
    maintenance = reply.instance.maintenance
    assert maintenance is not None
    assert (maintenance.by, maintenance.reason) == (OWNER, "deploying 1.4.3")
    assert maintenance.since.timestamp() == pytest.approx(clock.wall())
    [event] = events(state)
    assert (event.type, event.reason) == (EventType.MAINTENANCE_ON, "deploying 1.4.3")
    assert event.instance.maintenance == maintenance

    assert ids(state) == ["orders-2"]  # the ONLINE view: what discovery reads
    assert ids(state, status=None) == ["orders-1", "orders-2"]  # an admin's view
    assert ids(state, include_maintenance=True) == ["orders-1", "orders-2"]
    assert ids(state, status=None, include_maintenance=False) == ["orders-2"]
    [summary] = state.list_services(ListServicesRequest()).services
    assert summary.status_counts == {ONLINE: 2} and summary.in_maintenance == 1
    assert state.drained_in == {ONLINE: 1}


def test_leaving_maintenance_puts_it_back_and_a_change_that_changes_nothing_is_quiet(
    state: RegistryState, clock: FakeClock
) -> None:
    register(state)
    events(state)
    state.set_maintenance("orders", "orders-1", True, reason="a", by=OWNER, session_id=SESSION)
    [entered] = state.get_service(GetServiceRequest(service_name="orders", status=None)).instances
    assert entered.maintenance is not None
    state.set_maintenance("orders", "orders-1", True, reason="a", by=OWNER, session_id=SESSION)
    assert [e.type for e in events(state)] == [EventType.MAINTENANCE_ON]
    clock.advance(5)
    reply = state.set_maintenance("orders", "orders-1", True, reason="b", by=OWNER, session_id=SESSION)
    assert reply.instance is not None and reply.instance.maintenance is not None
    assert reply.instance.maintenance.reason == "b"
    assert reply.instance.maintenance.since == entered.maintenance.since
    [changed] = events(state)
    assert (changed.type, changed.reason) == (EventType.MAINTENANCE_ON, "b")

    reply = state.set_maintenance("orders", "orders-1", False, by=OWNER, session_id=SESSION)
    assert reply.instance is not None and reply.instance.maintenance is None
    assert [e.type for e in events(state)] == [EventType.MAINTENANCE_OFF]
    assert ids(state) == ["orders-1"]
    state.set_maintenance("orders", "orders-1", False, by=OWNER, session_id=SESSION)
    assert events(state) == []
    assert state.drained_in.get(ONLINE, 0) == 0


def test_only_the_owner_or_an_operator_may_change_it(state: RegistryState) -> None:
    register(state)
    error = refused(state.set_maintenance, "orders", "orders-1", True, by=OWNER, session_id=OTHER)
    assert (error.status, error.code) == (403, ErrorCode.NOT_OWNER)
    error = refused(state.set_maintenance, "orders", "nobody", True, by=OWNER, session_id=SESSION)
    assert (error.status, error.code) == (404, ErrorCode.INSTANCE_NOT_FOUND)
    error = refused(state.set_maintenance, "orders", "nobody", True, by="admin")
    assert (error.status, error.code) == (404, ErrorCode.INSTANCE_NOT_FOUND)


def test_an_operators_maintenance_is_ended_by_an_operator_only(state: RegistryState) -> None:
    register(state)
    state.set_maintenance("orders", "orders-1", True, reason="investigating", by="admin")
    # The owner asking for maintenance changes nothing (it is in maintenance already) ...
    reply = state.set_maintenance("orders", "orders-1", True, reason="deploy", by=OWNER, session_id=SESSION)
    assert reply.instance is not None and reply.instance.maintenance is not None
    assert (reply.instance.maintenance.by, reply.instance.maintenance.reason) == ("admin", "investigating")
    # ... and it may not end it.
    error = refused(state.set_maintenance, "orders", "orders-1", False, by=OWNER, session_id=SESSION)
    assert (error.status, error.code) == (403, ErrorCode.MAINTENANCE_HELD)
    state.set_maintenance("orders", "orders-1", False, by="admin")
    assert ids(state) == ["orders-1"]


def test_maintenance_outlives_heartbeats_and_lease_changes_but_not_going_offline(
    state: RegistryState, clock: FakeClock
) -> None:
    register(state)
    state.set_maintenance("orders", "orders-1", True, reason="drain", by=OWNER, session_id=SESSION)
    state.heartbeat(lease())
    clock.advance(POLICY.lease_ttl + 0.1)
    state.expire()
    assert state.drained_in == {ONLINE: 0, UNHEALTHY: 1}
    state.heartbeat(lease())  # back ONLINE, still in maintenance
    assert state.drained_in.get(ONLINE) == 1 and ids(state) == []
    state.deregister(lease())
    assert sum(state.drained_in.values()) == 0
    [offline] = state.get_service(GetServiceRequest(service_name="orders", status=OFFLINE)).instances
    assert offline.maintenance is None
    [summary] = state.list_services().services
    assert summary.in_maintenance == 0


def test_an_operators_hold_outlives_a_restart_of_the_service_and_the_owners_does_not(
    state: RegistryState, clock: FakeClock
) -> None:
    register(state, "orders-1")
    register(state, "orders-2")
    state.set_maintenance("orders", "orders-1", True, reason="bad disk", by="admin")
    state.set_maintenance("orders", "orders-2", True, reason="deploy", by=OWNER, session_id=SESSION)
    clock.advance(POLICY.lease_ttl + 0.1)
    state.expire()  # both UNHEALTHY: their process died; it restarts with a new session
    register(state, "orders-1", session=OTHER)
    register(state, "orders-2", session=OTHER)
    views = {i.instance_id: i for i in state.get_service(GetServiceRequest(service_name="orders", status=None)).instances}
    held = views["orders-1"].maintenance
    assert held is not None and (held.by, held.reason) == ("admin", "bad disk")
    assert views["orders-2"].maintenance is None
    assert ids(state) == ["orders-2"]
    assert state.drained_in.get(ONLINE) == 1 and state.drained_in.get(UNHEALTHY, 0) == 0


def test_an_operators_deregistration_is_told_to_the_owner_and_not_undone_by_it(
    state: RegistryState,
) -> None:
    register(state)
    state.set_maintenance("orders", "orders-1", True, reason="x", by=OWNER, session_id=SESSION)
    events(state)
    reply = state.remove("orders", "orders-1", by="admin")
    assert reply.instance is not None and reply.instance.status is OFFLINE
    [event] = events(state)
    assert (event.type, event.reason) == (EventType.DEREGISTERED, "admin")
    assert sum(state.drained_in.values()) == 0

    error = refused(state.heartbeat, lease())
    assert (error.status, error.code) == (404, ErrorCode.INSTANCE_REMOVED)
    assert error.details["removed_by"] == "admin"
    assert state.deregister(lease()).status == 200  # the owner leaving: fine
    assert state.remove("orders", "orders-1", by="admin").status == 200  # idempotent
    assert events(state) == []
    error = refused(state.remove, "orders", "nobody", by="admin")
    assert (error.status, error.code) == (404, ErrorCode.INSTANCE_NOT_FOUND)

    register(state)  # registering again explicitly brings it back
    assert ids(state) == ["orders-1"]
    state.heartbeat(lease())


def test_the_stored_records_carry_maintenance_and_removal_to_another_router(
    state: RegistryState, clock: FakeClock
) -> None:
    """What a standby (or the next leader) rebuilds from the stream is the same."""
    register(state, "orders-1")
    register(state, "orders-2")
    register(state, "orders-3")
    state.set_maintenance("orders", "orders-1", True, reason="drain", by=OWNER, session_id=SESSION)
    state.set_maintenance("orders", "orders-2", True, reason="hold", by="admin")
    state.remove("orders", "orders-3", by="admin")
    follower = RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)
    for change in state.take_transitions():
        key = (change.service_name, change.instance_id)
        follower.apply(change.event.revision, key, change.stored)
    every = GetServiceRequest(service_name="orders", status=None, limit=1000)
    assert follower.get_service(every).instances == state.get_service(every).instances
    assert follower.drained_in == state.drained_in
    follower.grant_leases()
    error = refused(follower.heartbeat, lease("orders-3"))
    assert error.code == ErrorCode.INSTANCE_REMOVED
    error = refused(follower.set_maintenance, "orders", "orders-2", False, by=OWNER, session_id=SESSION)
    assert error.code == ErrorCode.MAINTENANCE_HELD


def test_the_maintenance_counts_always_match_the_records(clock: FakeClock) -> None:
    """Random operations (seeded): after each, the counts equal a recount."""
    rng = random.Random(17)
    state = RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)
    names = [f"orders-{n}" for n in range(6)]
    sessions = [SESSION, OTHER]
    for _ in range(3000):
        name, session = rng.choice(names), rng.choice(sessions)
        action = rng.randrange(8)
        try:
            if action == 0:
                register(state, name, session)
            elif action == 1:
                state.heartbeat(lease(name, session))
            elif action == 2:
                state.deregister(lease(name, session))
            elif action == 3:
                state.set_maintenance("orders", name, rng.random() < 0.6, reason=rng.choice("ab"),
                                      by=OWNER, session_id=session)  # fmt: skip
            elif action == 4:
                state.set_maintenance("orders", name, rng.random() < 0.6, by="admin")
            elif action == 5:
                state.remove("orders", name, by="admin")
            else:
                clock.advance(rng.choice([0.5, 2.0, 4.0, 40.0]))
                state.expire()
        except ProtocolError:
            pass
        views = state.get_service(GetServiceRequest(service_name="orders", status=None, limit=1000),
                                  missing_ok=True).instances  # fmt: skip
        recount: dict[InstanceStatus, int] = {}
        for view in views:
            assert view.maintenance is None or view.status is not OFFLINE
            if view.maintenance is not None:
                recount[view.status] = recount.get(view.status, 0) + 1
        assert {k: v for k, v in state.drained_in.items() if v} == recount
        summaries = state.list_services().services
        assert sum(s.in_maintenance for s in summaries) == sum(recount.values())
        assert ids(state) == sorted(v.instance_id for v in views if v.status is ONLINE and v.maintenance is None)


def test_service_counts_show_the_first_services_by_name_and_sum_the_rest(
    state: RegistryState,
) -> None:
    for service, count in (("delta", 1), ("alpha", 2), ("charlie", 3), ("bravo", 1)):
        for n in range(count):
            state.register(RegisterRequest(service_name=service, instance_id=f"i{n}", session_id=SESSION))
    state.set_maintenance("charlie", "i0", True, by="admin")
    state.set_maintenance("alpha", "i1", True, by="admin")
    shown, other, folded = state.service_counts(2)
    assert shown == [("alpha", {ONLINE: 2}, {ONLINE: 1}), ("bravo", {ONLINE: 1}, {})]
    assert other == ({ONLINE: 4}, {ONLINE: 1}) and folded == 2
    shown, other, folded = state.service_counts(10)
    assert [name for name, _, _ in shown] == ["alpha", "bravo", "charlie", "delta"]
    assert other is None and folded == 0
