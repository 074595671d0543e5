"""The RegistryActor: the single owner of registry state.

Every mutation and query is a message in the actor's mailbox, so concurrent
registrations need no locks. The actor takes its mailbox in drains: each message
is applied to the `RegistryState` (pure, registry_state.py), then, once per drain,
the changes are stored (stream mode), logged, their events handed to the publisher,
the replies delivered and the lease timer re-armed. Heartbeats travel in the
mailbox's urgent lane, queries in its low lane: a flood of either cannot hold up the
other, nor registrations.

In stream mode, who may write is decided by `RoleState` (role_state.py), a pure state
machine: this actor only feeds it events (the elector's `LeaseView`, ticks, what the
stream answered) and carries out its effects against JetStream, the elector and the
gateway. Its messages and typed client are in registry_api.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from actors.actor import Actor, ActorDeadError, ActorRef, Envelope, Lane, MailboxFullError, Message
from actors.errors import FatalError, StartupError
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
from actors.latency import LatencyHistogram
from actors.nats_connection import connect_at_start
from actors.registry_api import (
    UNCHANGED,
    WRITES,
    Deregister,
    EventBatch,
    GetService,
    GetStatus,
    Heartbeat,
    ListServices,
    NotLeading,
    Register,
    RegistryClient,
    RegistryStatus,
    ServeWrites,
    Stamped,
    answer_if_changed,
)
from actors.registry_state import RegistryState, Transition
from actors.role_state import (
    CaughtUp,
    Checked,
    CheckFailed,
    CheckStream,
    Effect,
    Event,
    Follow,
    FollowFailed,
    Following,
    GiveUp,
    GrantLeases,
    LeaseView,
    MarkerFailed,
    MarkerFenced,
    MarkerStored,
    NewEpoch,
    Opened,
    OpenFailed,
    OpenStream,
    Phase,
    Report,
    ResetView,
    Resign,
    Role,
    RoleState,
    RoleTimers,
    SkipTo,
    StopFollowing,
    StoreFailed,
    TakeWrites,
    Tick,
    WriteMarker,
)
from actors.stall import StallClock
from protocol import (
    ErrorCode,
    LeasePolicy,
    ProtocolError,
    RegisterReply,
    RegisterRequest,
    RegistryLimits,
    Status,
)
from protocol.stored import TermMarker, decode_stored_instance, parse_instance_subject
from sdk.connection import GuardedClient, NatsAuth

__all__ = [
    "UNCHANGED",
    "Deregister",
    "EventBatch",
    "GetService",
    "GetStatus",
    "Heartbeat",
    "ListServices",
    "NotLeading",
    "Register",
    "RegistryActor",
    "RegistryClient",
    "RegistryStatus",
    "ServeWrites",
    "Stamped",
    "StreamStore",
]

log = structlog.get_logger(component="registry")


class _Expire(Message, frozen=True):
    """Timer tick: apply the lease transitions that are due."""


class _Tick(Message, frozen=True):
    """The role machine's clock."""


class _Apply(Message, frozen=True):
    """A stream entry, in stream order, from the journal's follower."""

    entry: Entry
    reading: int
    """Which reading of the stream it belongs to (entries of an earlier one, still in
    the mailbox after a reload, are dropped)."""


class _Failed(Message, frozen=True):
    """A handler's caller error, kept until the drain's replies go out."""

    error: ProtocolError


_EXPIRE: Final = _Expire()
_TICK: Final = _Tick()

_APPLY_BACKOFF = 0.005
"""Seconds a stream entry waits for room in a full mailbox before it tries again."""
_TIMER_SLACK = 0.05
"""Due transitions are applied in batches at most this often (seconds)."""
EXPIRE_PER_DRAIN = 512
"""Most lease transitions one drain applies: a mass expiry (every instance of a dead
fleet at once) is spread over drains, each stored on its own, so that no drain keeps
the event loop (and the elector's renewals) waiting long."""
WRITES_PER_APPEND = 1024
"""Most stream writes in one append: a larger drain is stored in several."""


@dataclass(frozen=True, slots=True)
class StreamStore:
    """Where a registry that lives in JetStream finds its stream (stream mode)."""

    nats_url: str
    auth: NatsAuth = field(default_factory=NatsAuth)
    journal: JournalConfig = field(default_factory=JournalConfig)
    timers: RoleTimers = field(default_factory=RoleTimers)
    router_id: str = "ipc-router"
    """Written into the term marker when this router becomes the leader."""
    gateway: ActorRef | None = None
    """The NATS gateway, told `ServeWrites` as leadership comes and goes."""
    elector: ActorRef | None = None
    """The leader elector, told `Report` and `Resign`."""


