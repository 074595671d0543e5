"""The RegistryActor: the single owner of registry state.

Every mutation and query is a message in its mailbox, handled one at a time, so
concurrent registrations need no locks. `RegistryState` does no I/O; the actor adds
the lease timer and the log lines. The functions at the bottom hide the message
plumbing from callers.

Leases: an instance is ONLINE while it renews within `lease_ttl`; then UNHEALTHY;
after `offline_after` more seconds OFFLINE (gone from the live registry, kept
`offline_retention` seconds for admins); then forgotten. Deadlines live in a heap
with one entry per instance, so expiry costs O(log n) per due instance, never a
scan, and a heartbeat only moves a number.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from actors.actor import Actor, MailboxFullError
from actors.supervisor import ActorRef
from protocol import (
    ErrorCode,
    Instance,
    InstanceStatus,
    LeasePolicy,
    LeaseReply,
    LeaseRequest,
    ProtocolError,
    RegisterReply,
    RegisterRequest,
    ServiceDetail,
    ServiceList,
    ServiceSummary,
    Status,
)

__all__ = [
    "Deregister",
    "GetService",
    "Heartbeat",
    "ListServices",
    "Register",
    "RegistryActor",
    "RegistryState",
    "Transition",
    "get_service",
    "list_services",
    "register",
]

log = structlog.get_logger(component="registry")

ONLINE = InstanceStatus.ONLINE
UNHEALTHY = InstanceStatus.UNHEALTHY
OFFLINE = InstanceStatus.OFFLINE


# -- messages -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    """Register (or idempotently re-register) one instance -> `RegisterReply`."""

    request: RegisterRequest


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Renew an instance's lease -> `LeaseReply`."""

    request: LeaseRequest


@dataclass(frozen=True, slots=True)
class Deregister:
    """Take an instance offline -> `LeaseReply`."""

    request: LeaseRequest


@dataclass(frozen=True, slots=True)
class ListServices:
    """Every service with its instance counts -> `ServiceList`."""

    status: InstanceStatus | None = None


@dataclass(frozen=True, slots=True)
class GetService:
    """One service with its instances -> `ServiceDetail`."""

    service_name: str
    status: InstanceStatus | None = None


class _Expire:
    """Timer tick: apply the lease transitions that are due."""


_EXPIRE = _Expire()


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of an instance's status, with the reason, for logs (and events)."""

    service_name: str
    instance_id: str
    old: InstanceStatus | None
    new: InstanceStatus | None
    reason: str


# -- state ----------------------------------------------------------------------


class _Record:
    """One instance. `renewed` is monotonic (deadlines), `last_heartbeat` wall clock
    (display). `generation` invalidates heap entries that no longer apply."""

    __slots__ = (
        "service_name",
        "instance_id",
        "metadata",
        "registered_at",
        "session_id",
        "status",
        "renewed",
        "last_heartbeat",
        "deadline",
        "generation",
    )

    def __init__(
        self, request: RegisterRequest, now: float, wall: float, deadline: float
    ) -> None:
        self.service_name = request.service_name
        self.instance_id = request.instance_id
        self.metadata = request.metadata
        self.registered_at = datetime.fromtimestamp(wall, UTC)
        self.session_id = request.session_id
        self.status = ONLINE
        self.renewed = now
        self.last_heartbeat = wall
        self.deadline = deadline
        self.generation = 0


