"""Wire contracts: every message that crosses NATS or HTTP is one of these Structs.

Schema evolution rule: new fields get defaults, existing fields never change type.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from msgspec import Meta

NAME_PATTERN = r"^[A-Za-z0-9_-]+$(?!\n)"
"""Letters, digits, `_` and `-`: always a single, literal NATS subject token. (The
lookahead stops Python's `$` from accepting a trailing newline.)"""
SERVICE_NAME_MAX_LENGTH = 64
INSTANCE_ID_MAX_LENGTH = 128
SESSION_ID_MIN_LENGTH = 16
SESSION_ID_MAX_LENGTH = 128
NONCE_MIN_LENGTH = 16
NONCE_MAX_LENGTH = 64
METADATA_MAX_BYTES = 4096
"""Default upper bound of the msgpack-encoded size of a registration's metadata map
(a router may be configured with another)."""
MAX_REQUEST_BYTES = 64 * 1024
"""Largest request the router decodes at all; anything bigger is a 413."""
METADATA_MAX_DEPTH = 8
"""Deepest nesting of arrays and maps allowed inside metadata."""
MAINTENANCE_REASON_MAX_LENGTH = 200
OWNER = "owner"
"""`Maintenance.by` when the instance's own client put it into maintenance."""

ServiceName = Annotated[
    str,
    Meta(
        pattern=NAME_PATTERN,
        min_length=1,
        max_length=SERVICE_NAME_MAX_LENGTH,
        description="Service name: 1-64 characters from [A-Za-z0-9_-].",
        examples=["orders"],
    ),
]
InstanceId = Annotated[
    str,
    Meta(
        pattern=NAME_PATTERN,
        min_length=1,
        max_length=INSTANCE_ID_MAX_LENGTH,
        description="Instance id, unique within its service: 1-128 characters from [A-Za-z0-9_-].",
        examples=["orders-1"],
    ),
]
SessionId = Annotated[
    str,
    Meta(
        pattern=NAME_PATTERN,
        min_length=SESSION_ID_MIN_LENGTH,
        max_length=SESSION_ID_MAX_LENGTH,
        description=(
            "Secret chosen by the registering client (16-128 characters from [A-Za-z0-9_-]); "
            "a retry with the same session is idempotent. Never echoed back."
        ),
    ),
]
Nonce = Annotated[
    str,
    Meta(
        pattern=NAME_PATTERN,
        min_length=NONCE_MIN_LENGTH,
        max_length=NONCE_MAX_LENGTH,
        description=(
            "Unguessable token chosen per request (16-64 characters from [A-Za-z0-9_-]); "
            "the router echoes it in the reply, so that a client can tell its own reply "
            "from one that someone else made the router send to its inbox."
        ),
    ),
]
Metadata = Annotated[
    dict[str, Any],
    Meta(
        description=(
            "Free-form map of string keys to JSON-compatible values (nil, bool, int, float, "
            f"str, array, map with string keys), nested at most {METADATA_MAX_DEPTH} deep, "
            f"at most {METADATA_MAX_BYTES} bytes once msgpack-encoded."
        ),
        examples=[{"zone": "a", "version": "1.4.2"}],
    ),
]


MaintenanceReason = Annotated[
    str,
    Meta(
        max_length=MAINTENANCE_REASON_MAX_LENGTH,
        description=f"Why, in at most {MAINTENANCE_REASON_MAX_LENGTH} characters (shown to operators).",
        examples=["deploying 1.4.3"],
    ),
]
OperatorName = Annotated[
    str,
    Meta(
        pattern=NAME_PATTERN,
        min_length=1,
        max_length=64,
        description=f'Who made a change: "{OWNER}" (the instance\'s own client) or an operator ("admin").',
    ),
]

T = TypeVar("T")


class Base(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """Project-wide Struct options, set once."""


class InstanceStatus(StrEnum):
    """Lifecycle state of a registered instance."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    UNHEALTHY = "UNHEALTHY"


class RegisterRequest(Base, frozen=True):
    """Sent by a service instance on `ipc.service.register`."""

    service_name: ServiceName
    instance_id: InstanceId
    metadata: Metadata = {}
    timestamp: float | Annotated[datetime, Meta(tz=True)] | None = None
    """Client send time (Unix seconds or msgpack timestamp); logged as client delay."""
    session_id: SessionId | None = None
    nonce: Nonce | None = None


class Maintenance(Base, frozen=True):
    """An instance taken out of rotation (a drain before a deploy, an operator's
    hold): it stays registered and renews its lease, but default discovery leaves it
    out. Not a status: ONLINE, UNHEALTHY and OFFLINE keep their meaning."""

    since: datetime
    by: OperatorName
    """"owner" when the instance's own client asked; an operator otherwise (only an
    operator may end an operator's maintenance)."""
    reason: MaintenanceReason = ""


class Instance(Base, frozen=True):
    """A registered service instance as the registry reports it."""

    service_name: ServiceName
    instance_id: InstanceId
    status: InstanceStatus
    metadata: Metadata
    registered_at: datetime
    last_heartbeat: datetime | None = None
    """When the lease was last renewed (registration counts as a renewal)."""
    lease_expires_at: datetime | None = None
    """When the lease runs (or ran) out: ONLINE instances turn UNHEALTHY then unless
    renewed; absent for OFFLINE instances."""
    maintenance: Maintenance | None = None
    """Present while the instance is in maintenance: left out of default discovery."""


class ErrorInfo(Base, frozen=True, omit_defaults=False):
    """The error part of every failed reply, on NATS and HTTP alike (all three keys
    always present)."""

    code: str
    message: str
    details: dict[str, Any] = {}


class Reply(Base, frozen=True):
    """What every reply carries: the status, and on failure the error (absent on
    success). The replies below add their results to this shape."""

    status: int
    error: ErrorInfo | None = None
    nonce: str | None = None
    """The request's `nonce`, echoed (absent when the request had none, or was too
    malformed to read it)."""


class RegisterReply(Reply, frozen=True):
    """Reply to a registration: `instance` on success (200/201), `error` otherwise.

    On success it also tells the client how to keep its lease: heartbeat every
    `heartbeat_interval` seconds; without one for `lease_ttl` seconds the instance
    turns UNHEALTHY."""

    instance: Instance | None = None
    heartbeat_interval: float | None = None
    lease_ttl: float | None = None


class LeaseRequest(Base, frozen=True):
    """Sent on `ipc.service.heartbeat` (renew) and `ipc.service.deregister` (leave).

    Only the session that registered the instance may renew or deregister it."""

    service_name: ServiceName
    instance_id: InstanceId
    session_id: SessionId
    nonce: Nonce | None = None


class LeaseReply(Reply, frozen=True):
    """Reply to a heartbeat or a deregistration: `status` 200, or an `error`.

    A heartbeat answered 404 means the router does not know the instance (it
    restarted, or the lease ran out): register again."""

    instance_status: InstanceStatus | None = None
    lease_expires_at: datetime | None = None


class MaintenanceRequest(Base, frozen=True):
    """Sent on `ipc.service.maintenance` by the client that registered the instance:
    into maintenance (`maintenance` true, with a `reason`) or back out of it."""

    service_name: ServiceName
    instance_id: InstanceId
    session_id: SessionId
    maintenance: bool
    reason: MaintenanceReason = ""
    nonce: Nonce | None = None


class InstanceReply(Reply, frozen=True):
    """Reply to a maintenance change or an operator's write: the instance as it is
    after it, on 200; `error` otherwise."""

    instance: Instance | None = None


class ErrorReply(Reply, frozen=True):
    """Body of every HTTP error response and of every failed NATS reply."""

    error: ErrorInfo


class ServiceSummary(Base, frozen=True):
    """One line of the service list."""

    service_name: ServiceName
    instance_count: int
    """Instances in the requested status (all instances when no status was asked)."""
    status_counts: dict[InstanceStatus, int]
    in_maintenance: int = 0
    """Instances in maintenance (not OFFLINE); each is also counted by its status."""


class ServiceList(Base, frozen=True, omit_defaults=False):
    """A page of the service list (`ipc.service.list`, `GET /api/v1/admin/services`)."""

    services: list[ServiceSummary]
    total: int
    """Services matching the filter, over all pages."""
    next_cursor: str | None = None
    """Pass as `cursor` to get the next page; nil on the last page."""
    epoch: str = ""
    """Random id of the router incarnation; changes when the router restarts."""
    revision: int = 0
    """Registry-wide revision this reply reflects."""


class ServiceDetail(Base, frozen=True, omit_defaults=False):
    """A page of one service's instances (`ipc.service.get`,
    `GET /api/v1/admin/services/{service_name}`)."""

    service_name: ServiceName
    instances: list[Instance]
    next_cursor: str | None = None
    epoch: str = ""
    revision: int = 0
    service_revision: int = 0
    """Revision of this service's last change: the `previous_revision` its next event
    will carry. A cache compares the two to notice a missed event."""
    router_uptime: float = 0.0
    """Seconds since this router incarnation started."""
    lease_ttl: float = 0.0
    """The router's lease TTL: instances alive before a restart are back within it."""


QueryLimit = Annotated[int, Meta(ge=1, le=1000, description="Page size, 1-1000.")]
Cursor = Annotated[str, Meta(max_length=256, description="Opaque cursor from a previous page.")]
MetadataValue = str | int | float | bool | None
MetadataFilter = Annotated[
    dict[str, MetadataValue],
    Meta(description="Only instances whose metadata has each of these keys with this value."),
]


class ListServicesRequest(Base, frozen=True):
    """Sent on `ipc.service.list`."""

    status: InstanceStatus | None = None
    """Only services with instances in this status; absent or nil: all services."""
    limit: QueryLimit = 100
    cursor: Cursor | None = None
    nonce: Nonce | None = None


class GetServiceRequest(Base, frozen=True):
    """Sent on `ipc.service.get`."""

    service_name: ServiceName
    status: InstanceStatus | None = InstanceStatus.ONLINE
    """Only instances in this status: ONLINE when absent, every status when nil."""
    metadata: MetadataFilter = {}
    limit: QueryLimit = 100
    cursor: Cursor | None = None
    nonce: Nonce | None = None
    include_maintenance: bool | None = None
    """Whether instances in maintenance are listed. Absent or nil: not in the ONLINE
    view (what discovery uses: they take no traffic), listed in any other."""


class ResultReply(Reply, Generic[T], frozen=True):
    """Reply to a query: `result` on 200, `error` otherwise."""

    result: T | None = None


ListServicesReply = ResultReply[ServiceList]
"""Reply on `ipc.service.list`."""
GetServiceReply = ResultReply[ServiceDetail]
"""Reply on `ipc.service.get` (an unknown service is an empty list, so that a watcher
can start before the first instance)."""


class EventType(StrEnum):
    """What happened to an instance."""

    REGISTERED = "registered"
    REPLACED = "replaced"
    """Registered by a new client in place of a holder that had stopped renewing
    (UNHEALTHY): a restarted service taking its id back. The old holder's next
    heartbeat is refused (403)."""
    METADATA_UPDATED = "metadata_updated"
    UNHEALTHY = "unhealthy"
    ONLINE = "online"
    """Back ONLINE after being UNHEALTHY."""
    DEREGISTERED = "deregistered"
    EXPIRED = "expired"
    """OFFLINE because its lease ran out."""
    REMOVED = "removed"
    """An OFFLINE instance forgotten after the retention period."""
    MAINTENANCE_ON = "maintenance_on"
    """Put into maintenance (or its reason changed): left out of discovery."""
    MAINTENANCE_OFF = "maintenance_off"
    """Out of maintenance: back in discovery if ONLINE."""


class RegistryEvent(Base, frozen=True, omit_defaults=False):
    """Published once per change on `ipc.registry.events.<service_name>`."""

    epoch: str
    revision: int
    """Registry-wide, +1 with every change (of any service) within one epoch."""
    previous_revision: int
    """Revision of the previous change to the same service (0: none this epoch)."""
    type: EventType
    instance: Instance
    """The instance after the change."""
    reason: str | None = None
    """Why, when someone decided it: "admin" when an operator deregistered the
    instance; the reason given for a maintenance change."""


class LeasePolicy(Base, frozen=True, omit_defaults=False):
    """How leases work on this router (all in seconds)."""

    heartbeat_interval: float = 1.0
    """How often clients should renew."""
    lease_ttl: float = 3.0
    """ONLINE -> UNHEALTHY after this long without a heartbeat."""
    offline_after: float = 30.0
    """UNHEALTHY -> OFFLINE (removed from the live registry) after this much longer."""
    offline_retention: float = 60.0
    """How long an OFFLINE instance stays visible to admins before it is forgotten."""


class RegistryLimits(Base, frozen=True, omit_defaults=False):
    """How much a router holds. Past a limit, registration gets the stated error."""

    max_instances: int = 500_000
    """Live (not OFFLINE) instances in the whole registry; then 507 `registry_full`."""
    max_instances_per_service: int = 50_000
    """Live instances of one service; then 507 `service_full`."""
    max_metadata_bytes: int = METADATA_MAX_BYTES
    """Encoded metadata of one instance; then 400 `metadata_too_large`."""


class Health(Base, frozen=True):
    """`GET /healthz`: 200 when everything is up, 503 otherwise."""

    status: str
    nats_connected: bool
    registry_running: bool
    """The registry runs and has read its stream (stream mode)."""
    role: str | None = None
    """"leader" or "standby" (stream mode; both answer 200 when ready), "memory"."""
    revision: int | None = None
    """The registry revision this router's view reflects."""
    lease_policy: LeasePolicy | None = None
    limits: RegistryLimits | None = None
    phase: str | None = None
    """Stream mode: where this router stands (loading, standby, taking_up, leading,
    lapsed: a leader not sure it still leads, silent until it knows; standing_down)."""
    phase_reason: str | None = None
    """Why it is there (the last change)."""
    not_serving_queries: str | None = None
    """Stream mode: why this router answers no query now (503): it is reading the
    stream, or its view has not been known to be current for a while (its stream link
    is down, or it lags); the routers' queue group then sends queries to the others."""
    skipped_records: list[str] | None = None
    """Stream mode, when there were some: the last stored records this router left out
    as invalid (sequence, subject, why)."""
