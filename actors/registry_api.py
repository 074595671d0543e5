"""What the registry actor takes and answers, and `RegistryClient`, the typed way to
talk to it (the actor itself is in registry.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from actors.actor import ActorRef, Lane, Message
from actors.admin_commands import AdminCommand
from actors.latency import HistogramSnapshot
from actors.role_state import Role
from protocol import (
    ErrorCode,
    GetServiceRequest,
    InstanceReply,
    InstanceStatus,
    LeaseReply,
    LeaseRequest,
    ListServicesRequest,
    MaintenanceRequest,
    ProtocolError,
    RegisterReply,
    RegisterRequest,
    RegistryEvent,
    ServiceDetail,
    ServiceList,
    Status,
)

__all__ = [
    "UNCHANGED",
    "AdminWrite",
    "Deregister",
    "EventBatch",
    "ExcuseGap",
    "ForwardAdmin",
    "GetService",
    "GetServiceCounts",
    "GetStatus",
    "Heartbeat",
    "ListServices",
    "NotLeading",
    "Register",
    "RegistryClient",
    "RegistryStatus",
    "ServeReads",
    "ServeWrites",
    "ServiceCounts",
    "SetMaintenance",
    "SignedAdminWrite",
    "Stamped",
]


# -- messages the registry takes ---------------------------------------------------


class Register(Message, frozen=True):
    """Register (or idempotently re-register) one instance -> `RegisterReply`."""

    request: RegisterRequest


class Heartbeat(Message, frozen=True):
    """Renew an instance's lease -> `LeaseReply`."""

    request: LeaseRequest


class Deregister(Message, frozen=True):
    """Take an instance offline -> `LeaseReply`."""

    request: LeaseRequest


class SetMaintenance(Message, frozen=True):
    """An instance's own client puts it into maintenance or out -> `InstanceReply`."""

    request: MaintenanceRequest


class SignedAdminWrite(Message, frozen=True):
    """An operator's write passed on by another router, sealed (see
    actors/admin_commands.py) -> `InstanceReply`."""

    sealed: bytes


WRITES: Final = (Register, Heartbeat, Deregister, SetMaintenance, SignedAdminWrite)
"""The messages only a leader answers (the others' answer is silence)."""


class AdminWrite(Message, frozen=True):
    """An operator's write from this router's admin API -> `InstanceReply` when this
    router leads (or keeps the registry in memory), else `ForwardAdmin`."""

    command: AdminCommand


class ForwardAdmin(msgspec.Struct, frozen=True):
    """Answer to `AdminWrite` on a router that does not lead: the command, sealed, for
    the leader (`ipc.router.admin`)."""

    sealed: bytes


class ListServices(Message, frozen=True):
    """A page of services with instance counts -> `ServiceList`. With `known` (the
    stamp of an earlier `Stamped` answer, or `()` for none): `UNCHANGED` or a new
    `Stamped`."""

    request: ListServicesRequest
    max_bytes: int | None = None
    """Bounds the page's encoded size (a NATS reply must fit in its max payload)."""
    known: Any = None


class GetService(Message, frozen=True):
    """A page of one service's instances -> `ServiceDetail`. `missing_ok`: an unknown
    service is an empty page instead of a 404; `max_bytes` bounds the page's encoded
    size; `known` as for `ListServices`."""

    request: GetServiceRequest
    missing_ok: bool = False
    max_bytes: int | None = None
    known: Any = None


class GetStatus(Message, frozen=True):
    """-> `RegistryStatus`."""


class GetServiceCounts(Message, frozen=True):
    """-> `ServiceCounts` of the first `limit` services by name."""

    limit: int


class ServiceCounts(msgspec.Struct, frozen=True):
    """Instances per service (what the per-service metrics report), for at most a given
    number of services; the others are folded into one total."""

    services: list[tuple[str, dict[InstanceStatus, int], dict[InstanceStatus, int]]]
    """(service, instances by status, instances in maintenance by status), by name."""
    other: tuple[dict[InstanceStatus, int], dict[InstanceStatus, int]] | None = None
    """The same counts, summed over the services left out (None: none was)."""
    folded: int = 0
    """How many services were left out."""


# -- messages the registry sends or answers with -------------------------------------


class EventBatch(Message, frozen=True):
    """The change events of one drain, in revision order, for the publisher."""

    events: tuple[RegistryEvent, ...]


class ServeWrites(Message, frozen=True):
    """To the NATS gateway: answer registrations, heartbeats and deregistrations (this
    router leads), or stop (it is a standby)."""

    serve: bool


class ExcuseGap(Message, frozen=True):
    """From the NATS gateway: its heartbeat connection was down for `seconds` (a
    reconnect, a slow-consumer drop): heartbeats could not arrive, so that time is left
    out of lease time."""

    seconds: float


class ServeReads(Message, frozen=True):
    """To the NATS gateway: answer queries (join the routers' queue group), or stop (the
    registry's view may be behind: another router answers them)."""

    serve: bool


