"""Registry state transitions and the RegistryActor's message interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.registry import RegistryActor, RegistryState, get_service, list_services, register
from actors.supervisor import ActorRef
from protocol import (
    ErrorCode,
    InstanceStatus,
    ProtocolError,
    RegisterRequest,
    encode_json,
    encode_msgpack,
)

pytestmark = pytest.mark.timeout(10)

SESSION_A = "session-a-0123456789"
SESSION_B = "session-b-0123456789"


def request(
    service: str = "orders",
    instance: str = "orders-1",
    session: str | None = SESSION_A,
    metadata: dict[str, object] | None = None,
) -> RegisterRequest:
    return RegisterRequest(
        service_name=service, instance_id=instance, session_id=session, metadata=metadata or {}
    )


def test_first_registration_creates_an_online_instance() -> None:
    state = RegistryState()
    outcome = state.register(request(metadata={"zone": "a"}))
    assert outcome.created
    assert outcome.status == 201
    assert outcome.instance.status is InstanceStatus.ONLINE
    assert outcome.instance.metadata == {"zone": "a"}
    assert outcome.instance.registered_at.tzinfo is not None


def test_same_session_repeating_gets_the_same_record_back_and_nothing_duplicates() -> None:
    state = RegistryState()
    first = state.register(request())
    again = state.register(request())
    assert not again.created
    assert again.status == 200
    assert again.instance == first.instance
    assert state.get_service("orders").instances == [first.instance]


def test_same_session_with_new_metadata_updates_it_and_keeps_registered_at() -> None:
    state = RegistryState()
    first = state.register(request(metadata={"v": 1}))
    again = state.register(request(metadata={"v": 2}))
    assert again.instance.metadata == {"v": 2}
    assert again.instance.registered_at == first.instance.registered_at
    assert state.get_service("orders").instances[0].metadata == {"v": 2}


def test_second_session_claiming_live_instance_gets_conflict_with_existing() -> None:
    state = RegistryState()
    first = state.register(request(session=SESSION_A))
    with pytest.raises(ProtocolError) as caught:
        state.register(request(session=SESSION_B))
    assert caught.value.status == 409
    assert caught.value.code == ErrorCode.INSTANCE_CONFLICT
    assert caught.value.details["existing"] == first.instance
    assert state.get_service("orders").instances == [first.instance]


def test_anonymous_registration_cannot_claim_or_repeat_an_instance() -> None:
    state = RegistryState()
    state.register(request(session=None))
    for session in (None, SESSION_A):
        with pytest.raises(ProtocolError) as caught:
            state.register(request(session=session))
        assert caught.value.status == 409


def test_anonymous_registration_conflicts_with_a_session_owned_instance() -> None:
    state = RegistryState()
    state.register(request(session=SESSION_A))
    with pytest.raises(ProtocolError):
        state.register(request(session=None))


def test_same_instance_id_in_different_services_is_not_a_conflict() -> None:
    state = RegistryState()
    state.register(request(service="orders", session=SESSION_A))
    assert state.register(request(service="payments", session=SESSION_B)).created


def test_list_services_counts_instances_sorted_by_name() -> None:
    state = RegistryState()
    for service, instance in [("payments", "p1"), ("orders", "o1"), ("orders", "o2")]:
        state.register(request(service=service, instance=instance))
    listing = state.list_services()
    assert listing.total == 2
    assert [s.service_name for s in listing.services] == ["orders", "payments"]
    assert listing.services[0].instance_count == 2
    assert listing.services[0].status_counts == {InstanceStatus.ONLINE: 2}


def test_empty_registry_lists_nothing() -> None:
    assert RegistryState().list_services().total == 0


def test_unknown_service_is_not_found() -> None:
    state = RegistryState()
    state.register(request())
    with pytest.raises(ProtocolError) as caught:
        state.get_service("payments")
    assert caught.value.status == 404
    assert caught.value.code == ErrorCode.SERVICE_NOT_FOUND


def test_failed_registration_does_not_leave_an_empty_service_listed() -> None:
    state = RegistryState()
    state.register(request())
    with pytest.raises(ProtocolError):
        state.register(request(session=SESSION_B))
    assert state.list_services().total == 1


def test_session_id_never_appears_in_any_output() -> None:
    state = RegistryState()
    outcome = state.register(request(session=SESSION_A))
    with pytest.raises(ProtocolError) as caught:
        state.register(request(session=SESSION_B))
    outputs = [
        outcome.instance,
        caught.value.details,
        state.list_services(),
        state.get_service("orders"),
    ]
    for output in outputs:
        for encoded in (encode_json(output), encode_msgpack(output)):
            assert SESSION_A.encode() not in encoded
            assert SESSION_B.encode() not in encoded


@pytest.fixture
async def registry() -> AsyncIterator[ActorRef]:
    actor = RegistryActor()
    await actor.start()
    ref = ActorRef("registry")
    ref.actor = actor
    try:
        yield ref
    finally:
        await actor.stop()


async def test_actor_serves_register_list_and_get(registry: ActorRef) -> None:
    outcome = await register(registry, request(metadata={"zone": "a"}))
    assert outcome.created
    assert (await list_services(registry)).total == 1
    detail = await get_service(registry, "orders")
    assert detail.instances == [outcome.instance]


async def test_actor_returns_conflict_to_the_caller_and_keeps_running(registry: ActorRef) -> None:
    await register(registry, request(session=SESSION_A))
    with pytest.raises(ProtocolError):
        await register(registry, request(session=SESSION_B))
    assert registry.alive
    assert (await list_services(registry)).total == 1


async def test_concurrent_claims_of_one_instance_create_it_exactly_once(registry: ActorRef) -> None:
    sessions = [f"session-{i:04d}-abcdefghijkl" for i in range(200)]
    results = await asyncio.gather(
        *(register(registry, request(session=session)) for session in sessions),
        return_exceptions=True,
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, ProtocolError) and r.status == 409]
    assert len(created) == 1
    assert len(conflicts) == 199


async def test_unknown_message_crashes_the_actor(registry: ActorRef) -> None:
    with pytest.raises(TypeError):
        await registry.ask(object())
    assert not registry.alive
