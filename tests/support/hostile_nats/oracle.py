"""The oracle of the hostile-input tests: what the router must answer to any request.

The router's own decoders (`protocol.codec.decode_*`) say whether a request is valid
and, when it is not, which status, code and `details.field` the router must answer
with; for a valid request a small model of the registry (`RegistryModel`) says which
status it must get and how the registry's revision moves. Leases are made long
(`LONG_LEASES`) so that nothing changes on its own while a test runs: the registry's
revision then moves only when the model says so, which is how "a rejected request
changed nothing" is checked.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol import (
    DEREGISTER_SUBJECT,
    GET_SUBJECT,
    HEARTBEAT_SUBJECT,
    LIST_SUBJECT,
    MAX_REQUEST_BYTES,
    REGISTER_SUBJECT,
    LeasePolicy,
    ProtocolError,
    RegistryLimits,
    decode_cursor,
    decode_get_request,
    decode_lease_request,
    decode_list_request,
    decode_register_request,
)
from tests.support.nats_requests import show

SUBJECTS = (REGISTER_SUBJECT, HEARTBEAT_SUBJECT, DEREGISTER_SUBJECT, LIST_SUBJECT, GET_SUBJECT)
MAX_METADATA_BYTES = RegistryLimits().max_metadata_bytes
LONG_LEASES = LeasePolicy(
    heartbeat_interval=600.0, lease_ttl=3600.0, offline_after=3600.0, offline_retention=3600.0
)
"""Nothing expires while a test runs, so the registry changes only by request."""
CURSOR_SECRET = b"hostile-nats-cursor-secret"
"""The router under test signs its cursors with this: the oracle reads them, and the
strategies make valid ones."""

ERROR_CODES = {
    400: {"invalid_payload", "invalid_field", "metadata_too_large"},
    403: {"not_owner"},
    404: {"instance_not_found"},
    409: {"instance_conflict"},
    413: {"payload_too_large"},
    507: {"service_full", "registry_full"},
}


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
class HeldInstance:
    """One instance as the model knows it."""

    session_id: str | None
    metadata: dict[str, Any]
    online: bool = True

    @property
    def status(self) -> str:
        return "ONLINE" if self.online else "OFFLINE"


class RegistryModel:
    """What the registry holds, as far as the requests of this test made it.

    Exact because nothing expires (`LONG_LEASES`) and every request goes through
    `Harness.check`, which applies the accepted ones (`commit`)."""

    def __init__(self) -> None:
        self.held: dict[tuple[str, str], HeldInstance] = {}
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
                decode_cursor(request.cursor, CURSOR_SECRET)
            except ProtocolError as error:
                field = error.details.get("field")
                return Expect(400, str(error.code), field, note=error.message)
        return Expect(200, request=request)

    def commit(self, subject: str, expect: Expect) -> None:
        """Apply a request the router answered as predicted."""
        request = expect.request
        if subject == REGISTER_SUBJECT and expect.status == 201:
            self.held[(request.service_name, request.instance_id)] = HeldInstance(
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


def check_reply(
    subject: str, payload: bytes, reply: Any, expect: Expect, model: RegistryModel
) -> None:
    """The reply is a msgpack map with the status the oracle predicts; an error has a
    non-empty code and message and a details map; a success has the right body."""
    where = f"on {subject} for payload {show(payload)}:\n  reply {show(reply, 600)}"
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
        start = bisect.bisect_right(names, decode_cursor(request.cursor, CURSOR_SECRET))

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
        ids = ids[bisect.bisect_right(ids, decode_cursor(request.cursor, CURSOR_SECRET)) :]
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

