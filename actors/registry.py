"""The RegistryActor: the single owner of registry state.

Every mutation and query is a message in the actor's mailbox, so concurrent
registrations need no locks. The actor takes its mailbox in drains: each message
is applied to the `RegistryState` (pure, registry_state.py), then, once per drain,
the changes are stored (stream mode), logged, their events handed to the publisher,
the replies delivered and the lease timer re-armed. Heartbeats travel in the
mailbox's urgent lane, queries in its low lane: a flood of either cannot hold up the
other, nor registrations.

In stream mode, who may write is decided by `RoleState` (role_state.py), a pure state
machine: the actor feeds it events (the elector's `LeaseView`, ticks, stream entries)
and `RegistryStream` (registry_stream.py) carries out its effects against JetStream,
the elector and the gateway. The actor's messages and typed client are in
registry_api.py, its log lines in registry_log.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

from actors import role_state as rs
from actors.actor import Actor, ActorDeadError, ActorRef, Envelope, Lane, MailboxFullError, Message
from actors.admin_commands import (
    AdminAction,
    AdminCommand,
    RecentNonces,
    admin_key,
    open_command,
    seal_command,
)
from actors.journal import Entry, StreamFacts
from actors.registry_api import (
    WRITES,
    AdminWrite,
    Deregister,
    EventBatch,
    ExcuseGap,
    ForwardAdmin,
    GetService,
    GetServiceCounts,
    GetStatus,
    Heartbeat,
    ListServices,
    NotLeading,
    Register,
    RegistryStatus,
    ServiceCounts,
    SetMaintenance,
    SignedAdminWrite,
    answer_if_changed,
)
from actors.registry_log import RegistryLog
from actors.registry_state import RegistryState, Transition
from actors.registry_stream import RegistryStream, StreamStore
from actors.stall import StallClock
from protocol import (
    OWNER,
    ErrorCode,
    InstanceReply,
    LeasePolicy,
    ProtocolError,
    RegisterReply,
    RegisterRequest,
    RegistryLimits,
    Status,
)

__all__ = ["RegistryActor", "StreamStore"]


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
        self._stream: RegistryStream | None = None
        """Stream mode: the role machine and the stream (made when the actor starts)."""
        self.events_dropped = 0
        """Events lost because the publisher was not running (watchers notice the gap
        in revisions and read a fresh snapshot)."""
        self._log = RegistryLog()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._ticker: asyncio.TimerHandle | None = None
        self._admin_key: bytes | None = None
        """Stream mode: signs the operator writes passed on to the leader."""
        self._commands_seen = RecentNonces()
        self.commands_refused = 0
        """Operator commands from the bus that were not signed, recent or new."""
        self._refused_logged_at = float("-inf")

    def _new_state(self, cursor_secret: bytes | None) -> RegistryState:
        return RegistryState(
            self._policy,
            limits=self._limits,
            clock=self._clock,
            cursor_secret=cursor_secret,
            keep_stored=self._store is not None,
        )

    @property
    def role(self) -> rs.RoleState | None:
        """Stream mode: who may write (None in memory)."""
        return self._stream.role if self._stream is not None else None

    async def on_start(self) -> None:
        self._clock.start()
        if self._store is not None:
            self._stream = RegistryStream(self._store, self._log, self._view, self._fresh_view)
            await self._stream.start(self._deliver, self._on_closed)
            self._tick()

    async def on_stop(self) -> None:
        self._clock.stop()
        for timer in (self._timer, self._ticker):
            if timer is not None:
                timer.cancel()
        if self._stream is not None:
            await self._stream.stop()

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
            case SetMaintenance(request=change):
                self._check_leading()
                return state.set_maintenance(
                    change.service_name, change.instance_id, change.maintenance,
                    reason=change.reason, by=OWNER, session_id=change.session_id,
                )  # fmt: skip
            case AdminWrite(command=command):
                if self._may_write():
                    return self._apply_command(command)
                return self._seal(command)
            case SignedAdminWrite(sealed=sealed):
                self._check_leading()
                return self._apply_command(self._open(sealed))
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
                stream = self._stream
                if stream is not None and reading == stream.reading:
                    stream.apply(entry)
                return None
            case rs.LeaseView():
                assert self._stream is not None
                self._stream.step(message)
                return None
            case _Tick():
                assert self._stream is not None
                self._stream.tick(asyncio.get_running_loop().time())
                return None
            case ExcuseGap(seconds=seconds):
                self._clock.excuse(seconds)
                return None
            case GetStatus():
                return self._status()
            case GetServiceCounts(limit=limit):
                shown, other, folded = state.service_counts(limit)
                return ServiceCounts(shown, other, folded)
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
        stream = self._stream
        if transitions and stream is not None and not await stream.persist(transitions):
            outcomes = [
                _not_stored(envelope.message, outcome)
                for envelope, outcome in zip(batch, outcomes, strict=True)
            ]
            transitions = []
        if transitions:
            self._log.transitions(transitions)
            self._publish(transitions)
        self._reply(batch, outcomes)
        if stream is not None:
            await stream.carry_out()
        self._arm_timer()

    # -- stream mode -----------------------------------------------------------------

    def _view(self) -> RegistryState:
        return self.state

    def _fresh_view(self, facts: StreamFacts) -> RegistryState:
        self._admin_key = admin_key(facts.cursor_secret)
        self.state = self._new_state(facts.cursor_secret)
        self.state.epoch = facts.epoch
        return self.state

    async def _deliver(self, entry: Entry, reading: int) -> None:
        """A stream entry to the mailbox, in stream order (one lane): a full mailbox, or
        one that does not take messages yet (the follower starts while the actor is
        starting), is waited out, never an entry dropped; an actor that ended takes no
        more."""
        me = self.ref
        while True:
            try:
                me.tell(_Apply(entry, reading))
                return
            except MailboxFullError:
                await asyncio.sleep(_APPLY_BACKOFF)
            except ActorDeadError:
                if self.task is not None:
                    return  # it ran, and ended (on_stop ends the follower)
                await asyncio.sleep(_APPLY_BACKOFF)  # still starting

    def _tick(self) -> None:
        """Tell the role machine the time, every tick, until the actor stops (which
        cancels the next one)."""
        assert self._store is not None
        with contextlib.suppress(ActorDeadError, MailboxFullError):
            self.tell(_TICK, lane=Lane.URGENT)
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_later(self._store.timers.failover_after / 5, self._tick)

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
            role=rs.Role.MEMORY if role is None else role.role,
            ready=role is None or role.ready,
            revision=state.revision,
            epoch=state.epoch,
            instances=state.live,
            offline=state.offline,
            events_dropped=self.events_dropped,
            status_counts={k: v for k, v in state.instances_in.items() if v},
            services=state.services,
            append_latency=self._stream.append_latency.snapshot() if self._stream else None,
            phase=None if role is None else role.phase,
            phase_reason=None if role is None else role.reason,
            leadership_events={} if role is None else dict(role.counts),
            not_serving_reads=(
                self._stream.not_serving_reads(asyncio.get_running_loop().time())
                if self._stream else None
            ),
            records_skipped=self._stream.skipped if self._stream else 0,
            skipped_recent=tuple(self._stream.skipped_recent) if self._stream else (),
        )

    async def _on_closed(self) -> None:
        self.crash(ConnectionError("the registry's NATS connection closed"))

    # -- the named steps of a drain ----------------------------------------------------

    def _register(self, request: RegisterRequest) -> RegisterReply:
        try:
            reply = self.state.register(request)
        except ProtocolError as error:
            self._log.registration(request, error)
            raise
        self._log.registration(request, reply)
        return reply

    def _apply_command(self, command: AdminCommand) -> InstanceReply:
        state = self.state
        if command.action is AdminAction.DEREGISTER:
            return state.remove(command.service_name, command.instance_id, by=command.by)
        return state.set_maintenance(
            command.service_name, command.instance_id, command.action is AdminAction.MAINTENANCE_ON,
            reason=command.reason, by=command.by,
        )  # fmt: skip

    def _seal(self, command: AdminCommand) -> ForwardAdmin:
        if self._admin_key is None:
            raise ProtocolError(
                Status.SERVICE_UNAVAILABLE,
                ErrorCode.ROUTER_UNAVAILABLE,
                "This router is still reading the registry; retry shortly.",
            )
        return ForwardAdmin(seal_command(command, self._admin_key))

    def _open(self, sealed: bytes) -> AdminCommand:
        """A command another router passed on, checked (403 when it is not one)."""
        try:
            if self._admin_key is None:
                raise ProtocolError(
                    Status.FORBIDDEN, ErrorCode.UNAUTHORIZED,
                    "This router keeps its registry in memory: it takes no operator "
                    "command from other routers.",
                )  # fmt: skip
            return open_command(sealed, self._admin_key, self._commands_seen)
        except ProtocolError as error:
            self.commands_refused += 1
            now = asyncio.get_running_loop().time()
            if now - self._refused_logged_at >= 1.0:  # (at most once a second: a flood)
                self._refused_logged_at = now
                self._log.log.warning("operator_command_refused", reason=error.message,
                                      total=self.commands_refused)  # fmt: skip
            raise

    def _publish(self, transitions: list[Transition]) -> None:
        if self._events is None:
            return
        events = tuple(change.event for change in transitions)
        try:
            self._events.tell(EventBatch(events))
        except (ActorDeadError, MailboxFullError) as error:
            self.events_dropped += len(events)
            self._log.log.warning("events_dropped", count=len(events), reason=str(error))

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


def _not_stored(message: Any, outcome: Any) -> Any:
    """What a drain whose changes were not surely stored answers for `message`: writes
    get silence (some may have been stored: an error would be a lie to those clients,
    who send again and get the stored outcome from the leader), queries a 503 (they
    may show changes that were not stored); the status describes the router rather
    than the registry's content, and is answered as it is."""
    if type(message) in (GetStatus, GetServiceCounts):
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
