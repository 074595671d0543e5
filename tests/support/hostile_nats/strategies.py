"""Hypothesis strategies for hostile payloads: arbitrary bytes, arbitrary msgpack,
maps with the right keys and hostile values, and valid requests to mix in."""

from __future__ import annotations

import math
import re
from typing import Any

import msgpack
from hypothesis import strategies as st

from protocol import (
    DEREGISTER_SUBJECT,
    GET_SUBJECT,
    HEARTBEAT_SUBJECT,
    INSTANCE_ID_MAX_LENGTH,
    LIST_SUBJECT,
    MAX_REQUEST_BYTES,
    METADATA_MAX_DEPTH,
    NAME_PATTERN,
    REGISTER_SUBJECT,
    SERVICE_NAME_MAX_LENGTH,
    SESSION_ID_MAX_LENGTH,
    SESSION_ID_MIN_LENGTH,
    encode_cursor,
)
from tests.support.hostile_nats.oracle import CURSOR_SECRET, MAX_METADATA_BYTES
from tests.support.hostile_nats.payloads import (
    deep_metadata,
    map_with,
    metadata_of_size,
    nested,
    pack,
    padded,
)


def cursor_after(key: str) -> str:
    """A cursor the router under test accepts: it resumes a listing after `key`."""
    return encode_cursor(key, CURSOR_SECRET)


SERVICES = ("orders", "billing", "A-_9", "s" * SERVICE_NAME_MAX_LENGTH)
INSTANCES = ("orders-1", "0", "_", "i" * INSTANCE_ID_MAX_LENGTH)
SESSIONS = ("session-00000001", "S" * SESSION_ID_MIN_LENGTH, "z" * SESSION_ID_MAX_LENGTH)
"""Small pools, so that repeats, conflicts, heartbeats and deregistrations of known
instances happen often."""
FIELDS = (
    "service_name", "instance_id", "session_id", "metadata", "timestamp", "status", "limit",
    "cursor",
)
HOSTILE_NAMES = (
    "", " ", ".", "a.b", "a b", " a", "a ", "*", ">", "a.*", "a.>", "orders\n", "\n",
    "orders\r\n", "\t", "\x00", "a\x00b", "ü", "名前", "🙂", "a/b", "a:b", "$SYS",
    "_INBOX.x", "x" * (SERVICE_NAME_MAX_LENGTH + 1), "x" * (INSTANCE_ID_MAX_LENGTH + 1),
    "x" * (SESSION_ID_MIN_LENGTH - 1), "x" * (SESSION_ID_MAX_LENGTH + 1), "x" * 10_000,
    "orders\u2028", "ｏｒｄｅｒｓ", "\ufeff", "a\u0301",
)
BAD_SERVICE_NAMES = tuple(
    name
    for name in HOSTILE_NAMES
    if len(name) > SERVICE_NAME_MAX_LENGTH or not re.match(NAME_PATTERN, name)
)

INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
TEXT = st.text(max_size=24)
RAW = st.binary(max_size=24)
EXTS = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16))
TIMESTAMPS = st.builds(
    msgpack.Timestamp, st.integers(-(2**63), 2**63 - 1), st.integers(0, 999_999_999)
)
SCALARS = st.one_of(
    st.none(), st.booleans(), INTS, st.floats(), TEXT, RAW, EXTS, TIMESTAMPS
)
KEYS = st.one_of(
    st.sampled_from(FIELDS), TEXT, st.none(), st.booleans(), INTS, st.floats(), RAW, EXTS,
    TIMESTAMPS, st.tuples(INTS, TEXT),
)
"""Every hashable kind of msgpack map key (tuples pack as arrays)."""
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)
WRONG_TYPES = st.one_of(
    st.none(), st.booleans(), INTS, st.floats(), RAW, EXTS, TIMESTAMPS,
    st.lists(TEXT, max_size=3), st.dictionaries(TEXT, TEXT, max_size=3),
)
FINITE_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), INTS, FINITE_FLOATS, TEXT),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=10,
)
JSON_METADATA = st.dictionaries(TEXT, JSONISH, max_size=4)
PACK_OPTIONS = st.fixed_dictionaries({"bin_type": st.booleans(), "single_float": st.booleans()})
DEPTHS = st.one_of(st.integers(1, 40), st.integers(2_000, 60_000))
"""Shallow, or far past the decoder's recursion limit: never in between, where the
verdict would depend on how deep the stack already is."""


def names(max_length: int) -> st.SearchStrategy[Any]:
    """Valid names, names a character too long, hostile ones, and other types."""
    return st.one_of(
        st.from_regex(rf"\A[A-Za-z0-9_-]{{1,{max_length}}}\Z"),
        st.integers(max_length - 1, max_length + 1).map(lambda n: "n" * n),
        st.sampled_from(HOSTILE_NAMES),
        st.text(max_size=max_length + 2),
        RAW,
        WRONG_TYPES,
    )


