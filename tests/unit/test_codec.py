"""The wire contract's validation: every bad request becomes a clear 400."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgpack
import pytest

from protocol import (
    MAX_REQUEST_BYTES,
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    ErrorCode,
    Instance,
    InstanceStatus,
    ProtocolError,
    RegisterReply,
    check_metadata,
    decode_register_reply,
    decode_register_request,
    encode_msgpack,
)

pytestmark = pytest.mark.timeout(10)

VALID = {"service_name": "orders", "instance_id": "orders-1"}


def rejected(payload: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode_register_request(payload)
    assert caught.value.status == 400
    return caught.value


def test_minimal_request_from_plain_msgpack_decodes_with_defaults() -> None:
    request = decode_register_request(msgpack.packb(VALID))
    assert request.service_name == "orders"
    assert request.instance_id == "orders-1"
    assert request.metadata == {}
    assert request.session_id is None
    assert request.timestamp is None


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    request = decode_register_request(msgpack.packb({**VALID, "future_field": [1, 2]}))
    assert request.service_name == "orders"


def test_timestamp_accepts_unix_seconds_and_msgpack_timestamps() -> None:
    as_float = decode_register_request(msgpack.packb({**VALID, "timestamp": 1700000000.5}))
    assert as_float.timestamp == 1700000000.5
    now = dt.datetime.now(dt.UTC)
    as_ext = decode_register_request(msgpack.packb({**VALID, "timestamp": now}, datetime=True))
    assert as_ext.timestamp == now


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", b"not msgpack at all \xff\xfe", msgpack.packb({"a": 1})[:-1]],
)
def test_bytes_that_are_not_msgpack_are_invalid_payload(payload: bytes) -> None:
    error = rejected(payload)
    assert error.code in (ErrorCode.INVALID_PAYLOAD, ErrorCode.INVALID_FIELD)
    assert error.details["field"].startswith("$")


@pytest.mark.parametrize("value", [[1, 2], "orders", 42, None, True])
def test_top_level_value_that_is_not_a_map_is_invalid_payload(value: Any) -> None:
    error = rejected(msgpack.packb(value))
    assert error.code == ErrorCode.INVALID_PAYLOAD
    assert error.details == {"field": "$"}
    assert "msgpack map" in error.message


@pytest.mark.parametrize("missing", ["service_name", "instance_id"])
def test_missing_required_field_names_the_field(missing: str) -> None:
    payload = {key: value for key, value in VALID.items() if key != missing}
    error = rejected(msgpack.packb(payload))
    assert error.code == ErrorCode.INVALID_FIELD
    assert error.details["field"] == f"$.{missing}"
    assert missing in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("service_name", 42),
        ("service_name", ""),
        ("service_name", "orders.eu"),
        ("service_name", "orders eu"),
        ("service_name", "orders*"),
        ("service_name", "orders>"),
        ("service_name", "x" * 65),
        ("service_name", "ordérs"),
        ("instance_id", "i" * 129),
        ("instance_id", "a.b"),
        ("instance_id", b"bytes"),
        ("session_id", "short"),
        ("session_id", "s" * 129),
        ("session_id", "has space in it!!!"),
        ("metadata", [1, 2]),
        ("metadata", "zone=a"),
        ("timestamp", "yesterday"),
    ],
)
def test_wrong_type_or_bad_value_is_invalid_field_with_its_path(field: str, value: Any) -> None:
    error = rejected(msgpack.packb({**VALID, field: value}))
    assert error.code == ErrorCode.INVALID_FIELD
    assert error.details["field"] == f"$.{field}"
    assert "Invalid field" in error.message


def test_names_at_the_length_limits_are_accepted() -> None:
    request = decode_register_request(
        msgpack.packb({"service_name": "s" * 64, "instance_id": "i" * 128, "session_id": "k" * 16})
    )
    assert len(request.service_name) == 64


def test_name_error_hint_tells_the_allowed_pattern() -> None:
    error = rejected(msgpack.packb({**VALID, "service_name": "a.b"}))
    assert "1-64 characters" in error.message


def test_metadata_with_nested_json_values_is_accepted() -> None:
    metadata = {"zone": "a", "weight": 1.5, "tags": ["x", None, True], "limits": {"cpu": 2}}
    request = decode_register_request(msgpack.packb({**VALID, "metadata": metadata}))
    assert request.metadata == metadata


def test_metadata_larger_than_the_limit_is_rejected_with_its_size() -> None:
    metadata = {"blob": "x" * METADATA_MAX_BYTES}
    error = rejected(msgpack.packb({**VALID, "metadata": metadata}))
    assert error.code == ErrorCode.METADATA_TOO_LARGE
    assert error.details == {"field": "$.metadata"}
    assert str(METADATA_MAX_BYTES) in error.message


def test_metadata_exactly_at_the_limit_is_accepted() -> None:
    overhead = len(msgpack.packb({"blob": ""}))
    # str8/str16 header grows by 2 bytes past 255 characters.
    metadata = {"blob": "x" * (METADATA_MAX_BYTES - overhead - 2)}
    assert len(msgpack.packb(metadata)) == METADATA_MAX_BYTES
    request = decode_register_request(msgpack.packb({**VALID, "metadata": metadata}))
    assert request.metadata == metadata


def test_metadata_nested_deeper_than_the_limit_is_rejected() -> None:
    deep: Any = "leaf"
    for _ in range(METADATA_MAX_DEPTH + 1):
        deep = {"k": deep}
    error = rejected(msgpack.packb({**VALID, "metadata": deep}))
    assert error.code == ErrorCode.INVALID_FIELD
    assert "levels deep" in error.message


def test_metadata_nested_at_the_limit_is_accepted() -> None:
    deep: Any = "leaf"
    for _ in range(METADATA_MAX_DEPTH - 1):
        deep = {"k": deep}
    decode_register_request(msgpack.packb({**VALID, "metadata": {"root": deep}}))


def test_pathologically_deep_nesting_is_a_400_not_a_crash() -> None:
    payload = b"\x82\xacservice_name\xa1a\xabinstance_id" + b"\x91" * 60_000 + b"\x01"
    rejected(payload)


def test_a_payload_over_the_request_limit_is_413_before_any_decoding() -> None:
    payload = b"\x82\xacservice_name\xa1a\xabinstance_id" + b"\x91" * MAX_REQUEST_BYTES + b"\x01"
    with pytest.raises(ProtocolError) as caught:
        decode_register_request(payload)
    assert caught.value.status == 413
    assert caught.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    assert caught.value.details["limit"] == MAX_REQUEST_BYTES


def test_a_router_may_lower_the_metadata_limit() -> None:
    payload = msgpack.packb({**VALID, "metadata": {"blob": "x" * 200}})
    with pytest.raises(ProtocolError) as caught:
        decode_register_request(payload, max_metadata_bytes=100)
    assert caught.value.code == ErrorCode.METADATA_TOO_LARGE
    assert "100 bytes" in caught.value.message


def test_huge_metadata_is_measured_before_it_is_walked() -> None:
    """A megabyte of small values used to be walked value by value in Python first."""
    with pytest.raises(ProtocolError) as caught:
        check_metadata({"list": list(range(1_000_000))})
    assert caught.value.code == ErrorCode.METADATA_TOO_LARGE


@pytest.mark.parametrize(
    ("metadata", "path"),
    [
        ({"zone": {1: "a"}}, "$.metadata.zone"),
        ({"raw": b"\x00\x01"}, "$.metadata.raw"),
        ({"list": [1, b"x"]}, "$.metadata.list[1]"),
        ({"ext": msgpack.ExtType(7, b"x")}, "$"),
    ],
)
def test_metadata_values_that_are_not_json_compatible_are_rejected(
    metadata: dict[str, Any], path: str
) -> None:
    error = rejected(msgpack.packb({**VALID, "metadata": metadata}))
    assert error.details["field"] == path


def test_metadata_timestamps_are_rejected_as_not_json_compatible() -> None:
    payload = msgpack.packb({**VALID, "metadata": {"at": dt.datetime.now(dt.UTC)}}, datetime=True)
    error = rejected(payload)
    assert error.details["field"] == "$.metadata.at"


def test_invalid_utf8_is_invalid_payload() -> None:
    payload = msgpack.packb({**VALID, "metadata": {"k": "\udcff"}}, unicode_errors="surrogatepass")
    error = rejected(payload)
    assert error.code == ErrorCode.INVALID_PAYLOAD


def test_check_metadata_measures_size_when_payload_size_is_unknown() -> None:
    with pytest.raises(ProtocolError) as caught:
        check_metadata({"blob": "x" * METADATA_MAX_BYTES})
    assert caught.value.code == ErrorCode.METADATA_TOO_LARGE


def test_reply_round_trips_and_omits_absent_parts() -> None:
    instance = Instance(
        service_name="orders",
        instance_id="orders-1",
        status=InstanceStatus.ONLINE,
        metadata={"zone": "a"},
        registered_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )
    encoded = encode_msgpack(RegisterReply(status=201, instance=instance))
    plain = msgpack.unpackb(encoded, timestamp=3)
    assert set(plain) == {"status", "instance"}
    assert plain["instance"]["registered_at"] == instance.registered_at
    assert decode_register_reply(encoded).instance == instance


def test_unreadable_reply_is_a_500_for_the_sdk() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_register_reply(b"\xc1")
    assert caught.value.status == 500