class RegistryState:
    """Registry state and its transitions; no I/O, no concurrency concerns.

    `clock` is monotonic seconds (deadlines), `wall_clock` Unix seconds (display);
    both injectable so tests can drive time.
    """

    def __init__(
        self,
        policy: LeasePolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy or LeasePolicy()
        self._clock = clock
        self._wall = wall_clock
        self._services: dict[str, dict[str, _Record]] = {}
        self._deadlines: list[tuple[float, int, int, _Record]] = []
        self._sequence = itertools.count()
        self.transitions: list[Transition] = []
        """Status changes since the owner last cleared this list."""

    # -- mutations ---------------------------------------------------------------

    def register(self, request: RegisterRequest) -> RegisterReply:
        """Apply a registration.

        A new (service, instance) pair is created (201), as is one whose previous
        holder went OFFLINE. The same session registering again gets its record back
        (200), lease renewed, metadata replaced if it changed. Anything else naming a
        live instance is a conflict (409): another session, or any registration
        without a session, since that cannot prove ownership.
        """
        now, wall = self._clock(), self._wall()
        instances = self._services.setdefault(request.service_name, {})
        record = instances.get(request.instance_id)
        if record is None or record.status is OFFLINE:
            if record is not None:
                record.generation = -1
            record = _Record(request, now, wall, now + self.policy.lease_ttl)
            instances[request.instance_id] = record
            self._push(record)
            self._note(record, None, ONLINE, "registered")
            return self._register_reply(Status.CREATED, record)
        if request.session_id is None or record.session_id != request.session_id:
            raise ProtocolError(
                Status.CONFLICT,
                ErrorCode.INSTANCE_CONFLICT,
                f"Instance {request.instance_id!r} of service {request.service_name!r} is "
                "already registered by another client. Use a different instance_id, or "
                "retry from the client that registered it.",
                {"existing": self._view(record)},
            )
        if record.metadata != request.metadata:
            record.metadata = request.metadata
        self._renew(record, now, wall, "registered again")
        return self._register_reply(Status.OK, record)

    def heartbeat(self, request: LeaseRequest) -> LeaseReply:
        """Renew a lease (UNHEALTHY comes back ONLINE).

        Raises:
            ProtocolError: 404 unknown or OFFLINE instance (register again), 403 when
                another session owns it.
        """
        record = self._owned(request, "renew")
        self._renew(record, self._clock(), self._wall(), "heartbeat")
        return LeaseReply(
            status=Status.OK,
            instance_status=record.status,
            lease_expires_at=self._lease_expiry(record),
        )

    def deregister(self, request: LeaseRequest) -> LeaseReply:
        """Take an instance OFFLINE at once. Idempotent: an unknown or already
        OFFLINE instance is a 200 too. Raises 403 when another session owns it."""
        try:
            record = self._owned(request, "deregister")
        except ProtocolError as error:
            if error.status == Status.NOT_FOUND:
                return LeaseReply(status=Status.OK, instance_status=OFFLINE)
            raise
        self._go_offline(record, self._clock(), "deregistered")
        return LeaseReply(status=Status.OK, instance_status=OFFLINE)

    def expire(self) -> None:
        """Apply every lease transition that is due now."""
        now = self._clock()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, _, generation, record = heapq.heappop(heap)
            if generation != record.generation:
                continue  # superseded entry
            if record.deadline > now:
                self._push(record)  # renewed since this entry was pushed
                continue
            self._advance(record, now)

    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest pending transition, if any."""
        return self._deadlines[0][0] if self._deadlines else None

    # -- queries -----------------------------------------------------------------

    def list_services(self, status: InstanceStatus | None = None) -> ServiceList:
        """Services sorted by name, with instance counts per status. With `status`,
        only services that have instances in that status, counted by it."""
        services = []
        for name, instances in sorted(self._services.items()):
            counts = Counter(record.status for record in instances.values())
            count = counts[status] if status is not None else len(instances)
            if count:
                services.append(
                    ServiceSummary(service_name=name, instance_count=count, status_counts=dict(counts))
                )
        return ServiceList(services=services, total=len(services))

    def get_service(self, service_name: str, status: InstanceStatus | None = None) -> ServiceDetail:
        """One service's instances sorted by id, optionally only those in `status`.

        Raises:
            ProtocolError: 404 when the registry holds no instance of that service.
        """
        instances = self._services.get(service_name)
        if not instances:
            raise ProtocolError(
                Status.NOT_FOUND,
                ErrorCode.SERVICE_NOT_FOUND,
                f"No service named {service_name!r} is registered. "
                "List the registered services at /api/v1/admin/services.",
                {"service_name": service_name},
            )
        records: Iterable[_Record] = (instances[key] for key in sorted(instances))
        if status is not None:
            records = (record for record in records if record.status is status)
        return ServiceDetail(service_name=service_name, instances=[self._view(r) for r in records])

    # -- internals ---------------------------------------------------------------

    def _owned(self, request: LeaseRequest, action: str) -> _Record:
        instances = self._services.get(request.service_name)
        record = instances.get(request.instance_id) if instances else None
        if record is None or record.status is OFFLINE:
            raise ProtocolError(
                Status.NOT_FOUND,
                ErrorCode.INSTANCE_NOT_FOUND,
                f"Instance {request.instance_id!r} of service {request.service_name!r} is not "
                "registered (the router restarted or its lease ran out); register it again.",
                {"service_name": request.service_name, "instance_id": request.instance_id},
            )
        if record.session_id != request.session_id:
            raise ProtocolError(
                Status.FORBIDDEN,
                ErrorCode.NOT_OWNER,
                f"Only the client that registered instance {request.instance_id!r} may "
                f"{action} it.",
                {"service_name": request.service_name, "instance_id": request.instance_id},
            )
        return record

    def _renew(self, record: _Record, now: float, wall: float, reason: str) -> None:
        record.renewed = now
        record.last_heartbeat = wall
        record.deadline = now + self.policy.lease_ttl
        if record.status is UNHEALTHY:
            record.status = ONLINE
            record.generation += 1
            self._push(record)
            self._note(record, UNHEALTHY, ONLINE, f"{reason}: back online")

    def _advance(self, record: _Record, now: float) -> None:
        policy = self.policy
        if record.status is ONLINE:
            record.status = UNHEALTHY
            record.deadline = record.renewed + policy.lease_ttl + policy.offline_after
            self._push(record)
            self._note(record, ONLINE, UNHEALTHY, f"no heartbeat for {policy.lease_ttl:g} s")
        elif record.status is UNHEALTHY:
            silent = policy.lease_ttl + policy.offline_after
            # From when it was due, so a late tick does not extend the retention.
            self._go_offline(record, record.deadline, f"no heartbeat for {silent:g} s")
        else:
            instances = self._services[record.service_name]
            del instances[record.instance_id]
            if not instances:
                del self._services[record.service_name]
            record.generation = -1
            self._note(record, OFFLINE, None, "offline retention ended")

    def _go_offline(self, record: _Record, since: float, reason: str) -> None:
        old = record.status
        record.status = OFFLINE
        record.deadline = since + self.policy.offline_retention
        record.generation += 1
        self._push(record)
        self._note(record, old, OFFLINE, reason)

    def _push(self, record: _Record) -> None:
        heapq.heappush(
            self._deadlines, (record.deadline, next(self._sequence), record.generation, record)
        )

    def _note(
        self, record: _Record, old: InstanceStatus | None, new: InstanceStatus | None, reason: str
    ) -> None:
        self.transitions.append(
            Transition(record.service_name, record.instance_id, old, new, reason)
        )

    def _lease_expiry(self, record: _Record) -> datetime | None:
        if record.status is OFFLINE:
            return None
        return datetime.fromtimestamp(record.last_heartbeat + self.policy.lease_ttl, UTC)

    def _view(self, record: _Record) -> Instance:
        return Instance(
            service_name=record.service_name,
            instance_id=record.instance_id,
            status=record.status,
            metadata=record.metadata,
            registered_at=record.registered_at,
            last_heartbeat=datetime.fromtimestamp(record.last_heartbeat, UTC),
            lease_expires_at=self._lease_expiry(record),
        )

    def _register_reply(self, status: Status, record: _Record) -> RegisterReply:
        return RegisterReply(
            status=status,
            instance=self._view(record),
            heartbeat_interval=self.policy.heartbeat_interval,
            lease_ttl=self.policy.lease_ttl,
        )


# -- actor ----------------------------------------------------------------------

_TIMER_SLACK = 0.05
"""Due transitions are applied in batches at most this often (seconds)."""


class RegistryActor(Actor):
    """Owns a `RegistryState`; serializes every access through its mailbox and
    keeps one timer armed for the earliest lease deadline."""

    caller_errors = (ProtocolError,)

    def __init__(self, *, policy: LeasePolicy | None = None, mailbox_size: int = 0) -> None:
        super().__init__("registry", mailbox_size=mailbox_size)
        self.state = RegistryState(policy)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def handle(self, message: Any) -> Any:
        kind = type(message)
        try:
            if kind is Heartbeat:
                return self.state.heartbeat(message.request)
            if kind is Register:
                return self._register(message.request)
            if kind is _Expire:
                self._timer_at = float("inf")
                self.state.expire()
                return None
            if kind is Deregister:
                return self.state.deregister(message.request)
            if kind is GetService:
                return self.state.get_service(message.service_name, message.status)
            if kind is ListServices:
                return self.state.list_services(message.status)
            raise TypeError(f"registry cannot handle {kind.__name__}")
        finally:
            if self.state.transitions:
                self._log_transitions()
            self._arm_timer()

    def _register(self, request: RegisterRequest) -> RegisterReply:
        try:
            reply = self.state.register(request)
        except ProtocolError as error:
            log.info(
                "registration",
                service_name=request.service_name,
                instance_id=request.instance_id,
                outcome="conflict",
                status=int(error.status),
            )
            raise
        fields: dict[str, Any] = {}
        if isinstance(request.timestamp, (int, float)):
            fields["client_delay_ms"] = round((time.time() - request.timestamp) * 1000, 3)
        elif isinstance(request.timestamp, datetime) and request.timestamp.tzinfo is not None:
            delay = datetime.now(UTC) - request.timestamp
            fields["client_delay_ms"] = round(delay.total_seconds() * 1000, 3)
        log.info(
            "registration",
            service_name=request.service_name,
            instance_id=request.instance_id,
            outcome="created" if reply.status == Status.CREATED else "repeated",
            status=int(reply.status),
            **fields,
        )
        return reply

    def _log_transitions(self) -> None:
        for change in self.state.transitions:
            if change.old is None:
                continue  # a new instance: already logged as "registration"
            log.info(
                "instance_status_changed",
                service_name=change.service_name,
                instance_id=change.instance_id,
                old=change.old,
                new=change.new,
                reason=change.reason,
            )
        self.state.transitions.clear()

    def _arm_timer(self) -> None:
        deadline = self.state.next_deadline()
        if deadline is None or deadline >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = max(deadline, loop.time() + _TIMER_SLACK)
        self._timer = loop.call_at(self._timer_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self.alive:
            return
        try:
            self.tell(_EXPIRE)
        except MailboxFullError:
            # Busy: try again shortly rather than grow the mailbox past its bound.
            loop = asyncio.get_running_loop()
            self._timer_at = loop.time() + _TIMER_SLACK
            self._timer = loop.call_at(self._timer_at, self._on_timer)


# -- typed calls ----------------------------------------------------------------


async def register(ref: ActorRef, request: RegisterRequest, timeout: float = 5.0) -> RegisterReply:
    """Register through the registry actor (raises `ProtocolError` 409 on conflict)."""
    reply: RegisterReply = await ref.ask(Register(request), timeout)
    return reply


async def heartbeat(ref: ActorRef, request: LeaseRequest, timeout: float = 5.0) -> LeaseReply:
    """Renew a lease (raises `ProtocolError` 403/404)."""
    reply: LeaseReply = await ref.ask(Heartbeat(request), timeout)
    return reply


async def deregister(ref: ActorRef, request: LeaseRequest, timeout: float = 5.0) -> LeaseReply:
    """Take an instance offline (raises `ProtocolError` 403)."""
    reply: LeaseReply = await ref.ask(Deregister(request), timeout)
    return reply


async def list_services(
    ref: ActorRef, status: InstanceStatus | None = None, timeout: float = 5.0
) -> ServiceList:
    """All services with their instance counts."""
    services: ServiceList = await ref.ask(ListServices(status), timeout)
    return services


async def get_service(
    ref: ActorRef, service_name: str, status: InstanceStatus | None = None, timeout: float = 5.0
) -> ServiceDetail:
    """One service's instances (raises `ProtocolError` 404 when unknown)."""
    detail: ServiceDetail = await ref.ask(GetService(service_name, status), timeout)
    return detail