POISON = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    RAW,
    EXTS,
    TIMESTAMPS,
    st.dictionaries(KEYS.filter(lambda key: not isinstance(key, str)), TEXT, min_size=1),
)
"""A value metadata must not hold."""
POISONED_METADATA = st.builds(
    lambda metadata, key, poison, wrap: {**metadata, key: wrap(poison)},
    JSON_METADATA,
    TEXT,
    POISON,
    st.sampled_from(
        [lambda v: v, lambda v: [1, v], lambda v: {"in": v}, lambda v: [{"in": [v]}]]
    ),
)
"""Valid metadata with one poisoned value, at the top or nested."""
METADATA = st.one_of(
    JSON_METADATA,
    POISONED_METADATA,
    st.integers(MAX_METADATA_BYTES - 2, MAX_METADATA_BYTES + 2).map(metadata_of_size),
    st.builds(
        deep_metadata,
        st.integers(METADATA_MAX_DEPTH - 1, METADATA_MAX_DEPTH + 2),
        st.booleans(),
    ),
    st.dictionaries(TEXT, VALUES, min_size=1, max_size=3),
    st.dictionaries(TEXT, st.dictionaries(KEYS, TEXT, min_size=1, max_size=2), min_size=1),
    st.integers(MAX_METADATA_BYTES + 3, MAX_REQUEST_BYTES + 4096).map(lambda n: {"blob": "b" * n}),
    WRONG_TYPES,
    TEXT,
)
TIMESTAMP_VALUES = st.one_of(
    st.floats(), INTS, TIMESTAMPS,
    st.sampled_from(
        ["2026-11-26T07:44:13Z", "2026-11-26T07:44:13+01:00", "2026-11-26T07:44:13", "now"]
    ),
    st.booleans(), TEXT, RAW, EXTS,
)
STATUSES = st.one_of(
    st.sampled_from(["ONLINE", "OFFLINE", "UNHEALTHY", None, "online", "", "*", "ONLINE\n"]),
    WRONG_TYPES,
)
LIMITS_VALUES = st.one_of(
    st.integers(-3, 1003),
    st.sampled_from([0, 1, 1000, 1001, -1, 2**63 - 1, 2**64 - 1, -(2**63)]),
    st.floats(), st.booleans(), TEXT,
)
CURSORS = st.one_of(
    st.sampled_from(SERVICES + INSTANCES).map(cursor_after),
    TEXT.map(cursor_after),
    TEXT,
    st.sampled_from(["", "!!!", "é", "c1:", "YzE6_w", "====", "x" * 256, "x" * 257]),
    WRONG_TYPES,
)
GET_FILTERS = st.one_of(
    st.dictionaries(TEXT, st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT)),
    METADATA,
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "service_name": st.one_of(st.sampled_from(SERVICES), names(SERVICE_NAME_MAX_LENGTH)),
    "instance_id": st.one_of(st.sampled_from(INSTANCES), names(INSTANCE_ID_MAX_LENGTH)),
    "session_id": st.one_of(st.sampled_from(SESSIONS), names(SESSION_ID_MAX_LENGTH)),
    "metadata": st.one_of(METADATA, GET_FILTERS),
    "timestamp": TIMESTAMP_VALUES,
    "status": STATUSES,
    "limit": LIMITS_VALUES,
    "cursor": CURSORS,
}
SIZE_TARGETS = st.sampled_from(
    (None,) * 8
    + (MAX_REQUEST_BYTES - 1, MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1, MAX_REQUEST_BYTES + 4096)
)
"""Mostly as packed; sometimes padded to just under, at, just over or well over 64 KiB."""


VALID_REGISTER = st.fixed_dictionaries(
    {"service_name": st.sampled_from(SERVICES), "instance_id": st.sampled_from(INSTANCES)},
    optional={
        "session_id": st.sampled_from(SESSIONS * 3 + (None,)),
        "metadata": JSON_METADATA,
        "timestamp": st.one_of(
            st.floats(), INTS, st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1))
        ),
    },
)
VALID_LEASE = st.fixed_dictionaries(
    {
        "service_name": st.sampled_from(SERVICES),
        "instance_id": st.sampled_from(INSTANCES),
        "session_id": st.sampled_from(SESSIONS),
    }
)
VALID_PAGE = {
    "limit": st.one_of(st.integers(1, 3), st.integers(1, 1000)),
    "cursor": st.one_of(st.sampled_from(SERVICES + INSTANCES), TEXT).map(cursor_after),
}
VALID_STATUSES = st.sampled_from([None, "ONLINE", "OFFLINE", "UNHEALTHY"])
VALID_LIST = st.fixed_dictionaries({}, optional={"status": VALID_STATUSES, **VALID_PAGE})
VALID_GET = st.fixed_dictionaries(
    {"service_name": st.sampled_from(SERVICES)},
    optional={
        "status": VALID_STATUSES,
        "metadata": st.dictionaries(
            st.sampled_from(["zone", "v", ""]), st.one_of(TEXT, INTS, st.booleans()), max_size=2
        ),
        **VALID_PAGE,
    },
)
VALID_REQUEST_MAPS = st.one_of(VALID_REGISTER, VALID_LEASE, VALID_LIST, VALID_GET)
VALID_REQUESTS = st.one_of(
    st.tuples(st.just(REGISTER_SUBJECT), VALID_REGISTER.map(pack)),
    st.tuples(st.sampled_from([HEARTBEAT_SUBJECT, DEREGISTER_SUBJECT]), VALID_LEASE.map(pack)),
    st.tuples(st.just(LIST_SUBJECT), VALID_LIST.map(pack)),
    st.tuples(st.just(GET_SUBJECT), VALID_GET.map(pack)),
)


