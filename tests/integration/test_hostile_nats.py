"""Hostile input on every NATS request subject, against a real router over a real
nats-server.

Property-based (hypothesis) tests send arbitrary bytes, arbitrary msgpack values,
maps with the right keys and hostile values, and valid requests mixed in, to each of
`ipc.service.{register,heartbeat,deregister,list,get}`; named regression tests pin
the worst payloads found by hand.

The oracle for every reply: the router's own decoders (`protocol.codec.decode_*`)
say whether a request is valid and, when it is not, which status, code and
`details.field` the router must answer with; for a valid request a small model of
the registry (`RegistryModel`) says which status it must get and how the registry's
revision moves. Leases are made long (`LONG_LEASES`) so that nothing changes on its
own while a test runs: the registry's revision then moves only when the model says
so, which is how "a rejected request changed nothing" is checked.

After every example (`Harness.assert_still_serving`): the registry actor and the NATS
gateway are the very objects the test started with (no crash, no restart), both are
alive, the registry's revision and service total match the model, no request was
dropped that should not have been, and a fresh valid registration still gets 201.
"""

from __future__ import annotations

from tests.conftest import incarnation

import asyncio
import bisect
import itertools
import math
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import nats.errors
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient

from actors.app import Router, RouterConfig
from actors.embedded_nats import NatsServerProcess
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
    LeasePolicy,
    ListServicesRequest,
    ProtocolError,
    RegistryLimits,
    decode_cursor,
    decode_get_request,
    decode_lease_request,
    decode_list_request,
    decode_register_request,
    encode_cursor,
)

pytestmark = pytest.mark.timeout(120)

SUBJECTS = (REGISTER_SUBJECT, HEARTBEAT_SUBJECT, DEREGISTER_SUBJECT, LIST_SUBJECT, GET_SUBJECT)
LIMITS = RegistryLimits()
MAX_METADATA_BYTES = LIMITS.max_metadata_bytes
REQUEST_TIMEOUT = 5.0
LONG_LEASES = LeasePolicy(
    heartbeat_interval=600.0, lease_ttl=3600.0, offline_after=3600.0, offline_retention=3600.0
)
"""Nothing expires while a test runs, so the registry changes only by request."""

ERROR_CODES = {
    400: {"invalid_payload", "invalid_field", "metadata_too_large"},
    403: {"not_owner"},
    404: {"instance_not_found"},
    409: {"instance_conflict"},
    413: {"payload_too_large"},
    507: {"service_full", "registry_full"},
}
PROBE_SERVICE = "zz-probe"
"""Service of the registrations that prove the router still serves (no strategy
draws this name)."""


EXAMPLES_SCALE = float(os.environ.get("HOSTILE_NATS_EXAMPLES_SCALE", "1"))
"""Multiplies every test's example count (`HOSTILE_NATS_EXAMPLES_SCALE=20`: a long hunt)."""


