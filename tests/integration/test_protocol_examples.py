"""The error replies docs/protocol.md shows in section 11 are the ones the router sends:
each documented request gets, over real NATS, the documented `code`, `message` and
`details`, and every such error in the document comes from one of them. (Texts drift
when a message is reworded; this catches it.)"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from nats.aio.client import Client as NatsClient

from actors.app import Router
from protocol import GET_SUBJECT, HEARTBEAT_SUBJECT, LIST_SUBJECT, REGISTER_SUBJECT
from tests.support.nats_requests import nats_request
from tests.support.protocol_doc import ALL, values_in

pytestmark = pytest.mark.timeout(30)

SESSION = "example-session-id-0123456789abc"
OTHER = "another-session-id-0123456789xyz"
REGISTRATION = {"service_name": "orders", "instance_id": "orders-1", "metadata": {"zone": "a"},
                "session_id": SESSION}  # fmt: skip
LEASE = {"service_name": "orders", "instance_id": "orders-1", "session_id": SESSION}
UNPRODUCIBLE = {"internal_error", "router_unavailable", "payload_too_large"}
"""Errors the document shows from the code: no client can cause them on purpose (and
a request over 65 536 bytes cannot cross the test's nats-server)."""


def big_get(size: int) -> bytes:
    base = len(msgpack.packb({"service_name": "orders", "cursor": ""}))
    body: bytes = msgpack.packb({"service_name": "orders", "cursor": "x" * (size - base - 2)})
    assert len(body) == size
    return body


REQUESTS: list[tuple[str, Any]] = [
    (REGISTER_SUBJECT, {**REGISTRATION, "session_id": OTHER}),
    (REGISTER_SUBJECT, {k: v for k, v in REGISTRATION.items() if k != "session_id"}),
    (REGISTER_SUBJECT, {**REGISTRATION, "service_name": "orders.v1"}),
    (REGISTER_SUBJECT, {**REGISTRATION, "service_name": "orders\n"}),
    (REGISTER_SUBJECT, {**REGISTRATION, "metadata": {"zone": {"a": b"\x00"}}}),
    (REGISTER_SUBJECT, {**REGISTRATION, "metadata": {"load": float("nan")}}),
    (REGISTER_SUBJECT, {**REGISTRATION, "metadata": {"blob": "x" * 5000}}),
    (REGISTER_SUBJECT, {**REGISTRATION, "timestamp": "2026-11-26T07:44:13"}),
    (REGISTER_SUBJECT, {**REGISTRATION, "timestamp": float("nan")}),
    (REGISTER_SUBJECT, {"service_name": "orders"}),
    (REGISTER_SUBJECT, b"hello"),
    (HEARTBEAT_SUBJECT, {**LEASE, "session_id": OTHER}),
    (HEARTBEAT_SUBJECT, {**LEASE, "instance_id": "orders-9"}),
    (HEARTBEAT_SUBJECT, {"service_name": "orders", "instance_id": "orders-1"}),
    (LIST_SUBJECT, {"limit": 0}),
    (GET_SUBJECT, {"service_name": "orders", "status": "online"}),
    (GET_SUBJECT, {"service_name": "orders", "metadata": {"k": [1]}}),
    (GET_SUBJECT, {"service_name": "orders", "cursor": "Am9yZGVycy0x"}),
    (GET_SUBJECT, big_get(65_536)),
]


def comparable(error: dict[str, Any]) -> tuple[str, str, str]:
    """What must match: the code, the message, and the details (but the holding
    instance of a 409, whose times differ from run to run, only by its id)."""
    details = dict(error["details"])
    if "existing" in details:
        details["existing"] = details["existing"]["instance_id"]
    return error["code"], error["message"], repr(sorted(details.items()))


def documented_errors() -> set[tuple[str, str, str]]:
    """Every NATS error reply shown in section 11."""
    shown = set()
    for block in ALL:
        if not block.section.startswith("### 11."):
            continue
        for value, _ in values_in(block):
            if isinstance(value, dict) and isinstance(value.get("error"), dict):
                shown.add(comparable(value["error"]))
    return shown


@pytest.fixture
async def orders_1(router: Router, nc: NatsClient) -> None:
    """`orders-1` registered by the example session, its metadata as in 11.5."""
    reply = await nats_request(nc, REGISTER_SUBJECT, {**REGISTRATION, "metadata": {"zone": "b"}})
    assert reply["status"] == 201


async def test_the_documented_errors_are_the_ones_the_router_sends(orders_1: None, nc: NatsClient) -> None:
    documented = documented_errors()
    assert len(documented) >= 15
    sent = set()
    for subject, body in REQUESTS:
        reply = await nats_request(nc, subject, body)
        assert "error" in reply, (subject, body, reply)
        error = comparable(reply["error"])
        assert error in documented, f"not in docs/protocol.md section 11: {error}"
        sent.add(error)
    unseen = {error for error in documented - sent if error[0] not in UNPRODUCIBLE}
    assert unseen == set(), "documented, but no documented request produces it"
