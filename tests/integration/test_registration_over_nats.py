"""Registration over real NATS: the SDK, a foreign msgpack client, and failures."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from actors.actor import Envelope, Lane
from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from protocol import METADATA_MAX_BYTES, REGISTER_SUBJECT
from sdk import (
    Backoff,
    ConflictError,
    InstanceStatus,
    InvalidRequestError,
    RegistryError,
    RouterTimeoutError,
    RouterUnavailableError,
    ServiceClient,
)
from tests.support.actors import gateway_stats, incarnation
from tests.support.nats_requests import nats_request
from tests.support.network import free_port

pytestmark = pytest.mark.timeout(30)

FAST = Backoff(initial=0.01, maximum=0.02)


async def listen(nc: NatsClient, subject: str) -> list[bytes]:
    """The payloads published on `subject` from now on, collected and left unanswered."""
    payloads: list[bytes] = []

    async def collect(msg: Msg) -> None:
        payloads.append(msg.data)

    await nc.subscribe(subject, cb=collect)
    await nc.flush()
    return payloads


async def test_sdk_registers_an_instance_and_gets_typed_info(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        info = await client.register("orders", "orders-1", {"zone": "a"})
    assert info.created
    assert info.service_name == "orders"
    assert info.instance_id == "orders-1"
    assert info.status is InstanceStatus.ONLINE
    assert info.metadata == {"zone": "a"}
    detail = await router.registry.get_service("orders")
    assert [i.instance_id for i in detail.instances] == ["orders-1"]


async def test_sdk_repeat_is_idempotent_and_reports_not_created(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        first = await client.register("orders", "orders-1")
        again = await client.register("orders", "orders-1")
    assert first.created and not again.created
    assert again.registered_at == first.registered_at


async def test_second_client_claiming_live_instance_gets_conflict_with_existing(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as owner, ServiceClient(nats_server.url) as other:
        registered = await owner.register("orders", "orders-1", {"zone": "a"})
        with pytest.raises(ConflictError) as caught:
            await other.register("orders", "orders-1")
    error = caught.value
    assert isinstance(error, RegistryError)
    assert error.status == 409
    assert error.code == "instance_conflict"
    assert error.existing is not None
    assert error.existing.instance_id == "orders-1"
    assert error.existing.metadata == {"zone": "a"}
    assert error.existing.registered_at == registered.registered_at


async def test_sdk_rejects_a_bad_name_before_sending(nats_server: NatsServerProcess) -> None:
    # No router runs: a round trip would fail with 503, so a 400 proves no request went out.
    async with ServiceClient(nats_server.url, retries=0) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.register("orders.eu", "orders-1")
    assert caught.value.status == 400
    assert caught.value.details["field"] == "$.service_name"


async def test_sdk_rejects_oversized_metadata(router: Router, nats_server: NatsServerProcess) -> None:
    async with ServiceClient(nats_server.url) as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.register("orders", "orders-1", {"blob": "x" * METADATA_MAX_BYTES})
    assert caught.value.code == "metadata_too_large"


async def test_no_router_means_503_after_retries(nats_server: NatsServerProcess) -> None:
    async with ServiceClient(nats_server.url, retries=2, backoff=FAST) as client:
        with pytest.raises(RouterUnavailableError) as caught:
            await client.register("orders", "orders-1")
    assert caught.value.status == 503
    assert caught.value.details["attempts"] == 3


async def test_silent_router_means_504_after_retries(
    nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    seen = await listen(nc, REGISTER_SUBJECT)
    async with ServiceClient(nats_server.url, timeout=0.2, retries=1, backoff=FAST) as client:
        with pytest.raises(RouterTimeoutError) as caught:
            await client.register("orders", "orders-1")
    assert caught.value.status == 504
    assert len(seen) == 2


async def test_sdk_raises_a_conflict_with_a_holder_that_keeps_renewing(
    router: Router, nats_server: NatsServerProcess, nc: NatsClient
) -> None:
    """The SDK asks once more, about one heartbeat later, in case the holder is a
    previous run that stopped renewing; this one renewed meanwhile: 409. (Its pause is
    one heartbeat interval: when the holder's renewal lands just after it, the SDK asks
    a third time, and then it has renewed.)"""
    requests = await listen(nc, REGISTER_SUBJECT)
    async with ServiceClient(nats_server.url) as owner, ServiceClient(nats_server.url) as other:
        await owner.register("orders", "orders-1")
        with pytest.raises(ConflictError):
            await other.register("orders", "orders-1")
        assert owner.registered == [("orders", "orders-1")]
    assert len(requests) in (3, 4)


async def test_sdk_retry_after_lost_reply_is_idempotent(
    router: Router, nats_server: NatsServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry is held on the first attempt until the SDK, having timed out,
    retries: the first attempt then creates the record (its reply goes nowhere) and
    the retry, with the same session, gets that record back instead of a conflict."""
    registry = incarnation(router.registry.ref)
    release = asyncio.Event()
    handled = 0
    told = 0
    original_handle = registry.handle_batch
    original_tell = registry.tell

    async def hold_first(batch: list[Envelope]) -> None:
        nonlocal handled
        handled += 1
        if handled == 1:
            await release.wait()
        await original_handle(batch)

    def release_on_retry(message: Any, reply: Any = None, *, lane: Lane = Lane.NORMAL) -> None:
        nonlocal told
        told += 1
        if told == 2:
            release.set()
        original_tell(message, reply, lane=lane)

    monkeypatch.setattr(registry, "handle_batch", hold_first)
    monkeypatch.setattr(registry, "tell", release_on_retry)
    async with ServiceClient(
        nats_server.url, timeout=0.3, retries=2, backoff=FAST, heartbeat=False
    ) as client:
        info = await client.register("orders", "orders-1")
        assert told == 2
        assert not info.created
        detail = await router.registry.get_service("orders")
        assert [i.instance_id for i in detail.instances] == ["orders-1"]