def hostile_settings(max_examples: int) -> settings:
    """Bounded examples, no deadline (a real network is in the loop), no example
    database; the router fixture is deliberately shared by all examples of a test."""
    return settings(
        max_examples=max(1, round(max_examples * EXAMPLES_SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def lease_policy() -> LeasePolicy:
    """Leases that never run out during a test (so that the registry changes only when
    a request changes it)."""
    return LONG_LEASES


@pytest.fixture
async def harness(router: Router, nc: NatsClient) -> Harness:
    """Shared by every example of a hypothesis test: the router keeps running and the
    model keeps track across examples."""
    return await Harness.start(router, nc)


# -- the oracle -----------------------------------------------------------------


def _decode_register(data: bytes) -> Any:
    return decode_register_request(data, MAX_METADATA_BYTES)


DECODERS: dict[str, Callable[[bytes], Any]] = {
    REGISTER_SUBJECT: _decode_register,
    HEARTBEAT_SUBJECT: decode_lease_request,
    DEREGISTER_SUBJECT: decode_lease_request,
    LIST_SUBJECT: decode_list_request,
    GET_SUBJECT: decode_get_request,
}


@dataclass(frozen=True)
class Expect:
    """What the router must answer to one request."""

    status: int
    code: str | None = None
    """The error code (None: any code allowed for the status)."""
    field: str | None = None
    """The `details.field` a 400 must name (None: any path)."""
    revision_delta: int = 0
    """How much the registry's revision moves."""
    request: Any = None
    """The decoded request, when it is valid."""
    lenient: bool = False
    """Only the status is certain (the decoder's verdict depends on stack depth)."""
    note: str = ""


@dataclass
class _Held:
    session_id: str | None
    metadata: dict[str, Any]
    online: bool = True

    @property
    def status(self) -> str:
        return "ONLINE" if self.online else "OFFLINE"


class RegistryModel:
    """What the registry holds, as far as the requests of this test made it.

    Exact because nothing expires (`LONG_LEASES`) and every request goes through
    `Harness.check`."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], _Held] = {}
        self.revision = 0

    def predict(self, subject: str, payload: bytes) -> Expect:
        try:
            request = DECODERS[subject](payload)
        except ProtocolError as error:
            return Expect(
                int(error.status),
                str(error.code),
                error.details.get("field"),
                lenient="recursion" in error.message,
                note=error.message,
            )
        except Exception as error:  # noqa: BLE001 - the decoder broke: a 400 by contract
            return Expect(400, lenient=True, note=f"the decoder itself raised {error!r}")
        if subject == REGISTER_SUBJECT:
            return self._register(request)
        if subject == HEARTBEAT_SUBJECT:
            return self._heartbeat(request)
        if subject == DEREGISTER_SUBJECT:
            return self._deregister(request)
        return self._query(request)

    def _register(self, request: Any) -> Expect:
        held = self.held.get((request.service_name, request.instance_id))
        if held is None or not held.online:
            return Expect(201, revision_delta=1, request=request)
        if request.session_id is not None and held.session_id == request.session_id:
            changed = held.metadata != request.metadata
            return Expect(200, revision_delta=int(changed), request=request)
        return Expect(409, "instance_conflict", request=request)

    def _heartbeat(self, request: Any) -> Expect:
        held = self.held.get((request.service_name, request.instance_id))
        if held is None or not held.online:
            return Expect(404, "instance_not_found", request=request)
        if held.session_id != request.session_id:
            return Expect(403, "not_owner", request=request)
        return Expect(200, request=request)

    def _deregister(self, request: Any) -> Expect:
        held = self.held.get((request.service_name, request.instance_id))
        if held is None or not held.online:
            return Expect(200, request=request)
        if held.session_id != request.session_id:
            return Expect(403, "not_owner", request=request)
        return Expect(200, revision_delta=1, request=request)

    @staticmethod
    def _query(request: Any) -> Expect:
        if request.cursor is not None:
            try:
                decode_cursor(request.cursor)
            except ProtocolError as error:
                field = error.details.get("field")
                return Expect(400, str(error.code), field, note=error.message)
        return Expect(200, request=request)

    def commit(self, subject: str, expect: Expect) -> None:
        """Apply a request the router answered as predicted."""
        request = expect.request
        if subject == REGISTER_SUBJECT and expect.status == 201:
            self.held[(request.service_name, request.instance_id)] = _Held(
                request.session_id, request.metadata
            )
        elif subject == REGISTER_SUBJECT and expect.status == 200:
            self.held[(request.service_name, request.instance_id)].metadata = request.metadata
        elif subject == DEREGISTER_SUBJECT and expect.revision_delta:
            self.held[(request.service_name, request.instance_id)].online = False
        self.revision += expect.revision_delta

    def counts(self) -> dict[str, dict[str, int]]:
        """Instances per status, per service (the router's `status_counts`)."""
        counts: dict[str, dict[str, int]] = {}
        for (service, _), held in self.held.items():
            per_status = counts.setdefault(service, {})
            per_status[held.status] = per_status.get(held.status, 0) + 1
        return counts

    def instance_ids(self, service: str) -> list[str]:
        return sorted(instance for (name, instance) in self.held if name == service)


# -- replies --------------------------------------------------------------------


def _show(data: Any, limit: int = 300) -> str:
    text = repr(data)
    size = f" ({len(data)} bytes)" if isinstance(data, bytes | bytearray) else ""
    return (text if len(text) <= limit else text[:limit] + "...") + size


def check_reply(
    subject: str, payload: bytes, reply: Any, expect: Expect, model: RegistryModel
) -> None:
    """The reply is a msgpack map with the status the oracle predicts; an error has a
    non-empty code and message and a details map; a success has the right body."""
    where = f"on {subject} for payload {_show(payload)}:\n  reply {_show(reply, 600)}"
    assert isinstance(reply, dict), f"reply is not a map {where}"
    status = reply.get("status")
    assert type(status) is int, f"status is not an int {where}"
    assert status == expect.status, (
        f"expected status {expect.status} {expect.code or ''} {where}\n  oracle: {expect.note}"
    )
    if status >= 400:
        error = reply.get("error")
        assert isinstance(error, dict), f"no error map {where}"
        code, message, details = error.get("code"), error.get("message"), error.get("details")
        assert isinstance(code, str) and code, f"error.code {where}"
        assert isinstance(message, str) and message.strip(), f"error.message {where}"
        assert isinstance(details, dict), f"error.details {where}"
        assert code in ERROR_CODES[status], f"code {code!r} does not go with {status} {where}"
        lenient = expect.lenient or "recursion" in message
        if expect.code is not None and not lenient:
            assert code == expect.code, f"expected code {expect.code} {where}"
        if status == 400:
            path = details.get("field")
            assert isinstance(path, str) and path.startswith("$"), f"details.field {where}"
            if expect.field is not None and not lenient:
                assert path == expect.field, f"expected details.field {expect.field} {where}"
        if status == 413:
            assert details.get("size") == len(payload), where
            assert details.get("limit") == MAX_REQUEST_BYTES, where
        assert "instance" not in reply and "result" not in reply, where
        return
    assert "error" not in reply, where
    request = expect.request
    if subject == REGISTER_SUBJECT:
        instance = reply.get("instance")
        assert isinstance(instance, dict), where
        assert instance.get("service_name") == request.service_name, where
        assert instance.get("instance_id") == request.instance_id, where
        assert instance.get("status") == "ONLINE", where
        assert instance.get("metadata") == request.metadata, where
        assert "session_id" not in instance, f"the session id is echoed {where}"
        assert isinstance(reply.get("heartbeat_interval"), float), where
        assert isinstance(reply.get("lease_ttl"), float), where
    elif subject == HEARTBEAT_SUBJECT:
        assert reply.get("instance_status") == "ONLINE", where
    elif subject == DEREGISTER_SUBJECT:
        assert reply.get("instance_status") == "OFFLINE", where
    elif subject == LIST_SUBJECT:
        _check_service_list(reply.get("result"), request, model, where)
    else:
        _check_service_detail(reply.get("result"), request, model, where)


def _check_service_list(result: Any, request: Any, model: RegistryModel, where: str) -> None:
    assert isinstance(result, dict), where
    counts = model.counts()
    names = sorted(counts)
    status = None if request.status is None else str(request.status)
    start = 0
    if request.cursor is not None:
        start = bisect.bisect_right(names, decode_cursor(request.cursor))

    def count(name: str) -> int:
        per_status = counts[name]
        return sum(per_status.values()) if status is None else per_status.get(status, 0)

    eligible = [name for name in names[start:] if count(name)]
    expected = eligible[: request.limit]
    services = result.get("services")
    assert isinstance(services, list), where
    assert [s.get("service_name") for s in services] == expected, where
    for summary in services:
        name = summary["service_name"]
        assert summary.get("instance_count") == count(name), where
        assert summary.get("status_counts") == counts[name], where
    total = len(names) if status is None else sum(1 for c in counts.values() if status in c)
    assert result.get("total") == total, where
    assert result.get("revision") == model.revision, where
    more = len(eligible) > request.limit
    assert (result.get("next_cursor") is not None) == more, where


def _check_service_detail(result: Any, request: Any, model: RegistryModel, where: str) -> None:
    assert isinstance(result, dict), where
    assert result.get("service_name") == request.service_name, where
    assert result.get("revision") == model.revision, where
    status = None if request.status is None else str(request.status)
    ids = model.instance_ids(request.service_name)
    if request.cursor is not None:
        ids = ids[bisect.bisect_right(ids, decode_cursor(request.cursor)) :]
    name = request.service_name
    eligible = [i for i in ids if status is None or model.held[(name, i)].status == status]
    instances = result.get("instances")
    assert isinstance(instances, list), where
    got = [instance.get("instance_id") for instance in instances]
    assert len(got) <= request.limit, where
    for instance in instances:
        assert (name, instance.get("instance_id")) in model.held, f"unknown instance {where}"
        held = model.held[(name, instance["instance_id"])]
        assert instance.get("status") == held.status, where
        assert instance.get("metadata") == held.metadata, where
        assert "session_id" not in instance, f"the session id is echoed {where}"
    if request.metadata:
        # Filtered: a sorted subset of the eligible ids (the filter semantics are the
        # registry's, tested elsewhere).
        assert got == sorted(set(got)) and set(got) <= set(eligible), where
        return
    assert got == eligible[: len(got)], where
    if len(got) < min(request.limit, len(eligible)):
        assert result.get("next_cursor") is not None, f"page cut short, no cursor {where}"
    if len(got) == len(eligible):
        assert result.get("next_cursor") is None, where


# -- the harness ------------------------------------------------------------------


class Harness:
    """Sends requests, checks every reply against the oracle, and checks that the
    router is unharmed."""

    def __init__(self, router: Router, nc: NatsClient, dropped: int) -> None:
        self.router = router
        self.nc = nc
        self.model = RegistryModel()
        self.registry_actor = incarnation(router.registry.ref)
        self.gateway_actor = incarnation(router.nats_gateway.ref)
        self.expected_dropped = dropped
        self._probes = itertools.count()

    @classmethod
    async def start(cls, router: Router, nc: NatsClient) -> Harness:
        return cls(router, nc, (await router.nats_gateway.stats()).dropped_without_reply)

    async def dropped_without_reply(self) -> int:
        return (await self.router.nats_gateway.stats()).dropped_without_reply

    async def request(self, subject: str, payload: bytes) -> Any:
        """Request/reply; the decoded reply (a test failure on silence)."""
        try:
            message = await self.nc.request(subject, payload, timeout=REQUEST_TIMEOUT)
        except nats.errors.TimeoutError:
            pytest.fail(f"no reply in {REQUEST_TIMEOUT} s on {subject} for {_show(payload)}")
        try:
            return msgpack.unpackb(message.data, timestamp=3, strict_map_key=False)
        except Exception as error:  # noqa: BLE001
            pytest.fail(f"reply on {subject} is no msgpack ({error!r}): {_show(message.data)}")

    async def check(self, subject: str, payload: bytes, *, probe: bool = False) -> dict[str, Any]:
        """Send one request; its reply and the registry's revision are as predicted."""
        expect = self.model.predict(subject, payload)
        reply = await self.request(subject, payload)
        check_reply(subject, payload, reply, expect, self.model)
        self.model.commit(subject, expect)
        if not probe and currently_in_test_context():
            # The mix of outcomes, for --hypothesis-show-statistics.
            outcome = str(reply["status"])
            if reply["status"] >= 400:
                error = reply["error"]
                where = str(error["details"].get("field", "")).split("[")[0].split(".")[:2]
                outcome += f" {error['code']} {'.'.join(where)}"
            event(f"{subject.rsplit('.', 1)[1]} {outcome.strip()}")
        await self.assert_registry_matches_model(f"after {subject} {_show(payload)}")
        return reply

    async def check_everywhere(self, payload: bytes) -> list[dict[str, Any]]:
        return [await self.check(subject, payload) for subject in SUBJECTS]

    async def assert_registry_matches_model(self, context: str = "") -> None:
        """Revision and service total as the model says: rejected requests changed
        nothing, accepted ones exactly what they should."""
        snapshot = await self.router.registry.list_services(ListServicesRequest(limit=1))
        assert snapshot.revision == self.model.revision, f"registry revision moved {context}"
        assert snapshot.total == len(self.model.counts()), f"service total changed {context}"

    async def assert_still_serving(self) -> None:
        """No crash, no restart, nothing dropped, and a valid registration gets 201."""
        registry = self.router.registry
        assert incarnation(registry.ref) is self.registry_actor, "the registry actor was restarted"
        assert registry.alive, f"the registry actor is dead: {self.registry_actor.failure!r}"
        gateway = self.router.nats_gateway
        assert incarnation(gateway.ref) is self.gateway_actor, "the NATS gateway was restarted"
        assert await gateway.connected(), "the NATS gateway is down"
        assert await self.dropped_without_reply() == self.expected_dropped
        await self.assert_registry_matches_model()
        probe = pack(
            {
                "service_name": PROBE_SERVICE,
                "instance_id": f"probe-{next(self._probes)}",
                "session_id": secrets.token_hex(16),
                "metadata": {"probe": True},
            }
        )
        reply = await self.check(REGISTER_SUBJECT, probe, probe=True)
        assert reply["status"] == 201

    async def sync(self) -> None:
        """A request on every subject: once all are answered, every message published
        before them on that subject has been handled (one subscription handles its
        messages in order)."""
        for subject in SUBJECTS:
            await self.check(subject, b"")


# -- payload building -------------------------------------------------------------


def pack(value: Any, *, bin_type: bool = True, single_float: bool = False) -> bytes:
    """msgpack; `bin_type=False` sends bytes as (possibly invalid UTF-8) str,
    `single_float=True` floats as float32 (unless one does not fit)."""
    try:
        return msgpack.packb(value, use_bin_type=bin_type, use_single_float=single_float)
    except OverflowError:
        if not single_float:
            raise
        return msgpack.packb(value, use_bin_type=bin_type)


def _exact(build: Callable[[int], bytes], size: int, start: int) -> bytes:
    """`build(n)` for the n that makes it `size` bytes long (or as close as msgpack
    header sizes allow)."""
    n = max(start, 0)
    data = build(n)
    for _ in range(6):
        if len(data) == size:
            break
        n = max(n + size - len(data), 0)
        data = build(n)
    return data


def metadata_of_size(size: int) -> dict[str, Any]:
    """`{"blob": "x" * n}` whose msgpack encoding is exactly `size` bytes."""
    data = _exact(lambda n: pack({"blob": "x" * n}), size, size - 9)
    assert len(data) == size
    return msgpack.unpackb(data)


def padded(request: dict[Any, Any], size: int, **options: bool) -> bytes:
    """The request with an unknown key `zz_pad` that makes it exactly `size` bytes (when
    the request alone is not already larger)."""
    plain = pack(request, **options)
    if len(plain) + 8 > size:
        return plain
    return _exact(
        lambda n: pack({**request, "zz_pad": "p" * n}, **options), size, size - len(plain) - 10
    )


def nested(depth: int, opener: bytes, leaf: bytes = b"\xc0") -> bytes:
    """`depth` containers, each opened by `opener` (one element each), around `leaf`."""
    return opener * depth + leaf


def map_with(entries: dict[str, Any], raw_key: str, raw_value: bytes) -> bytes:
    """A msgpack map of `entries` plus one key whose value is the given raw bytes."""
    count = len(entries) + 1
    assert count <= 15
    body = b"".join(pack(k) + pack(v) for k, v in entries.items())
    return bytes([0x80 | count]) + body + pack(raw_key) + raw_value


# -- strategies -------------------------------------------------------------------

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
    return st.one_of(
        st.from_regex(rf"\A[A-Za-z0-9_-]{{1,{max_length}}}\Z"),
        st.integers(max_length - 1, max_length + 1).map(lambda n: "n" * n),
        st.sampled_from(HOSTILE_NAMES),
        st.text(max_size=max_length + 2),
        RAW,
        WRONG_TYPES,
    )


def _deep_metadata(depth: int, array: bool) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth - 1):
        value = [value] if array else {"k": value}
    return {"k": value}


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
        _deep_metadata,
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
    st.sampled_from(SERVICES + INSTANCES).map(encode_cursor),
    TEXT.map(encode_cursor),
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
    "cursor": st.one_of(st.sampled_from(SERVICES + INSTANCES), TEXT).map(encode_cursor),
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

VALID_PAYLOADS = VALID_REQUESTS.map(lambda request: request[1])


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
    payload = _exact(
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
        encode_cursor("orders")[:-1] + "*",
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
    ok = registration("deep-ok", metadata=_deep_metadata(METADATA_MAX_DEPTH, array))
    too_deep = registration("deep-no", metadata=_deep_metadata(METADATA_MAX_DEPTH + 1, array))
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


@pytest.mark.parametrize("timestamp", [math.nan, math.inf, -math.inf, 2**64 - 1, -(2**63), 1e308])
async def test_an_absurd_but_numeric_timestamp_is_accepted_and_does_not_break_the_delay_log(
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
async def small_router(nats_server: NatsServerProcess) -> AsyncIterator[Router]:
    """A router that is full after FULL_AT live instances."""
    router = Router(
        RouterConfig(
            nats_url=nats_server.url,
            http_port=0,
            lease_policy=LONG_LEASES,
            limits=RegistryLimits(max_instances=FULL_AT),
        )
    )
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


async def _ask(nc: NatsClient, subject: str, request: dict[str, Any]) -> dict[str, Any]:
    message = await nc.request(subject, pack(request), timeout=REQUEST_TIMEOUT)
    reply: dict[str, Any] = msgpack.unpackb(message.data, timestamp=3)
    return reply


async def test_registrations_refused_as_registry_full_leave_no_phantom_services(
    small_router: Router, nc: NatsClient
) -> None:
    for i in range(FULL_AT):
        reply = await _ask(nc, REGISTER_SUBJECT, {"service_name": f"s{i}", "instance_id": "i"})
        assert reply["status"] == 201
    before = (await _ask(nc, LIST_SUBJECT, {"limit": 1000}))["result"]
    for i in range(50):
        request = {"service_name": f"hostile-{i}", "instance_id": "x"}
        reply = await _ask(nc, REGISTER_SUBJECT, request)
        assert reply["status"] == 507
        assert reply["error"]["code"] == "registry_full"
    after = (await _ask(nc, LIST_SUBJECT, {"limit": 1000}))["result"]
    assert small_router.registry.alive
    assert after["revision"] == before["revision"]
    assert after["services"] == before["services"]
    assert after["total"] == before["total"], "refused registrations left services behind"


# -- hostile wire messages ------------------------------------------------------------


class RawNatsClient:
    """A client that speaks the NATS protocol itself, to send what nats-py refuses to
    (a reply subject or a header block that is not UTF-8, say): clients in other
    languages send raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, server: NatsServerProcess) -> RawNatsClient:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        info = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
        assert info.startswith(b"INFO "), info
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        return cls(reader, writer)

    async def send(self, raw: bytes) -> None:
        """Send `raw`; return once the server has processed it (PING answered)."""
        self.writer.write(raw + b"PING\r\n")
        await self.writer.drain()
        line = await asyncio.wait_for(self.reader.readline(), REQUEST_TIMEOUT)
        assert line == b"PONG\r\n", f"the server refused {raw!r}: {line!r}"

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def hpub(subject: str, headers: bytes, payload: bytes = b"\x80") -> bytes:
    """A raw HPUB (publish with headers) with a reply subject."""
    size = f"{len(headers)} {len(headers) + len(payload)}".encode()
    line = b"HPUB " + subject.encode() + b" _INBOX.hostile " + size + b"\r\n"
    return line + headers + payload + b"\r\n"


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
        message = await harness.nc.request(LIST_SUBJECT, b"\x80", timeout=DEAF_TIMEOUT)
    except nats.errors.TimeoutError:
        gateway = harness.router.nats_gateway
        pytest.fail(
            f"after {raw!r} the router answers nothing (gateway alive={gateway.ref.alive}, "
            f"connected={await gateway.connected()})"
        )
    assert msgpack.unpackb(message.data)["status"] == 200
    await harness.assert_still_serving()
