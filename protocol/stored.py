"""What the routers keep in their JetStream stream: the registry's durable, replicated
state, one message per instance (the stream keeps the last message per subject, so it
is itself the compacted current state), plus the leader's term markers.

Routers of different versions may read each other's records during a rolling upgrade:
the schema evolution rule of `models.py` holds here too.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from protocol.codec import check_metadata
from protocol.errors import ProtocolError
from protocol.models import (
    MAX_REQUEST_BYTES,
    InstanceId,
    InstanceStatus,
    MaintenanceReason,
    OperatorName,
    ServiceName,
)

__all__ = [
    "FORGET_HEADER",
    "MAX_STORED_BYTES",
    "InvalidRecord",
    "StoredInstance",
    "StoredMaintenance",
    "TermMarker",
    "decode_stored_instance",
    "instance_subject",
    "parse_instance_subject",
    "read_stored_instance",
    "term_subject",
]

MAX_STORED_BYTES = 2 * MAX_REQUEST_BYTES
"""Largest stored record a router reads (its metadata came in a request, at most
`MAX_REQUEST_BYTES`, with a few fields around it)."""
LATEST_TIME = 32_503_680_000.0
"""Latest time a stored record may name (the year 3000), in Unix seconds."""

Time = Annotated[float, Meta(ge=0.0, le=LATEST_TIME)]
"""Unix seconds, finite, from 1970 to the year 3000 (what `datetime` can show)."""
SessionHash = Annotated[bytes, Meta(max_length=32)]

FORGET_HEADER = "Ipc-Forget"
"""Header of a tombstone: the instance was forgotten (its body is empty)."""


class StoredMaintenance(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An instance's maintenance, as stored (see `protocol.Maintenance`)."""

    since: Time
    by: OperatorName
    reason: MaintenanceReason = ""


class StoredInstance(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One instance as the stream keeps it. Times are Unix seconds (wall clock):
    lease deadlines are not stored, a new leader grants fresh leases. The constraints
    are checked when a record is read: anyone with publish rights on the stream's
    subjects could have put anything there."""

    service_name: ServiceName
    instance_id: InstanceId
    status: InstanceStatus
    metadata: dict[str, Any]
    registered_at: Time
    last_heartbeat: Time
    """As of this write: heartbeats themselves are not stored."""
    session_hash: SessionHash | None = None
    """SHA-256 of the registering session's id, first 16 bytes: enough to check a
    claim, useless to make one (whoever reads the stream cannot renew or deregister)."""
    offline_at: Time | None = None
    """When it went OFFLINE (retention runs from there)."""
    maintenance: StoredMaintenance | None = None
    removed_by: OperatorName | None = None
    """The operator who deregistered it (OFFLINE records only): its client's next
    heartbeat is told so, and the SDK does not register it again by itself."""


class TermMarker(msgspec.Struct, frozen=True, kw_only=True):
    """Written by a router when it becomes the leader, before anything else: from then
    on a previous leader's conditional appends fail."""

    term: int
    router: str
    """An id of the router process, for operators."""


_instance_decoder = msgspec.msgpack.Decoder(StoredInstance)


class InvalidRecord(ValueError):
    """A stored record this router does not take (it says why)."""


def decode_stored_instance(data: bytes) -> StoredInstance:
    """Decode a stored instance (raises `msgspec.DecodeError` / `ValidationError`)."""
    return _instance_decoder.decode(data)


def read_stored_instance(data: bytes, key: tuple[str, str]) -> StoredInstance:
    """A stored record, checked as untrusted input: its size, every field (names,
    finite times from 1970 to the year 3000, the session hash, metadata as a request's
    would be: JSON values, nesting, size), and that it names the instance its subject
    names (`key`).

    Raises:
        InvalidRecord: what is wrong with it.
    """
    if len(data) > MAX_STORED_BYTES:
        raise InvalidRecord(f"{len(data)} bytes, more than {MAX_STORED_BYTES}")
    try:
        stored = _instance_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise InvalidRecord(str(error)) from None
    if (stored.service_name, stored.instance_id) != key:
        raise InvalidRecord(
            f"it names {stored.service_name}/{stored.instance_id}, its subject {key[0]}/{key[1]}"
        )
    if stored.metadata:
        try:
            check_metadata(stored.metadata, len(data), MAX_REQUEST_BYTES)
        except ProtocolError as error:
            raise InvalidRecord(f"metadata: {error.message}") from None
    return stored




def instance_subject(prefix: str, service_name: str, instance_id: str) -> str:
    """The stream subject of one instance (names are single subject tokens)."""
    return f"{prefix}.i.{service_name}.{instance_id}"


def term_subject(prefix: str) -> str:
    """The stream subject of the leader's term markers."""
    return f"{prefix}.term"


def parse_instance_subject(prefix: str, subject: str) -> tuple[str, str] | None:
    """(service_name, instance_id) of an instance subject, or None for another one."""
    head = f"{prefix}.i."
    if not subject.startswith(head):
        return None
    service, _, instance = subject[len(head) :].partition(".")
    return (service, instance) if service and instance else None