@st.composite
def hostile_maps(draw: st.DrawFn) -> bytes:
    """A valid request with one or two fields replaced by hostile values (or removed),
    a valid registration with hostile metadata, or any set of the known keys with
    valid or hostile values; sometimes with a stray key, sometimes padded to just
    under, at or just over the 64 KiB request limit."""
    request: dict[Any, Any]
    shape = draw(st.sampled_from(["one field off", "hostile metadata", "any keys"]))
    if shape == "hostile metadata":
        request = {**draw(VALID_REGISTER), "metadata": draw(METADATA)}
    elif shape == "one field off":
        request = dict(draw(VALID_REQUEST_MAPS))
        for key in draw(st.sets(st.sampled_from(FIELDS), min_size=1, max_size=2)):
            if draw(st.integers(0, 5)):
                request[key] = draw(FIELD_VALUES[key])
            else:
                request.pop(key, None)
    else:
        request = {
            key: draw(FIELD_VALUES[key])
            for key in draw(st.sets(st.sampled_from(FIELDS), max_size=len(FIELDS)))
        }
    if draw(st.integers(0, 7)) == 0:
        request[draw(KEYS)] = draw(VALUES)
    options = draw(PACK_OPTIONS)
    size = draw(SIZE_TARGETS)
    if size is None:
        return pack(request, **options)
    return padded(request, size, **options)


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    """Nesting far past METADATA_MAX_DEPTH (and past the decoder's recursion limit),
    at the top, inside metadata, under an unknown key or under a known one."""
    depth = draw(DEPTHS)
    # fixarray, fixmap with a str key, array 16, fixmap with an int key, with a nil key
    openers = [b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\x81\x00", b"\x81\xc0"]
    opener = draw(st.sampled_from(openers))
    # nil, 1, NaN, ext type 5
    leaf = draw(st.sampled_from([b"\xc0", b"\x01", b"\xcb\x7f\xf8" + b"\x00" * 6, b"\xd4\x05\x00"]))
    body = nested(depth, opener, leaf)
    where = draw(
        st.sampled_from(["top", "metadata", "metadata value", "unknown", "service_name", "cursor"])
    )
    if where == "top":
        return body
    head = {"service_name": "orders", "instance_id": "orders-1", "session_id": SESSIONS[0]}
    if where == "metadata":
        return map_with(head, "metadata", body)
    if where == "metadata value":
        return map_with(head, "metadata", b"\x81\xa1k" + body)
    if where == "unknown":
        return map_with(head, "zz_unknown", body)
    head.pop(where, None)
    return map_with(head, where, body)


@st.composite
def mutated_valid_requests(draw: st.DrawFn) -> bytes:
    """A valid request, truncated, with a byte changed, with bytes inserted or appended."""
    _, payload = draw(VALID_REQUESTS)
    data = bytearray(payload)
    how = draw(st.sampled_from(["truncate", "change", "insert", "append"]))
    at = draw(st.integers(0, len(data)))
    if how == "truncate":
        return bytes(data[:at])
    if how == "change" and data:
        data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        return bytes(data)
    extra = draw(st.binary(min_size=1, max_size=16))
    if how == "insert":
        return bytes(data[:at] + extra + data[at:])
    return bytes(data + extra)


HUGE_HEADERS = (
    b"\xde\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"
)
"""map 16, map 32, array 32 and str 32 headers claiming the largest sizes."""
ARBITRARY_BYTES = st.one_of(
    st.binary(max_size=512),
    st.sampled_from([b"", b"\x80", b"\x90", b"\xc0", b"\xc1", b"\xff", b"\x81", *HUGE_HEADERS]),
    st.tuples(st.sampled_from([b"\x81", b"\x83", *HUGE_HEADERS]), st.binary(max_size=64)).map(
        b"".join
    ),
    mutated_valid_requests(),
)
ARBITRARY_MSGPACK = st.one_of(
    st.builds(lambda value, options: pack(value, **options), VALUES, PACK_OPTIONS),
    st.builds(
        lambda value, options: pack(value, **options),
        st.dictionaries(KEYS, VALUES, max_size=6),
        PACK_OPTIONS,
    ),
    deeply_nested(),
)
HOSTILE_PAYLOADS = st.one_of(ARBITRARY_BYTES, ARBITRARY_MSGPACK, hostile_maps())
VALID_PAYLOADS = VALID_REQUESTS.map(lambda request: request[1])
"""The payloads of `VALID_REQUESTS`, whatever their subject."""