class RegistryActor(Actor):
    """Owns a `RegistryState`; serializes every access through its mailbox and
    keeps one timer armed for the earliest lease deadline.

    In memory (no `store`) it is the only registry there is. With a `StreamStore` it
    loads the JetStream stream and follows it; while its `RoleState` leads it decides
    every change, stores each drain's changes in the stream before it answers or
    publishes, and grants and expires leases; otherwise it answers queries from what
    the stream says, and writes with silence (`NotLeading`)."""

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
        self.role: RoleState | None = None
        """Stream mode: who may write (made when the actor starts)."""
        self._effects: deque[Effect] = deque()
        self._nc: GuardedClient | None = None
        self._journal: Journal | None = None
        self._append_latency = LatencyHistogram()
        self._facts: StreamFacts | None = None
        """What the last opening of the stream found."""
        self._marker = 0
        """The sequence of the last term marker the view knows."""
        self._reading = 0
        """+1 each time the follower starts or stops."""
        self._phase_since = 0.0
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
        self._ticker: asyncio.TimerHandle | None = None

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
        store = self._store
        if store is None:
            return
        self._nc = GuardedClient()
        await connect_at_start(
            self._nc, store.nats_url, auth=store.auth, timeout=10.0,
            name="ipc-router-registry", closed_cb=self._on_closed,
            error_cb=self._on_error,
        )  # fmt: skip
        self._journal = Journal(self._nc, store.journal, timeout=store.timers.failover_after)
        self._phase_since = asyncio.get_running_loop().time()
        self.role = RoleState(store.timers, self._phase_since)
        # The first opening is part of starting: a stream this router cannot use is a
        # startup error (one line, exit 2), not a restart loop.
        (opening,) = self.role.start()
        assert isinstance(opening, OpenStream)
        try:
            self._facts = await self._journal.open()
        except JournalError as error:
            raise StartupError(str(error)) from None
        self._step(_opened(opening.load, self._facts))
        await self._carry_out()
        self._tick()

    async def on_stop(self) -> None:
        self._clock.stop()
        for timer in (self._timer, self._ticker):
            if timer is not None:
                timer.cancel()
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
                return answer_if_changed(
                    known,
                    state.service_stamp(get.service_name),
                    lambda: state.get_service(get, missing_ok=missing_ok, max_bytes=max_bytes),
                )
            case ListServices(request=listing, max_bytes=max_bytes, known=known):
                self._check_ready()
                return answer_if_changed(
                    known,
                    state.list_stamp(),
                    lambda: state.list_services(listing, max_bytes=max_bytes),
                )
            case _Expire():
                self._timer_at = float("inf")
                if self._may_write() and state.expire(EXPIRE_PER_DRAIN):
                    self.tell(_EXPIRE)  # more are due: the next drain goes on
                return None
            case _Apply(entry=entry, reading=reading):
                if reading == self._reading:
                    self._apply(entry)
                return None
            case LeaseView():
                self._step(message)
                return None
            case _Tick():
                self._step(Tick(self.state.revision))
                return None
            case GetStatus():
                return self._status()
            case _:
                raise TypeError(f"registry cannot handle {type(message).__name__}")

    async def handle_batch(self, batch: list[Envelope]) -> None:
        """Apply the drain, then, once for all of it: store its changes (stream mode),
        log them, publish their events, deliver the replies and re-arm the lease timer;
        then carry out what the role machine decided."""
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
            outcomes = [
                _not_stored(envelope.message, outcome)
                for envelope, outcome in zip(batch, outcomes, strict=True)
            ]
            transitions = []
        if transitions:
            self._log_transitions(transitions)
            self._publish(transitions)
        self._reply(batch, outcomes)
        await self._carry_out()
        self._arm_timer()

    # -- the role machine's effects -----------------------------------------------------

    def _step(self, event: Event) -> None:
        role = self.role
        assert role is not None
        before = role.phase
        self._effects.extend(role.step(event, asyncio.get_running_loop().time()))
        if role.phase is not before:
            self._log_phase(before, role)

    def _log_phase(self, before: Phase, role: RoleState) -> None:
        now = asyncio.get_running_loop().time()
        fields: dict[str, Any] = {"reason": role.reason, "revision": self.state.revision}
        if role.phase is Phase.LEADING and before is Phase.TAKING_UP:
            self._log.info("leadership_taken", term=role.term, instances=self.state.live,
                           seconds=round(now - self._phase_since, 3), **fields)  # fmt: skip
        elif before in _LED and role.phase not in _LED:
            self._log.warning("leadership_given_up", phase=role.phase, **fields)
        elif before is Phase.LOADING and role.phase is Phase.STANDBY:
            self._log.info("registry_loaded", instances=self.state.live, offline=self.state.offline,
                           seconds=round(now - self._phase_since, 3), **fields)  # fmt: skip
        else:
            level = logging.INFO if role.phase in _CALM else logging.WARNING
            self._log.log(level, "role_changed", phase=role.phase, was=before, **fields)
        self._phase_since = now

    async def _carry_out(self) -> None:
        """Carry out the role machine's effects in order, feeding back what came of
        each (which may add more)."""
        effects = self._effects
        while effects:
            event = await self._effect(effects.popleft())
            if event is not None:
                self._step(event)

    async def _effect(self, effect: Effect) -> Event | None:
        journal, store = self._journal, self._store
        assert journal is not None and store is not None
        state = self.state
        match effect:
            case OpenStream(load=load):
                try:
                    self._facts = await journal.open()
                except JournalError as error:
                    return OpenFailed(load, str(error))
                return _opened(load, self._facts)
            case ResetView():
                facts = self._facts
                assert facts is not None
                self.state = self._new_state(facts.cursor_secret)
                self.state.epoch = facts.epoch
                self._marker = 0
            case Follow(load=load):
                try:
                    await self._follow(after=state.revision)
                except JournalError as error:
                    return FollowFailed(load, str(error))
                return Following(load)
            case StopFollowing():
                self._reading += 1
                await journal.stop_following()
            case CheckStream(load=load):
                try:
                    head = await journal.head(state.revision)
                except JournalError as error:
                    return CheckFailed(load, str(error))
                records = state.live + state.offline
                return Checked(load, head, state.revision, records, self._marker)
            case SkipTo(sequence=sequence):
                if sequence > state.revision:
                    state.skip_to(sequence)
            case WriteMarker(term=term, expected_last=expected):
                assert self.role is not None
                if not self.role.taking_up(term):
                    return None  # (decided earlier in the drain; the take-up ended since)
                marker = TermMarker(term=term, router=store.router_id)
                try:
                    self._marker = await journal.write_term(marker, expected)
                    return MarkerStored(term, self._marker)
                except Fenced:
                    return MarkerFenced(term)
                except JournalError as error:
                    return MarkerFailed(term, str(error))
            case GrantLeases():
                state.grant_leases()
                self._log.info("leases_granted", instances=state.live, revision=state.revision)
            case TakeWrites(take=take):
                _tell(store.gateway, ServeWrites(take))
            case Report() | Resign():
                _tell(store.elector, effect)
            case NewEpoch():
                with contextlib.suppress(JournalError):  # (the reload says what it finds)
                    await journal.new_epoch()
            case GiveUp(reason=reason):
                raise FatalError(f"the registry gave up: {reason}")
        return None

    def _tick(self) -> None:
        """Tell the role machine the time, every tick, until the actor stops (which
        cancels the next one)."""
        assert self._store is not None
        with contextlib.suppress(ActorDeadError, MailboxFullError):
            self.tell(_TICK, lane=Lane.URGENT)
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self._store.timers.failover_after / 5, self._tick)

    # -- stream mode -----------------------------------------------------------------

    async def _follow(self, after: int) -> None:
        """Have the stream's entries after `after` come to the mailbox as `_Apply`."""
        assert self._journal is not None
        self._reading += 1
        reading = self._reading
        me = self.ref

        async def on_entry(entry: Entry) -> None:
            # Every entry, in stream order (one lane): a full mailbox, or one that does
            # not take messages yet (the follower starts while the actor is starting), is
            # waited out, never an entry dropped; an actor that ended takes no more.
            while True:
                try:
                    me.tell(_Apply(entry, reading))
                    return
                except MailboxFullError:
                    await asyncio.sleep(_APPLY_BACKOFF)
                except ActorDeadError:
                    if self.task is not None:
                        return  # it ran, and ended (on_stop ends this follower)
                    await asyncio.sleep(_APPLY_BACKOFF)  # still starting

        await self._journal.follow(on_entry, after)

    def _apply(self, entry: Entry) -> None:
        state = self.state
        if entry.sequence > state.revision:
            assert self._journal is not None
            key = parse_instance_subject(self._journal.config.subject_prefix, entry.subject)
            if key is None:
                state.skip_to(entry.sequence)  # a term marker
                self._marker = entry.sequence
            elif entry.forgotten:
                state.apply(entry.sequence, key, None)
            else:
                stored = decode_or_none(entry.data, decode_stored_instance)
                if stored is None:
                    state.skip_to(entry.sequence)
                else:
                    state.apply(entry.sequence, key, stored)
        # (Else our own write coming back, or a repeat after the consumer restarted.)
        if entry.pending == 0:
            self._step(CaughtUp())

    async def _persist(self, transitions: list[Transition]) -> bool:
        """Store a drain's changes, in appends of at most `WRITES_PER_APPEND` writes;
        False (and the role machine told) when they were not all surely stored."""
        assert self._journal is not None
        writes = [
            Write(change.service_name, change.instance_id, change.stored) for change in transitions
        ]
        # No clock check here: the drain's writes were accepted while the leadership
        # held, and every append is conditional: if a successor has written since, it
        # fails.
        expected = transitions[0].event.revision - 1
        loop = asyncio.get_running_loop()
        try:
            for start in range(0, len(writes), WRITES_PER_APPEND):
                chunk = writes[start : start + WRITES_PER_APPEND]
                started = loop.time()
                await self._journal.append(chunk, expected)
                self._append_latency.observe(loop.time() - started)
                expected += len(chunk)
        except JournalError as error:  # (Fenced too)
            self._step(StoreFailed(str(error)))
            return False
        return True

    def _may_write(self) -> bool:
        """In memory, or leading for sure: a leader whose leadership may have lapsed
        (after a pause, say) decides nothing it could get wrong until it knows."""
        role = self.role
        return role is None or role.may_write(asyncio.get_running_loop().time())

    def _check_leading(self) -> None:
        if not self._may_write():
            assert self.role is not None
            raise NotLeading(f"it is {self.role.phase}: {self.role.reason}")

    def _check_ready(self) -> None:
        if self.role is not None and not self.role.ready:
            raise ProtocolError(
                Status.SERVICE_UNAVAILABLE,
                ErrorCode.ROUTER_UNAVAILABLE,
                "This router is still reading the registry; retry shortly.",
            )

    def _status(self) -> RegistryStatus:
        state, role = self.state, self.role
        return RegistryStatus(
            role=Role.MEMORY if role is None else role.role,
            ready=role is None or role.ready,
            revision=state.revision,
            epoch=state.epoch,
            instances=state.live,
            offline=state.offline,
            events_dropped=self.events_dropped,
            status_counts={k: v for k, v in state.instances_in.items() if v},
            services=state.services,
            append_latency=self._append_latency.snapshot() if self._journal else None,
            phase=None if role is None else role.phase,
            phase_reason=None if role is None else role.reason,
            leadership_events={} if role is None else dict(role.counts),
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
        if not self._may_write():
            # Only a sure leader expires (a standby's heap is what it led with).
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, float("inf")
            return
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


_CALM: Final = frozenset({Phase.STANDBY, Phase.TAKING_UP, Phase.LEADING})
"""Phases entered as a matter of course (logged at info; the others at warning)."""
_LED: Final = frozenset({Phase.LEADING, Phase.LAPSED})


def _opened(load: int, facts: StreamFacts) -> Opened:
    return Opened(load, facts.epoch, facts.last_sequence, facts.messages)


def _not_stored(message: Any, outcome: Any) -> Any:
    """What a drain whose changes were not surely stored answers for `message`: writes
    get silence (some may have been stored: an error would be a lie to those clients,
    who send again and get the stored outcome from the leader), queries a 503 (they
    may show changes that were not stored); the status describes the router rather
    than the registry's content, and is answered as it is."""
    if type(message) is GetStatus:
        return outcome
    if isinstance(message, WRITES):
        return _Failed(NotLeading("its changes may not have been stored"))
    return _Failed(
        ProtocolError(
            Status.SERVICE_UNAVAILABLE,
            ErrorCode.ROUTER_UNAVAILABLE,
            "The router could not store a change (it lost its leadership); retry shortly.",
        )
    )


def _tell(ref: ActorRef | None, message: Any) -> None:
    if ref is not None:
        with contextlib.suppress(ActorDeadError, MailboxFullError):
            ref.tell(message, lane=Lane.URGENT)

