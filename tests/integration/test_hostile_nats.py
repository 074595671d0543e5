"""Hostile input on every NATS request subject, against a real router over a real
nats-server.

Property-based (hypothesis) tests send arbitrary bytes, arbitrary msgpack values,
maps with the right keys and hostile values, and valid requests mixed in, to each of
`ipc.service.{register,heartbeat,deregister,list,get}`; named regression tests pin
the worst payloads found by hand.

Every reply is checked against an oracle (the router's own decoders, and a model of
the registry for valid requests), and after every example the router must still be
the same, unharmed and serving: see `tests/support/hostile_nats`.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from protocol import (
    DEREGISTER_SUBJECT,
    GET_SUBJECT,
    HEARTBEAT_SUBJECT,
    LIST_SUBJECT,
    MAX_REQUEST_BYTES,
    METADATA_MAX_DEPTH,
    REGISTER_SUBJECT,
    RegistryLimits,
)
from tests.support.hostile_nats.harness import Harness, hostile_settings
from tests.support.hostile_nats.oracle import (
    CURSOR_SECRET,
    LONG_LEASES,
    MAX_METADATA_BYTES,
    SUBJECTS,
    check_reply,
)
from tests.support.hostile_nats.payloads import (
    deep_metadata,
    exact_size,
    map_with,
    metadata_of_size,
    nested,
    pack,
    padded,
)
from tests.support.hostile_nats.strategies import (
    ARBITRARY_BYTES,
    ARBITRARY_MSGPACK,
    BAD_SERVICE_NAMES,
    HOSTILE_PAYLOADS,
    SESSIONS,
    VALID_PAYLOADS,
    VALID_REQUESTS,
    cursor_after,
    hostile_maps,
)
from tests.support.nats_requests import NoReplyError, nats_request
from tests.support.raw_nats import RawNatsClient, hpub
from tests.support.routers import InProcessRouters

pytestmark = pytest.mark.timeout(120)

NATS_DEFAULT_MAX_PAYLOAD = 1024 * 1024


@pytest.fixture
def nats_server_options() -> dict[str, Any]:
    """nats-server's own default limit per message, far above the router's: requests
    over the router's limit reach it (as through a NATS server someone else runs), and
    it must refuse them itself."""
    return {"max_payload": NATS_DEFAULT_MAX_PAYLOAD}


@pytest.fixture
async def router(routers: InProcessRouters) -> Router:
    """A router whose leases never run out during a test (so that the registry changes
    only when a request changes it), and whose cursors the oracle can read."""
    return await routers.start(lease_policy=LONG_LEASES, cursor_secret=CURSOR_SECRET)


@pytest.fixture
async def harness(router: Router, nc: NatsClient) -> Harness:
    """Shared by every example of a hypothesis test: the router keeps running and the
    model keeps track across examples."""
    return await Harness.start(router, nc)


# -- 1. arbitrary bytes -----------------------------------------------------------


@hostile_settings(max_examples=300)
@given(payload=ARBITRARY_BYTES)
async def test_arbitrary_bytes_on_every_subject_get_the_decoders_verdict_and_change_nothing(
    harness: Harness, payload: bytes
) -> None:
    await harness.check_everywhere(payload)
    await harness.assert_still_serving()


# -- 2. arbitrary msgpack values ----------------------------------------------------


@hostile_settings(max_examples=300)
@given(payload=ARBITRARY_MSGPACK)
async def test_arbitrary_msgpack_values_on_every_subject_get_the_decoders_verdict_unharmed(
    harness: Harness, payload: bytes
) -> None:
    await harness.check_everywhere(payload)
    await harness.assert_still_serving()


# -- 3. the right keys with hostile values ------------------------------------------


@hostile_settings(max_examples=500)
@given(payload=hostile_maps())
async def test_maps_with_the_right_keys_and_hostile_values_get_the_status_the_contract_names(
    harness: Harness, payload: bytes
) -> None:
    await harness.check_everywhere(payload)
    await harness.assert_still_serving()


# -- 4. valid requests mixed in -------------------------------------------------------


@hostile_settings(max_examples=200)
@given(
    requests=st.lists(
        st.one_of(VALID_REQUESTS, st.tuples(st.sampled_from(SUBJECTS), HOSTILE_PAYLOADS)),
        min_size=1,
        max_size=12,
    )
)
async def test_valid_requests_mixed_with_hostile_ones_are_served_as_the_model_predicts(
    harness: Harness, requests: list[tuple[str, bytes]]
) -> None:
    for subject, payload in requests:
        await harness.check(subject, payload)
    await harness.assert_still_serving()


@hostile_settings(max_examples=20)
@given(
    batch=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(SUBJECTS), HOSTILE_PAYLOADS),
            st.tuples(st.sampled_from([LIST_SUBJECT, GET_SUBJECT]), VALID_PAYLOADS),
        ),
        min_size=20,
        max_size=120,
    )
)
async def test_a_burst_of_concurrent_hostile_requests_is_answered_one_for_one(
    harness: Harness, batch: list[tuple[str, bytes]]
) -> None:
    # Only requests whose answer does not depend on the order they are handled in:
    # the decoder's rejections, and queries (nothing in the burst changes the registry).
    burst = [
        (subject, payload, expect)
        for subject, payload in batch
        if (expect := harness.model.predict(subject, payload)).request is None
        or subject in (LIST_SUBJECT, GET_SUBJECT)
    ]
    replies = await asyncio.gather(*(harness.request(s, p) for s, p, _ in burst))
    for (subject, payload, expect), reply in zip(burst, replies, strict=True):
        check_reply(subject, payload, reply, expect, harness.model)
    await harness.assert_still_serving()


# -- 5. no reply subject ------------------------------------------------------------


@hostile_settings(max_examples=100)
@given(
    messages=st.lists(
        st.tuples(st.sampled_from(SUBJECTS), st.one_of(VALID_PAYLOADS, HOSTILE_PAYLOADS)),
        min_size=1,
        max_size=6,
    )
)
async def test_requests_without_a_reply_subject_are_dropped_counted_and_change_nothing(
    harness: Harness, messages: list[tuple[str, bytes]]
) -> None:
    for subject, payload in messages:
        await harness.nc.publish(subject, payload)
    await harness.sync()
    harness.expected_dropped += len(messages)
    assert await harness.dropped_without_reply() == harness.expected_dropped
    await harness.assert_still_serving()


ORDERS_1 = {"service_name": "orders", "instance_id": "orders-1", "session_id": SESSIONS[0]}


async def test_a_valid_registration_without_a_reply_subject_is_dropped_and_not_registered(
    harness: Harness,
) -> None:
    payload = pack(ORDERS_1)
    await harness.nc.publish(REGISTER_SUBJECT, payload)
    await harness.sync()
    harness.expected_dropped += 1
    assert await harness.dropped_without_reply() == harness.expected_dropped
    await harness.assert_registry_matches_model()
    reply = await harness.check(REGISTER_SUBJECT, payload)
    assert reply["status"] == 201  # the dropped one never registered it
    await harness.assert_still_serving()


# -- named regressions ---------------------------------------------------------------


def registration(instance_id: str = "orders-1", **fields: Any) -> dict[str, Any]:
    return {"service_name": "orders", "instance_id": instance_id, **fields}


async def test_a_one_megabyte_metadata_list_is_refused_with_413_before_decoding(
    harness: Harness,
) -> None:
    payload = exact_size(
        lambda n: pack({**ORDERS_1, "metadata": {"list": [0] * n}}), 1_000_000, 1_000_000 - 100
    )
    assert MAX_REQUEST_BYTES < len(payload) <= harness.nc.max_payload
    for subject in SUBJECTS:
        started = time.perf_counter()
        reply = await harness.check(subject, payload)
        elapsed = time.perf_counter() - started
        assert reply["status"] == 413
        assert reply["error"]["code"] == "payload_too_large"
        assert elapsed < 1.0, f"{subject} took {elapsed:.3f} s to refuse 1 MB"
    await harness.assert_still_serving()


@pytest.mark.parametrize(
    "where", ["top level", "metadata", "metadata value", "unknown key", "get filter"]
)
async def test_sixty_thousand_deep_nesting_is_a_400_on_every_subject(
    harness: Harness, where: str
) -> None:
    deep = nested(60_000, b"\x91")
    payload = {
        "top level": deep,
        "metadata": map_with(ORDERS_1, "metadata", deep),
        "metadata value": map_with(ORDERS_1, "metadata", b"\x81\xa1k" + deep),
        "unknown key": map_with(ORDERS_1, "zz_unknown", deep),
        "get filter": map_with({"service_name": "orders"}, "metadata", b"\x81\xa1k" + deep),
    }[where]
    assert len(payload) <= MAX_REQUEST_BYTES
    for subject, reply in zip(SUBJECTS, await harness.check_everywhere(payload), strict=True):
        assert reply["status"] == 400, subject
    await harness.assert_still_serving()


async def test_invalid_utf8_in_service_name_is_a_400_wherever_service_name_is_a_field(
    harness: Harness,
) -> None:
    payload = pack({**ORDERS_1, "service_name": b"ord\xffers"}, bin_type=False)
    replies = dict(zip(SUBJECTS, await harness.check_everywhere(payload), strict=True))
    for subject in (REGISTER_SUBJECT, HEARTBEAT_SUBJECT, DEREGISTER_SUBJECT, GET_SUBJECT):
        assert replies[subject]["status"] == 400, subject
        assert replies[subject]["error"]["code"] == "invalid_payload", subject
    # On list, service_name is an unknown key: skipped, like any other (documented).
    assert replies[LIST_SUBJECT]["status"] == 200
    await harness.assert_still_serving()


@pytest.mark.parametrize(
    "value",
    [
        msgpack.ExtType(5, b"x"),
        msgpack.ExtType(127, b""),
        msgpack.Timestamp(1_700_000_000, 0),
        [{"a": msgpack.ExtType(1, b"\x00" * 20)}],
    ],
    ids=["ext type 5", "ext type 127", "timestamp", "ext deep inside"],
)
async def test_an_extension_type_in_metadata_is_a_400(harness: Harness, value: Any) -> None:
    payload = pack(registration(metadata={"zone": value}))
    for subject in (REGISTER_SUBJECT, GET_SUBJECT):
        reply = await harness.check(subject, payload)
        assert reply["status"] == 400, subject
        assert reply["error"]["code"] in {"invalid_payload", "invalid_field"}, subject
    await harness.check_everywhere(payload)
    await harness.assert_still_serving()


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"load": math.nan}, "$.metadata.load"),
        ({"load": math.inf}, "$.metadata.load"),
        ({"load": -math.inf}, "$.metadata.load"),
        ({"loads": [0.5, math.nan]}, "$.metadata.loads[1]"),
        ({"a": {"b": {"c": math.nan}}}, "$.metadata.a.b.c"),
    ],
)
@pytest.mark.parametrize("single_float", [False, True])
async def test_nan_or_infinity_in_metadata_is_a_400_naming_the_value(
    harness: Harness, metadata: dict[str, Any], field: str, single_float: bool
) -> None:
    payload = pack(registration(metadata=metadata), single_float=single_float)
    reply = await harness.check(REGISTER_SUBJECT, payload)
    assert reply["status"] == 400
    assert reply["error"]["code"] == "invalid_field"
    assert reply["error"]["details"]["field"] == field
    await harness.check_everywhere(payload)
    await harness.assert_still_serving()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "",
        "!!!",
        "é",
        "c1:orders",
        cursor_after("orders")[:-1] + "*",
        "YzE6_w",  # base64 of b"c1:\xff": the right prefix, then invalid UTF-8
        "YzA6b3JkZXJz",  # base64 of b"c0:orders": the wrong prefix
        "x" * 256,
        "x" * 257,
        12345,
        b"YzE6b3JkZXJz",
        ["YzE6b3JkZXJz"],
    ],
)
async def test_a_garbage_cursor_is_a_400_on_list_and_get(harness: Harness, cursor: Any) -> None:
    for subject, request in (
        (LIST_SUBJECT, {"cursor": cursor}),
        (GET_SUBJECT, {"service_name": "orders", "cursor": cursor}),
    ):
        reply = await harness.check(subject, pack(request))
        assert reply["status"] == 400, subject
        assert reply["error"]["code"] == "invalid_field", subject
        assert reply["error"]["details"]["field"] == "$.cursor", subject
    await harness.assert_still_serving()


@pytest.mark.parametrize("limit", [0, 1001, -1, 2**64 - 1, -(2**63), True, 1.5, "10", None])
async def test_a_limit_out_of_range_or_of_the_wrong_type_is_a_400_on_list_and_get(
    harness: Harness, limit: Any
) -> None:
    for subject, request in (
        (LIST_SUBJECT, {"limit": limit}),
        (GET_SUBJECT, {"service_name": "orders", "limit": limit}),
    ):
        reply = await harness.check(subject, pack(request))
        assert reply["status"] == 400, subject
        assert reply["error"]["details"]["field"] == "$.limit", subject
    for limit_ok in (1, 1000):
        assert (await harness.check(LIST_SUBJECT, pack({"limit": limit_ok})))["status"] == 200
    await harness.assert_still_serving()


@pytest.mark.parametrize("name", BAD_SERVICE_NAMES)
async def test_a_hostile_service_name_is_a_400_naming_the_field(
    harness: Harness, name: str
) -> None:
    payload = pack({**ORDERS_1, "service_name": name})
    for subject in (REGISTER_SUBJECT, HEARTBEAT_SUBJECT, DEREGISTER_SUBJECT, GET_SUBJECT):
        reply = await harness.check(subject, payload)
        assert reply["status"] == 400, subject
        assert reply["error"]["details"]["field"] == "$.service_name", subject
    await harness.assert_still_serving()


async def test_metadata_at_the_size_limit_is_accepted_and_one_byte_over_is_a_400(
    harness: Harness,
) -> None:
    at_limit = registration("at-limit", metadata=metadata_of_size(MAX_METADATA_BYTES))
    over = registration("over", metadata=metadata_of_size(MAX_METADATA_BYTES + 1))
    assert (await harness.check(REGISTER_SUBJECT, pack(at_limit)))["status"] == 201
    reply = await harness.check(REGISTER_SUBJECT, pack(over))
    assert reply["status"] == 400
    assert reply["error"]["code"] == "metadata_too_large"
    assert reply["error"]["details"]["field"] == "$.metadata"
    await harness.assert_still_serving()


@pytest.mark.parametrize("array", [False, True], ids=["maps", "arrays"])
async def test_metadata_nested_to_the_depth_limit_is_accepted_and_one_deeper_is_a_400(
    harness: Harness, array: bool
) -> None:
    ok = registration("deep-ok", metadata=deep_metadata(METADATA_MAX_DEPTH, array))
    too_deep = registration("deep-no", metadata=deep_metadata(METADATA_MAX_DEPTH + 1, array))
    assert (await harness.check(REGISTER_SUBJECT, pack(ok)))["status"] == 201
    reply = await harness.check(REGISTER_SUBJECT, pack(too_deep))
    assert reply["status"] == 400
    assert reply["error"]["code"] == "invalid_field"
    assert reply["error"]["details"]["field"].startswith("$.metadata.k")
    await harness.assert_still_serving()


@pytest.mark.parametrize(
    "size", [MAX_REQUEST_BYTES - 1, MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1]
)
async def test_a_request_at_the_size_limit_is_decoded_and_one_byte_over_is_a_413(
    harness: Harness, size: int
) -> None:
    payload = padded(registration(f"size-{size}", session_id=SESSIONS[1]), size)
    assert len(payload) == size
    replies = dict(zip(SUBJECTS, await harness.check_everywhere(payload), strict=True))
    if size > MAX_REQUEST_BYTES:
        assert {reply["status"] for reply in replies.values()} == {413}
    else:
        assert replies[REGISTER_SUBJECT]["status"] == 201
        assert replies[HEARTBEAT_SUBJECT]["status"] == 200
        assert replies[DEREGISTER_SUBJECT]["status"] == 200
    await harness.assert_still_serving()


@pytest.mark.parametrize(
    "timestamp",
    [
        b"\xd7\xff" + b"\xff" * 8,  # timestamp 64 with nanoseconds over 999,999,999
        b"\xd5\xff\x00\x00",  # ext -1 of length 2: no timestamp format
        b"\xc7\x0c\xff" + b"\x00" * 4 + b"\x7f" + b"\xff" * 7,  # timestamp 96, year far past 9999
        b"\xc7\x0c\xff" + b"\x00" * 4 + b"\x80" + b"\x00" * 7,  # timestamp 96, most negative
        b"\xc3",  # true
        b"\xa8not-time",
        pack(math.nan),
        pack(math.inf),
        pack(-math.inf),
    ],
)
async def test_a_malformed_timestamp_is_a_400_naming_the_timestamp(
    harness: Harness, timestamp: bytes
) -> None:
    payload = map_with(registration(), "timestamp", timestamp)
    reply = await harness.check(REGISTER_SUBJECT, payload)
    assert reply["status"] == 400
    assert reply["error"]["details"]["field"] == "$.timestamp"
    await harness.check_everywhere(payload)
    await harness.assert_still_serving()


@pytest.mark.parametrize("timestamp", [2**64 - 1, -(2**63), 1e308])
async def test_an_absurd_but_finite_timestamp_is_accepted_and_does_not_break_the_delay_log(
    harness: Harness, timestamp: float
) -> None:
    payload = pack(registration(f"t-{secrets.token_hex(4)}", timestamp=timestamp))
    reply = await harness.check(REGISTER_SUBJECT, payload)
    assert reply["status"] == 201
    await harness.assert_still_serving()


EVERY_SUBJECT = frozenset(SUBJECTS)
ALL_BUT_LIST = EVERY_SUBJECT - {LIST_SUBJECT}
"""On list, `service_name` and `metadata` are unknown keys: skipped unchecked (documented)."""
A_B = b"\x83\xacservice_name\xa1a\xabinstance_id\xa1b"
"""The start of a 3-key map: {"service_name": "a", "instance_id": "b", ..."""


@pytest.mark.parametrize(
    ("payload", "rejected_on"),
    [
        pytest.param(
            A_B + b"\xa8metadata\x81\x81\xa1x\x01\x01", ALL_BUT_LIST, id="map as metadata key"
        ),
        pytest.param(
            A_B + b"\xa8metadata\x81\xa1k\x81\x81\xa1x\x01\x01",
            ALL_BUT_LIST,
            id="map as nested key",
        ),
        pytest.param(b"\x81\x81\xa1x\x01\x01", EVERY_SUBJECT, id="map as top-level key"),
        pytest.param(b"\xdd\xff\xff\xff\xff\x00", EVERY_SUBJECT, id="array claiming 4G items"),
        pytest.param(
            A_B + b"\xa8metadata\xdf\xff\xff\xff\xff", EVERY_SUBJECT, id="map claiming 4G pairs"
        ),
        pytest.param(
            b"\x82\xacservice_name\xdb\xff\xff\xff\xff\xabinstance_id\xa1b",
            EVERY_SUBJECT,
            id="str claiming 4 GB",
        ),
        pytest.param(b"\x80\x80", EVERY_SUBJECT, id="trailing bytes"),
        pytest.param(
            A_B + b"\xa9timestamp\xd6\xff\x00\x00\x00", EVERY_SUBJECT, id="truncated timestamp"
        ),
    ],
)
async def test_malformed_msgpack_shapes_are_a_400(
    harness: Harness, payload: bytes, rejected_on: frozenset[str]
) -> None:
    for subject, reply in zip(SUBJECTS, await harness.check_everywhere(payload), strict=True):
        if subject in rejected_on:
            assert reply["status"] == 400, subject
    await harness.assert_still_serving()


@pytest.mark.parametrize(
    "reply_subject", ["foo.*", "foo.>", ">", "*", "a..b", ".a", "a.", "x" * 3000]
)
async def test_a_hostile_reply_subject_does_not_hurt_the_router(
    harness: Harness, reply_subject: str
) -> None:
    for subject in SUBJECTS:
        await harness.nc.publish(subject, pack({"service_name": "orders"}), reply=reply_subject)
    await harness.sync()
    await harness.assert_still_serving()


# -- a full registry ------------------------------------------------------------------

FULL_AT = 2


@pytest.fixture
async def small_router(routers: InProcessRouters) -> Router:
    """A router that is full after FULL_AT live instances."""
    return await routers.start(
        lease_policy=LONG_LEASES,
        limits=RegistryLimits(max_instances=FULL_AT),
        cursor_secret=CURSOR_SECRET,
    )


async def test_registrations_refused_as_registry_full_leave_no_phantom_services(
    small_router: Router, nc: NatsClient
) -> None:
    for i in range(FULL_AT):
        request = {"service_name": f"s{i}", "instance_id": "i"}
        assert (await nats_request(nc, REGISTER_SUBJECT, request))["status"] == 201
    before = (await nats_request(nc, LIST_SUBJECT, {"limit": 1000}))["result"]
    for i in range(50):
        request = {"service_name": f"hostile-{i}", "instance_id": "x"}
        reply = await nats_request(nc, REGISTER_SUBJECT, request)
        assert reply["status"] == 507
        assert reply["error"]["code"] == "registry_full"
    after = (await nats_request(nc, LIST_SUBJECT, {"limit": 1000}))["result"]
    assert small_router.registry.alive
    assert after["revision"] == before["revision"]
    assert after["services"] == before["services"]
    assert after["total"] == before["total"], "refused registrations left services behind"


# -- hostile wire messages ------------------------------------------------------------


DEAF_TIMEOUT = 1.5
"""Long enough for a loopback reply; a deaf router is told apart quickly."""


@pytest.mark.parametrize(
    "raw",
    [
        # These four ended the read loop of a plain nats-py 2.16 client for good (an
        # exception escaping Client._process_msg): the router stayed "connected" and
        # healthy but answered nothing until the ping check found the connection stale.
        pytest.param(
            b"PUB ipc.service.register \xff\xfe 1\r\n\x80\r\n", id="reply subject not UTF-8"
        ),
        pytest.param(
            hpub(LIST_SUBJECT, b"NATS/1.0 \xff\xfe\xfd\r\n\r\n"), id="header status not UTF-8"
        ),
        pytest.param(
            hpub(GET_SUBJECT, b"NATS/1.0 503 \xff\xfe\r\n\r\n"),
            id="header status description not UTF-8",
        ),
        pytest.param(hpub(HEARTBEAT_SUBJECT, b"NATS/1.0"), id="header block of only the version"),
        pytest.param(
            hpub(DEREGISTER_SUBJECT, b"NATS/1.0\r\nX: \xff\xfe\r\n\r\n"),
            id="header value not UTF-8",
        ),
        pytest.param(hpub(LIST_SUBJECT, b"\xff" * 12), id="header block of garbage"),
        pytest.param(
            hpub(REGISTER_SUBJECT, b"NATS/1.0\r\n\r\n", b""), id="empty payload with headers"
        ),
        pytest.param(b"PUB ipc.service.list.\xff 1\r\n\x80\r\n", id="subject below a router one"),
        pytest.param(b"PUB ipc.service.* _INBOX.hostile 1\r\n\x80\r\n", id="wildcard subject"),
    ],
)
async def test_a_hostile_wire_message_does_not_make_the_router_deaf(
    harness: Harness, nats_server: NatsServerProcess, raw: bytes
) -> None:
    wire = await RawNatsClient.connect(nats_server)
    try:
        await wire.send(raw)
    finally:
        await wire.close()
    try:
        reply = await harness.request(LIST_SUBJECT, b"\x80", timeout=DEAF_TIMEOUT)
    except NoReplyError:
        gateway = harness.router.nats_gateway
        pytest.fail(
            f"after {raw!r} the router answers nothing (gateway alive={gateway.ref.alive}, "
            f"connected={await gateway.connected()})"
        )
    assert reply["status"] == 200
    await harness.assert_still_serving()
