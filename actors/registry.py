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
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import structlog

from actors.actor import Actor, ActorDeadError, ActorRef, Envelope, Lane, MailboxFullError, Message
from actors.errors import StartupError
from actors.journal import (
    Entry,
    Fenced,
    Journal,
    JournalConfig,
    JournalError,
    StreamFacts,
    Write,
    decode_or_none,
)
from actors.latency import HistogramSnapshot, LatencyHistogram
from actors.leadership import Elected, LeaseRenewed, LostLeadership, Resign, Role
from actors.nats_connection import connect_at_start
from actors.registry_state import RegistryState, Transition
from actors.stall import StallClock
from protocol import (
    ErrorCode,
    GetServiceRequest,
    InstanceStatus,
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
from protocol.stored import TermMarker, decode_stored_instance, parse_instance_subject
from sdk.connection import GuardedClient, NatsAuth

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


class _Expire(Message, frozen=True):
    """Timer tick: apply the lease transitions that are due."""


_EXPIRE: Final = _Expire()


# -- messages the registry sends or answers with -------------------------------------


class EventBatch(Message, frozen=True):
    """The change events of one drain, in revision order, for the publisher."""

    events: tuple[RegistryEvent, ...]


class ServeWrites(Message, frozen=True):
    """To the NATS gateway: answer registrations, heartbeats and deregistrations (this
    router leads), or stop (it is a standby)."""

    serve: bool


class _Apply(Message, frozen=True):
    """A stream entry, in stream order, from the journal's follower."""

    entry: Entry
    reading: int
    """Which reading of the stream it belongs to (entries of an earlier one, still in
    the mailbox after a reload, are dropped)."""


class GetStatus(Message, frozen=True):
    """-> `RegistryStatus`."""


class RegistryStatus(msgspec.Struct, frozen=True):
    """What `/healthz` and the metrics report about the registry."""

    role: Role
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

_APPLY_BACKOFF = 0.005
"""Seconds a stream entry waits for room in a full mailbox before it tries again."""
_TIMER_SLACK = 0.05
"""Due transitions are applied in batches at most this often (seconds)."""


@dataclass(frozen=True, slots=True)
class StreamStore:
    """Where a registry that lives in JetStream finds its stream (stream mode)."""

    nats_url: str
    auth: NatsAuth = field(default_factory=NatsAuth)
    journal: JournalConfig = field(default_factory=JournalConfig)
    router_id: str = "ipc-router"
    """Written into the term marker when this router becomes the leader."""
    gateway: ActorRef | None = None
    """The NATS gateway, told `ServeWrites` as leadership comes and goes."""
    elector: ActorRef | None = None
    """The leader elector, told `Resign` when a write was fenced off."""


class RegistryActor(Actor):
    """Owns a `RegistryState`; serializes every access through its mailbox and
    keeps one timer armed for the earliest lease deadline.

    In memory (no `store`) it is the only registry there is. With a `StreamStore` it
    loads the JetStream stream at start and follows it; while it leads (`Elected` by
    the `LeaderElector`) it decides every change, stores each drain's changes in the
    stream before it answers or publishes, and grants leases; otherwise it is a
    standby that answers queries from what the stream says."""

    caller_errors = (ProtocolError,)
    max_batch = 512
    max_low_per_batch = 2
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
        store: StreamStore | None = None,
    ) -> None:
        """`events` is the actor that publishes change events (it gets one
        `EventBatch` per drain); without one, events are not published.
        `cursor_secret` signs query cursors (see `RegistryState`; in stream mode the
        stream's own secret is used). `store`: keep the registry in JetStream."""
        super().__init__("registry", mailbox_size=mailbox_size)
        self._policy = policy or LeasePolicy()
        self._limits = limits
        self._clock = StallClock(threshold=max(0.05, min(1.0, self._policy.lease_ttl / 4)))
        self._store = store
        self.state = self._new_state(cursor_secret)
        self._events = events
        self._role = Role.MEMORY if store is None else Role.STANDBY
        self._ready = store is None
        self._nc: GuardedClient | None = None
        self._journal: Journal | None = None
        self._valid_until = 0.0
        """Leader: loop time until which the leadership surely holds."""
        self._term: int | None = None
        """A term won but not yet taken up (waiting for the stream to be read)."""
        self._leading_term = 0
        """Leader: the term it leads in (what it resigns when it stands down)."""
        self._append_latency = LatencyHistogram()
        self._reload_needed: str | None = None
        self._follow_again = False
        """A leader that stood down follows the stream again from what it wrote."""
        self._reading = 0
        """+1 each time the stream is read from the start."""
        self._loading_since = 0.0
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

    def _new_state(self, cursor_secret: bytes | None) -> RegistryState:
        return RegistryState(
            self._policy,
            limits=self._limits,
            clock=self._clock,
            cursor_secret=cursor_secret,
            keep_stored=self._store is not None,
        )

    async def on_start(self) -> None:
        self._clock.start()
        if self._store is not None:
            await self._open_stream(self._store)

    async def on_stop(self) -> None:
        self._clock.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self._journal is not None:
            await self._journal.stop_following()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    def dispatch(self, message: Any) -> Any:
        """Apply one message to the state; every transition starts here."""
        state = self.state
        match message:
            case Heartbeat(request=lease):
                self._check_leading()
                return state.heartbeat(lease)
            case Register(request=registration):
                self._check_leading()
                return self._register(registration)
            case Deregister(request=leaving):
                self._check_leading()
                return state.deregister(leaving)
            case GetService(request=get, missing_ok=missing_ok, max_bytes=max_bytes, known=known):
                self._check_ready()
                return _query(
                    known,
                    state.service_stamp(get.service_name),
                    lambda: state.get_service(get, missing_ok=missing_ok, max_bytes=max_bytes),
                )
            case ListServices(request=listing, max_bytes=max_bytes, known=known):
                self._check_ready()
                return _query(
                    known,
                    state.list_stamp(),
                    lambda: state.list_services(listing, max_bytes=max_bytes),
                )
            case _Expire():
                self._timer_at = float("inf")
                if self._may_write():
                    state.expire()  # (or the re-armed timer asks again shortly)
                return None
            case _Apply(entry=entry, reading=reading):
                if reading == self._reading:
                    self._apply(entry)
                return None
            case Elected(term=term, valid_until=valid_until):
                self._term, self._valid_until = term, valid_until
                return None
            case LeaseRenewed(valid_until=valid_until):
                self._valid_until = valid_until
                return None
            case LostLeadership(reason=reason):
                self._term = None
                if self._role is Role.LEADER:
                    self._stand_down(reason, resign=False)
                return None
            case GetStatus():
                return self._status()
            case _:
                raise TypeError(f"registry cannot handle {type(message).__name__}")

    async def handle_batch(self, batch: list[Envelope]) -> None:
        """Apply the drain, then, once for all of it: store its changes (stream mode),
        log them, publish their events, deliver the replies and re-arm the lease timer;
        then take up or give up the leadership if that is due."""
        outcomes: list[Any] = []
        for envelope in batch:
            try:
                outcomes.append(self.dispatch(envelope.message))
            except self.caller_errors as error:
                if envelope.reply is None:
                    raise  # nobody to answer: it ends the actor like any other failure
                outcomes.append(_Failed(error))
            except Exception as error:
                self.reject(envelope, error)
                raise
        transitions = self.state.take_transitions()
        if transitions and self._journal is not None and not await self._persist(transitions):
            # What the drain answered may show changes that were not stored, except the
            # status, which describes the router rather than the registry's content
            # (health checks and metrics ask for it and must get an answer).
            outcomes = [
                outcome if type(envelope.message) is GetStatus else _Failed(_not_stored())
                for envelope, outcome in zip(batch, outcomes, strict=True)
            ]
            transitions = []
        if transitions:
            self._log_transitions(transitions)
            self._publish(transitions)
        self._reply(batch, outcomes)
        if self._reload_needed is not None:
            await self._reload(self._reload_needed)
        elif self._follow_again:
            self._follow_again = False
            await self._follow(after=self.state.revision)
        elif self._term is not None and self._ready:
            await self._take_up(self._term)
        self._arm_timer()

    # -- stream mode -----------------------------------------------------------------

    async def _open_stream(self, store: StreamStore) -> None:
        self._nc = GuardedClient()
        await connect_at_start(
            self._nc, store.nats_url, auth=store.auth, timeout=10.0,
            name="ipc-router-registry", closed_cb=self._on_closed,
            error_cb=self._on_error,
        )  # fmt: skip
        self._journal = Journal(self._nc, store.journal)
        try:
            facts = await self._journal.open()
        except JournalError as error:
            raise StartupError(str(error)) from None
        await self._load(facts)

    async def _load(self, facts: StreamFacts) -> None:
        """Read the whole stream (as `facts`, just found, describe it) into a fresh
        state, then follow it."""
        self.state = self._new_state(facts.cursor_secret)
        self.state.epoch = facts.epoch
        self._ready = False
        self._loading_since = asyncio.get_running_loop().time()
        if facts.messages == 0:
            self.state.skip_to(facts.last_sequence)
            self._loaded()
        await self._follow(after=0)

    async def _follow(self, after: int) -> None:
        """Have the stream's entries after `after` come to the mailbox as `_Apply`."""
        assert self._journal is not None
        self._reading += 1
        reading = self._reading
        me = self.ref

        async def on_entry(entry: Entry) -> None:
            # Every entry, in stream order (one lane): a full mailbox is waited out,
            # never an entry dropped.
            while True:
                try:
                    me.tell(_Apply(entry, reading))
                    return
                except MailboxFullError:
                    await asyncio.sleep(_APPLY_BACKOFF)
                except ActorDeadError:
                    return

        await self._journal.follow(on_entry, after)

    def _loaded(self) -> None:
        self._ready = True
        took = asyncio.get_running_loop().time() - self._loading_since
        self._log.info(
            "registry_loaded",
            revision=self.state.revision,
            instances=self.state.live,
            offline=self.state.offline,
            seconds=round(took, 3),
        )

    def _apply(self, entry: Entry) -> None:
        state = self.state
        if entry.sequence <= state.revision:
            pass  # our own write coming back, or a repeat after the consumer restarted
        elif self._role is Role.LEADER:
            # Only the leader writes, and only after its term marker: somebody else did.
            self._reload_needed = f"a write from another router (sequence {entry.sequence})"
            return
        else:
            assert self._journal is not None
            prefix = self._journal.config.subject_prefix
            key = parse_instance_subject(prefix, entry.subject)
            if key is None:
                state.skip_to(entry.sequence)  # a term marker
            elif entry.forgotten:
                state.apply(entry.sequence, key, None)
            else:
                stored = decode_or_none(entry.data, decode_stored_instance)
                if stored is None:
                    state.skip_to(entry.sequence)
                else:
                    state.apply(entry.sequence, key, stored)
        if not self._ready and entry.pending == 0:
            self._loaded()

    async def _take_up(self, term: int) -> None:
        """Become the leader: fence the stream with a term marker written right after
        the last entry we applied, then grant every instance a fresh lease."""
        assert self._journal is not None and self._store is not None
        if asyncio.get_running_loop().time() >= self._valid_until:
            return  # lapsed before we got to it; the elector says so next
        started = asyncio.get_running_loop().time()
        try:
            sequence = await self._journal.write_term(
                TermMarker(term=term, router=self._store.router_id), self.state.revision
            )
        except Fenced:
            return  # entries we have not applied yet: after they are, we try again
        except JournalError as error:
            self._term = None
            self._resign(f"the term marker was not stored: {error}", term)
            return
        self._term = None
        self.state.skip_to(sequence)
        self.state.grant_leases()
        self._role, self._leading_term = Role.LEADER, term
        # Only the leader writes: following its own writes back would only cost.
        await self._journal.stop_following()
        self._reading += 1
        self._serve_writes(True)
        self._log.info(
            "leadership_taken",
            term=term,
            revision=sequence,
            instances=self.state.live,
            seconds=round(asyncio.get_running_loop().time() - started, 3),
        )

    async def _persist(self, transitions: list[Transition]) -> bool:
        """Store a drain's changes; False (and a reload is due) when they were not."""
        assert self._journal is not None
        if self._role is not Role.LEADER:  # the elector's LostLeadership, within the drain
            self._reload_needed = "the leadership was lost before the changes were stored"
            return False
        # No clock check here: the drain's writes were accepted while the leadership
        # held, and the append is conditional: if a successor has written since, it
        # fails. (A clock check would refuse the long drains of a busy leader, whose
        # view of the leadership lags its elector's renewals by one drain.)
        expected = transitions[0].event.revision - 1
        writes = [
            Write(change.service_name, change.instance_id, change.stored) for change in transitions
        ]
        started = asyncio.get_running_loop().time()
        try:
            await self._journal.append(writes, expected)
            self._append_latency.observe(asyncio.get_running_loop().time() - started)
        except JournalError as error:  # (Fenced too)
            self._reload_needed = f"the changes were not stored: {error}"
            return False
        return True

    def _stand_down(self, reason: str, *, resign: bool = True) -> None:
        """Stop leading; unless the elector said so, it gives up the term too (or it
        would keep renewing a leadership that nobody uses, and no other router could
        take it)."""
        if resign:
            self._resign(reason, self._leading_term)
        self._role = Role.STANDBY
        self._follow_again = True  # everything up to state.revision is stored
        self._serve_writes(False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        self._log.warning("leadership_given_up", reason=reason, revision=self.state.revision)

    async def _reload(self, reason: str) -> None:
        """What is in memory may differ from the stream: stand down and read it again."""
        self._reload_needed = None
        if self._role is Role.LEADER:
            self._stand_down(reason)
        self._follow_again = False
        self._log.warning("registry_reloading", reason=reason)
        assert self._journal is not None
        await self._load(await self._journal.open())  # the stream as it is now

    def _resign(self, reason: str, term: int) -> None:
        store = self._store
        if store is not None and store.elector is not None:
            with contextlib.suppress(ActorDeadError, MailboxFullError):
                store.elector.tell(Resign(reason=reason, term=term), lane=Lane.URGENT)

    def _serve_writes(self, serve: bool) -> None:
        store = self._store
        if store is not None and store.gateway is not None:
            with contextlib.suppress(ActorDeadError, MailboxFullError):
                store.gateway.tell(ServeWrites(serve), lane=Lane.URGENT)

    def _may_write(self) -> bool:
        """In memory, or leading for sure: a leader whose leadership may have lapsed
        (after a pause, say) decides nothing it could get wrong until it knows."""
        role = self._role
        return role is Role.MEMORY or (
            role is Role.LEADER and asyncio.get_running_loop().time() < self._valid_until
        )

    def _check_leading(self) -> None:
        if not self._may_write():
            raise ProtocolError(
                Status.SERVICE_UNAVAILABLE,
                ErrorCode.ROUTER_UNAVAILABLE,
                "This router is a standby and another one leads; retry shortly.",
            )

    def _check_ready(self) -> None:
        if not self._ready:
            raise ProtocolError(
                Status.SERVICE_UNAVAILABLE,
                ErrorCode.ROUTER_UNAVAILABLE,
                "This router is still reading the registry; retry shortly.",
            )

    def _status(self) -> RegistryStatus:
        state = self.state
        return RegistryStatus(
            role=self._role,
            ready=self._ready,
            revision=state.revision,
            epoch=state.epoch,
            instances=state.live,
            offline=state.offline,
            events_dropped=self.events_dropped,
            status_counts={k: v for k, v in state.instances_in.items() if v},
            services=state.services,
            append_latency=self._append_latency.snapshot() if self._journal else None,
        )

    async def _on_closed(self) -> None:
        self.crash(ConnectionError("the registry's NATS connection closed"))

    async def _on_error(self, error: Exception) -> None:
        if self._journal is not None:
            self._journal.note_error(error)
        self._log.warning("nats_error", connection="registry", error=repr(error))

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
            # A forgotten instance has no new status: `change=removed` says it all.
            fields = {} if change.new is None else {"new": change.new}
            self._log.info(
                "instance_status_changed" if change.old is not change.new else "instance_changed",
                service_name=change.service_name,
                instance_id=change.instance_id,
                change=change.event.type,
                old=change.old,
                reason=change.reason,
                revision=change.event.revision,
                **fields,
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
        if self._role is Role.STANDBY:
            return  # only the leader expires; a standby's heap is what it led with
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


def _not_stored() -> ProtocolError:
    return ProtocolError(
        Status.SERVICE_UNAVAILABLE,
        ErrorCode.ROUTER_UNAVAILABLE,
        "The change could not be stored (the router lost its leadership); retry shortly.",
    )


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
