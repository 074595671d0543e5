"""The RegistryActor: the single owner of registry state, and `RegistryClient`, the
typed way to talk to it.

Every mutation and query is a message in the actor's mailbox, so concurrent
registrations need no locks. The actor takes its mailbox in drains: each message
is applied to the `RegistryState` (pure, registry_state.py), then, once per drain,
the changes are logged, their events handed to the publisher, the replies
delivered and the lease timer re-armed. Heartbeats travel in the mailbox's urgent
lane, queries in its low lane: a flood of either cannot hold up the other, nor
registrations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from actors.actor import Actor, ActorDeadError, ActorRef, Envelope, Lane, MailboxFullError, Message
from actors.registry_state import RegistryState, Transition
from actors.stall import StallClock
from protocol import (
    GetServiceRequest,
    LeasePolicy,
    LeaseReply,
    LeaseRequest,
    ListServicesRequest,
    ProtocolError,
    RegisterReply,
    RegisterRequest,
    RegistryEvent,
    RegistryLimits,
    ServiceDetail,
    ServiceList,
    Status,
)

__all__ = [
    "UNCHANGED",
    "Deregister",
    "EventBatch",
    "GetService",
    "Heartbeat",
    "ListServices",
    "Register",
    "RegistryActor",
    "RegistryClient",
    "Stamped",
]

log = structlog.get_logger(component="registry")


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


class ListServices(Message, frozen=True):
    """A page of services with instance counts -> `ServiceList`. With `known` (the
    stamp of an earlier `Stamped` answer, or `()` for none): `UNCHANGED` or a new
    `Stamped`."""

    request: ListServicesRequest
    known: Any = None


class GetService(Message, frozen=True):
    """A page of one service's instances -> `ServiceDetail`. `missing_ok`: an unknown
    service is an empty page instead of a 404; `max_bytes` bounds the page's encoded
    size; `known` as for `ListServices`."""

    request: GetServiceRequest
    missing_ok: bool = False
    max_bytes: int | None = None
    known: Any = None


class _Expire(Message, frozen=True):
    """Timer tick: apply the lease transitions that are due."""


_EXPIRE: Final = _Expire()


# -- messages the registry sends or answers with -------------------------------------


class EventBatch(Message, frozen=True):
    """The change events of one drain, in revision order, for the publisher."""

    events: tuple[RegistryEvent, ...]


class Stamped(Message, frozen=True):
    """A query result with the stamp that tells whether it is still current."""

    stamp: Any
    result: Any


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()
"""Answer to a query whose `known` stamp is still current."""


class _Failed(Message, frozen=True):
    """A handler's caller error, kept until the drain's replies go out."""

    error: ProtocolError


# -- the actor -----------------------------------------------------------------------

_TIMER_SLACK = 0.05
"""Due transitions are applied in batches at most this often (seconds)."""


class RegistryActor(Actor):
    """Owns a `RegistryState`; serializes every access through its mailbox and
    keeps one timer armed for the earliest lease deadline."""

    caller_errors = (ProtocolError,)
    max_batch = 512
    max_low_per_batch = 16
    """Queries per drain: each costs at most a scan of `SCAN_BUDGET` entries, so a
    flood of them holds registrations and heartbeats up by a few milliseconds."""

    def __init__(
        self,
        *,
        policy: LeasePolicy | None = None,
        mailbox_size: int = 0,
        events: ActorRef | None = None,
        limits: RegistryLimits | None = None,
        cursor_secret: bytes | None = None,
    ) -> None:
        """`events` is the actor that publishes change events (it gets one
        `EventBatch` per drain); without one, events are not published.
        `cursor_secret` signs query cursors (see `RegistryState`)."""
        super().__init__("registry", mailbox_size=mailbox_size)
        policy = policy or LeasePolicy()
        self._clock = StallClock(threshold=max(0.05, min(1.0, policy.lease_ttl / 4)))
        self.state = RegistryState(
            policy, limits=limits, clock=self._clock, cursor_secret=cursor_secret
        )
        self._events = events
        self.events_dropped = 0
        """Events lost because the publisher was not running (watchers notice the gap
        in revisions and read a fresh snapshot)."""
        # A concrete logger (the module's is a lazy proxy, costly per call on this hot
        # path), and whether info lines are wanted at all.
        self._log = log.bind()
        is_enabled_for = getattr(self._log, "is_enabled_for", None)
        self._log_info = is_enabled_for(logging.INFO) if is_enabled_for else True
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")

    async def on_start(self) -> None:
        self._clock.start()

    async def on_stop(self) -> None:
        self._clock.stop()
        if self._timer is not None:
            self._timer.cancel()

    async def handle(self, message: Any) -> Any:
        return self.dispatch(message)

    def dispatch(self, message: Any) -> Any:
        """Apply one message to the state; every transition starts here."""
        state = self.state
        match message:
            case Heartbeat(request=lease):
                return state.heartbeat(lease)
            case Register(request=registration):
                return self._register(registration)
            case Deregister(request=leaving):
                return state.deregister(leaving)
            case GetService(request=get, missing_ok=missing_ok, max_bytes=max_bytes, known=known):
                return _query(
                    known,
                    state.service_stamp(get.service_name),
                    lambda: state.get_service(get, missing_ok=missing_ok, max_bytes=max_bytes),
                )
            case ListServices(request=listing, known=known):
                return _query(known, state.list_stamp(), lambda: state.list_services(listing))
            case _Expire():
                self._timer_at = float("inf")
                state.expire()
                return None
            case _:
                raise TypeError(f"registry cannot handle {type(message).__name__}")

    async def handle_batch(self, batch: list[Envelope]) -> None:
        """Apply the drain, then, once for all of it: log the changes, publish their
        events, deliver the replies and re-arm the lease timer."""
        outcomes: list[Any] = []
        for envelope in batch:
            try:
                outcomes.append(self.dispatch(envelope.message))
            except ProtocolError as error:
                if envelope.reply is None:
                    self.reject(envelope, error)
                    raise
                outcomes.append(_Failed(error))
            except Exception as error:
                self.reject(envelope, error)
                raise
        transitions = self.state.take_transitions()
        if transitions:
            self._log_transitions(transitions)
            self._publish(transitions)
        self._reply(batch, outcomes)
        self._arm_timer()

    # -- the named steps of a drain ----------------------------------------------------

    def _register(self, request: RegisterRequest) -> RegisterReply:
        try:
            reply = self.state.register(request)
        except ProtocolError as error:
            self._log.info(
                "registration",
                service_name=request.service_name,
                instance_id=request.instance_id,
                outcome="conflict" if error.status == Status.CONFLICT else str(error.code),
                status=int(error.status),
            )
            raise
        if self._log_info:
            fields: dict[str, Any] = {}
            if isinstance(request.timestamp, (int, float)):
                fields["client_delay_ms"] = round((time.time() - request.timestamp) * 1000, 3)
            elif isinstance(request.timestamp, datetime) and request.timestamp.tzinfo is not None:
                delay = datetime.now(UTC) - request.timestamp
                fields["client_delay_ms"] = round(delay.total_seconds() * 1000, 3)
            self._log.info(
                "registration",
                service_name=request.service_name,
                instance_id=request.instance_id,
                outcome="created" if reply.status == Status.CREATED else "repeated",
                status=int(reply.status),
                **fields,
            )
        return reply

    def _log_transitions(self, transitions: list[Transition]) -> None:
        if not self._log_info:
            return
        for change in transitions:
            if change.old is None:
                continue  # a new instance: already logged as "registration"
            self._log.info(
                "instance_status_changed" if change.old is not change.new else "instance_changed",
                service_name=change.service_name,
                instance_id=change.instance_id,
                change=change.event.type,
                old=change.old,
                new=change.new,
                reason=change.reason,
                revision=change.event.revision,
            )

    def _publish(self, transitions: list[Transition]) -> None:
        if self._events is None:
            return
        events = tuple(change.event for change in transitions)
        try:
            self._events.tell(EventBatch(events))
        except (ActorDeadError, MailboxFullError) as error:
            self.events_dropped += len(events)
            self._log.warning("events_dropped", count=len(events), reason=str(error))

    def _reply(self, batch: list[Envelope], outcomes: list[Any]) -> None:
        for envelope, outcome in zip(batch, outcomes, strict=True):
            if type(outcome) is _Failed:
                self.reject(envelope, outcome.error)
            else:
                self.resolve(envelope, outcome)

    def _arm_timer(self) -> None:
        deadline = self.state.next_deadline()
        if deadline is None:
            return
        deadline = self._clock.to_monotonic(deadline)
        if deadline >= self._timer_at:
            return  # the armed timer fires in time (checked cheaply)
        loop = asyncio.get_running_loop()
        at = max(deadline, loop.time() + _TIMER_SLACK)
        if at >= self._timer_at:
            return  # the timer already armed fires in time
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._on_timer)

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


def _query(known: Any, stamp: Any, build: Callable[[], Any]) -> Any:
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

    async def read_if_changed(self, query: ListServices | GetService) -> Any:
        """`UNCHANGED` when `query.known` is still current, else a new `Stamped` result.
        Build the query with `known=()` when nothing is known yet."""
        if query.known is None:
            raise ValueError("read_if_changed needs a query built with known (() for none)")
        return await self.ref.ask(query, self.timeout, lane=Lane.LOW)