class RegistryStatus(msgspec.Struct, frozen=True):
    """What `/healthz` and the metrics report about the registry."""

    role: Role
    """"leader" only while it surely leads; "memory" for a registry in memory."""
    ready: bool
    """The stream is loaded (always true in memory)."""
    revision: int
    epoch: str
    instances: int
    """Live instances (not OFFLINE)."""
    offline: int
    events_dropped: int
    status_counts: dict[InstanceStatus, int] = {}
    """Instances in each status."""
    services: int = 0
    append_latency: HistogramSnapshot | None = None
    """Stream mode: how long the leader's appends took (a drain's changes each)."""
    phase: str | None = None
    """Stream mode: where the router stands (loading, standby, taking_up, leading,
    lapsed, standing_down: see actors/role_state.py)."""
    phase_reason: str | None = None
    """Why it is there (the last change)."""
    leadership_events: dict[str, int] = {}
    """Stream mode: leadership events so far by kind (terms taken up, stand-downs,
    lapses, reloads, stream changes ...), the registry's and its elector's."""
    not_serving_reads: str | None = None
    """Stream mode: why this router answers no query now (its view is not known to be
    current), or None when it does."""
    records_skipped: int = 0
    """Stream mode: stored records left out as invalid, since the router started."""
    skipped_recent: tuple[str, ...] = ()
    """The last of them: sequence, subject and why."""


class Stamped(Message, frozen=True):
    """A query result with the stamp that tells whether it is still current."""

    stamp: Any
    result: Any


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
"""Answer to a query whose `known` stamp is still current."""


class NotLeading(ProtocolError):
    """A write reached a router that does not lead, or is not sure it still does (or
    could not be sure its change was stored). The NATS gateway answers it with
    silence, so that the leader's answer is the only one (a client whose request gets
    no answer sends it again); an in-process caller gets this 503."""

    def __init__(self, why: str) -> None:
        super().__init__(
            Status.SERVICE_UNAVAILABLE,
            ErrorCode.ROUTER_UNAVAILABLE,
            f"This router cannot take writes now ({why}); another router leads, or will "
            "shortly: retry.",
        )


def answer_if_changed(known: Any, stamp: Any, build: Callable[[], Any]) -> Any:
    """A query's answer: built fresh without `known`; else `UNCHANGED` when the stamp is
    still `known`, or a new `Stamped` result."""
    if known is None:
        return build()
    if known == stamp:
        return UNCHANGED
    return Stamped(stamp, build())


# -- the typed client ------------------------------------------------------------------


class RegistryClient:
    """Typed calls to a registry actor through its ref: `await registry.register(r)`.

    Errors meant for the caller arrive as `ProtocolError` (409, 403, 404 ...); a
    registry that is not running raises `ActorDeadError`, a full mailbox
    `MailboxFullError`, no answer in time `AskTimeoutError`. Heartbeats use the
    mailbox's urgent lane, queries its low lane."""

    __slots__ = ("ref", "timeout")

    def __init__(self, ref: ActorRef, timeout: float = 5.0) -> None:
        self.ref = ref
        self.timeout = timeout

    @property
    def alive(self) -> bool:
        """True while the registry actor accepts messages."""
        return self.ref.alive

    async def status(self) -> RegistryStatus | None:
        """The registry's role, readiness and revision (None when it does not run)."""
        status: RegistryStatus | None = await self.ref.ask_or_none(GetStatus())
        return status

    async def register(self, request: RegisterRequest) -> RegisterReply:
        """Register an instance (409 on conflict, 507 when full)."""
        reply: RegisterReply = await self.ref.ask(Register(request), self.timeout)
        return reply

    async def heartbeat(self, request: LeaseRequest) -> LeaseReply:
        """Renew a lease (403 not the owner, 404 unknown)."""
        reply: LeaseReply = await self.ref.ask(Heartbeat(request), self.timeout, lane=Lane.URGENT)
        return reply

    async def deregister(self, request: LeaseRequest) -> LeaseReply:
        """Take an instance offline (403 not the owner)."""
        reply: LeaseReply = await self.ref.ask(Deregister(request), self.timeout)
        return reply

    async def set_maintenance(self, request: MaintenanceRequest) -> InstanceReply:
        """An instance's own client changes its maintenance (403, 404)."""
        reply: InstanceReply = await self.ref.ask(SetMaintenance(request), self.timeout)
        return reply

    async def admin_write(self, command: AdminCommand) -> InstanceReply | ForwardAdmin:
        """An operator's write: applied here if this router leads, else sealed for the
        leader (`ForwardAdmin`)."""
        reply: InstanceReply | ForwardAdmin = await self.ref.ask(AdminWrite(command), self.timeout)
        return reply

    async def list_services(self, request: ListServicesRequest | None = None) -> ServiceList:
        """A page of services with their instance counts."""
        query = ListServices(request or ListServicesRequest())
        services: ServiceList = await self.ref.ask(query, self.timeout, lane=Lane.LOW)
        return services

    async def get_service(
        self, request: GetServiceRequest | str, *, missing_ok: bool = False
    ) -> ServiceDetail:
        """A page of one service's instances (404 when unknown, unless `missing_ok`).
        A bare name asks for up to 1,000 instances in any status."""
        if isinstance(request, str):
            request = GetServiceRequest(service_name=request, status=None, limit=1000)
        query = GetService(request, missing_ok=missing_ok)
        detail: ServiceDetail = await self.ref.ask(query, self.timeout, lane=Lane.LOW)
        return detail

    async def service_counts(self, limit: int) -> ServiceCounts | None:
        """Instances per service, for the first `limit` services by name and the rest
        summed (None when the registry does not answer)."""
        counts: ServiceCounts | None = await self.ref.ask_or_none(
            GetServiceCounts(limit), self.timeout
        )
        return counts

    async def read_if_changed(self, query: ListServices | GetService) -> Any:
        """`UNCHANGED` when `query.known` is still current, else a new `Stamped` result.
        Build the query with `known=()` when nothing is known yet."""
        if query.known is None:
            raise ValueError("read_if_changed needs a query built with known (() for none)")
        return await self.ref.ask(query, self.timeout, lane=Lane.LOW)