async def test_sdk_accepts_an_already_connected_client_and_leaves_it_open(
    router: Router, nc: NatsClient
) -> None:
    async with ServiceClient(nc=nc) as client:
        await client.register("orders", "orders-1")
    assert nc.is_connected


async def test_sdk_cannot_connect_is_503() -> None:
    client = ServiceClient(f"nats://127.0.0.1:{free_port()}", connect_timeout=0.5)
    with pytest.raises(RouterUnavailableError):
        await client.connect()


async def test_foreign_client_with_plain_msgpack_dict_registers(router: Router, nc: NatsClient) -> None:
    session = "foreign-session-0001"
    registration = {"service_name": "orders", "instance_id": "orders-1", "session_id": session}
    reply = await nats_request(nc, REGISTER_SUBJECT, {**registration, "metadata": {"zone": "a"}})
    assert reply["status"] == 201
    instance = reply["instance"]
    assert instance["service_name"] == "orders"
    assert instance["status"] == "ONLINE"
    assert instance["metadata"] == {"zone": "a"}
    assert "session_id" not in instance
    assert instance["registered_at"].tzinfo is not None
    again = await nats_request(nc, REGISTER_SUBJECT, registration)
    assert again["status"] == 200


async def test_foreign_client_conflict_reply_carries_the_existing_instance(
    router: Router, nc: NatsClient
) -> None:
    anonymous = {"service_name": "orders", "instance_id": "orders-1"}
    await nats_request(nc, REGISTER_SUBJECT, anonymous)
    reply = await nats_request(nc, REGISTER_SUBJECT, anonymous)
    assert reply["status"] == 409
    assert reply["error"]["code"] == "instance_conflict"
    assert reply["error"]["details"]["existing"]["instance_id"] == "orders-1"
    assert reply["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (b"\xc1garbage", "invalid_payload", "$"),
        ([1, 2, 3], "invalid_payload", "$"),
        ({"service_name": "orders"}, "invalid_field", "$.instance_id"),
        ({"service_name": 7, "instance_id": "x"}, "invalid_field", "$.service_name"),
        ({"service_name": "a b", "instance_id": "x"}, "invalid_field", "$.service_name"),
        (
            {"service_name": "a", "instance_id": "x", "metadata": {"b": "x" * METADATA_MAX_BYTES}},
            "metadata_too_large",
            "$.metadata",
        ),
    ],
)
async def test_invalid_requests_get_400_and_leave_the_registry_unchanged(
    router: Router, nc: NatsClient, payload: Any, code: str, field: str
) -> None:
    reply = await nats_request(nc, REGISTER_SUBJECT, payload)
    assert reply["status"] == 400
    assert reply["error"]["code"] == code
    assert reply["error"]["details"]["field"] == field
    assert (await router.registry.list_services()).total == 0


async def test_request_without_reply_subject_is_dropped_and_counted(
    router: Router, nc: NatsClient
) -> None:
    await nc.publish(REGISTER_SUBJECT, msgpack.packb({"service_name": "a", "instance_id": "b"}))
    await nc.flush()
    # A request that does get a reply, sent after, proves the first was processed.
    await nats_request(nc, REGISTER_SUBJECT, {"service_name": "c", "instance_id": "d"})
    assert (await gateway_stats(router.nats_gateway)).dropped_without_reply == 1


async def test_many_concurrent_clients_each_register_once(
    router: Router, nats_server: NatsServerProcess
) -> None:
    clients = [ServiceClient(nats_server.url) for _ in range(5)]
    for client in clients:
        await client.connect()
    try:
        results = await asyncio.gather(
            *(
                client.register("orders", f"orders-{n}-{i}")
                for n, client in enumerate(clients)
                for i in range(100)
            )
        )
        contested = await asyncio.gather(
            *(client.register("payments", "the-one") for client in clients),
            return_exceptions=True,
        )
    finally:
        for client in clients:
            await client.close()
    assert all(r.created for r in results)
    winners = [r for r in contested if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, ConflictError) for r in contested if isinstance(r, BaseException))
