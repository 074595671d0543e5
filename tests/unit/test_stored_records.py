"""The stream's records are untrusted input (issue 16): anyone with publish rights on
its subjects could have put anything there. `read_stored_instance` takes a record
only whole and valid; the registry applies what it takes and serves it without
raising. Fuzzed with hypothesis: random bytes, and records with every field at its
type's extremes."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.registry_state import RegistryState
from protocol import (
    GetServiceRequest,
    InstanceStatus,
    ListServicesRequest,
    encode_json,
    encode_msgpack,
)
from protocol.stored import MAX_STORED_BYTES, InvalidRecord, StoredInstance, read_stored_instance
from tests.support.clock import FakeClock

KEY = ("orders", "orders-1")
GOOD: dict[str, Any] = {
    "service_name": "orders",
    "instance_id": "orders-1",
    "status": "ONLINE",
    "metadata": {"zone": "a"},
    "registered_at": 1_700_000_000.0,
    "last_heartbeat": 1_700_000_001.0,
    "session_hash": b"0123456789abcdef",
}

EXTREME_FLOATS = [math.nan, math.inf, -math.inf, 1e300, -1.0, -1e-300, 5e-324, 1.8e308, 32_503_680_000.5]
EXTREME_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([*EXTREME_FLOATS, None, True, "", "x" * 70_000, 2**64, -(2**63), b"", [], {}]),
    st.integers(),
    st.floats(),
    st.text(max_size=300),
    st.binary(max_size=300),
)


def record(**changes: Any) -> bytes:
    data: bytes = msgpack.packb({**GOOD, **changes}, use_bin_type=True)
    return data


def test_a_valid_record_is_read_whole() -> None:
    stored = read_stored_instance(record(), KEY)
    assert stored.metadata == {"zone": "a"} and stored.status is InstanceStatus.ONLINE


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"registered_at": 1e300}, "registered_at"),
        ({"registered_at": math.nan}, "registered_at"),
        ({"last_heartbeat": -math.inf}, "last_heartbeat"),
        ({"offline_at": math.inf}, "offline_at"),
        ({"service_name": "billing"}, "its subject"),
        ({"instance_id": "orders.1"}, "instance_id"),
        ({"service_name": "x" * 65}, "service_name"),
        ({"status": "ZOMBIE"}, "status"),
        ({"session_hash": b"x" * 33}, "session_hash"),
        ({"metadata": {"a": [[[[[[[[[1]]]]]]]]]}}, "metadata"),
        ({"metadata": {"big": "x" * 70_000}}, "bytes"),
        ({"metadata": {"ext": msgpack.ExtType(5, b"x")}}, "metadata"),
    ],
)
def test_a_record_nobody_should_have_stored_is_refused_with_the_reason(
    changes: dict[str, Any], why: str
) -> None:
    with pytest.raises(InvalidRecord, match=why):
        read_stored_instance(record(**changes), KEY)


def test_a_record_bigger_than_any_request_could_make_is_not_even_decoded() -> None:
    with pytest.raises(InvalidRecord, match="bytes"):
        read_stored_instance(b"\xc0" * (MAX_STORED_BYTES + 1), KEY)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
def test_random_bytes_are_refused_or_read_never_anything_else(data: bytes) -> None:
    try:
        stored = read_stored_instance(data, KEY)
    except InvalidRecord:
        return
    assert isinstance(stored, StoredInstance)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted([*GOOD, "offline_at"])), EXTREME_VALUES)
def test_any_field_at_any_extreme_is_refused_or_served_without_raising(
    field: str, value: Any
) -> None:
    """What is read can be applied, listed, shown and encoded: nothing it holds makes a
    query raise (a stored 1e300 crashed every router in `datetime.fromtimestamp`)."""
    try:
        data = record(**{field: value})
    except (OverflowError, TypeError, ValueError):
        return  # (msgpack cannot even encode it)
    try:
        stored = read_stored_instance(data, KEY)
    except InvalidRecord:
        return
    serve(stored)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "status": st.sampled_from(["ONLINE", "UNHEALTHY", "OFFLINE"]),
            "metadata": st.dictionaries(
                st.text(max_size=20),
                st.recursive(
                    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=50),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20,
                ),
                max_size=8,
            ),
            "registered_at": st.floats(0, 32_503_680_000.0),
            "last_heartbeat": st.floats(0, 32_503_680_000.0),
            "offline_at": st.none() | st.floats(0, 32_503_680_000.0),
        }
    )
)
def test_every_valid_record_is_served_without_raising(fields: dict[str, Any]) -> None:
    if fields["offline_at"] is None:
        del fields["offline_at"]
    try:
        stored = read_stored_instance(record(**fields), KEY)
    except InvalidRecord:
        return  # (metadata too deep or too big: refused, as a request's would be)
    serve(stored)


def serve(stored: StoredInstance) -> None:
    """Apply `stored` as a standby does, then answer every query about it, encoded as
    the wire would carry it."""
    clock = FakeClock()
    state = RegistryState(clock=clock.monotonic, wall_clock=clock.wall)
    state.apply(7, KEY, stored)
    detail = state.get_service(GetServiceRequest(service_name="orders", limit=10))
    listing = state.list_services(ListServicesRequest())
    for reply in (detail, listing):
        encode_json(reply)
        encode_msgpack(reply)
    state.grant_leases()
    clock.advance(10**6)
    state.expire()
    state.take_transitions()
