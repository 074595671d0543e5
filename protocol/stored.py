"""What the routers keep in their JetStream stream: the registry's durable, replicated
state, one message per instance (the stream keeps the last message per subject, so it
is itself the compacted current state), plus the leader's term markers.

Routers of different versions may read each other's records during a rolling upgrade:
the schema evolution rule of `models.py` holds here too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from protocol.models import InstanceStatus

__all__ = [
    "FORGET_HEADER",
    "StoredInstance",
    "TermMarker",
    "decode_stored_instance",
    "instance_subject",
    "parse_instance_subject",
    "term_subject",
]

FORGET_HEADER = "Ipc-Forget"
"""Header of a tombstone: the instance was forgotten (its body is empty)."""


class StoredInstance(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One instance as the stream keeps it. Times are Unix seconds (wall clock):
    lease deadlines are not stored, a new leader grants fresh leases."""

    service_name: str
    instance_id: str
    status: InstanceStatus
    metadata: dict[str, Any]
    registered_at: float
    last_heartbeat: float
    """As of this write: heartbeats themselves are not stored."""
    session_hash: bytes | None = None
    """SHA-256 of the registering session's id, first 16 bytes: enough to check a
    claim, useless to make one (whoever reads the stream cannot renew or deregister)."""
    offline_at: float | None = None
    """When it went OFFLINE (retention runs from there)."""


class TermMarker(msgspec.Struct, frozen=True, kw_only=True):
    """Written by a router when it becomes the leader, before anything else: from then
    on a previous leader's conditional appends fail."""

    term: int
    router: str
    """An id of the router process, for operators."""


_instance_decoder = msgspec.msgpack.Decoder(StoredInstance)


def decode_stored_instance(data: bytes) -> StoredInstance:
    """Decode a stored instance (raises `msgspec.DecodeError` / `ValidationError`)."""
    return _instance_decoder.decode(data)




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
