"""The registry actor's stream mode: its role machine (`RoleState`, role_state.py) wired
to the JetStream stream, the elector and the NATS gateway.

`RegistryStream` belongs to one `RegistryActor` and runs in its task only: the actor
hands it events (`step`), and after each drain it carries out the effects the machine
decided (`carry_out`), feeding back what came of each. It reaches the actor's view
through the two callables it is given, never through the actor's fields.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from actors import role_state as rs
from actors.actor import ActorDeadError, ActorRef, Lane, MailboxFullError
from actors.errors import FatalError, StartupError
from actors.journal import (
    Entry,
    Fenced,
    Journal,
    JournalConfig,
    JournalError,
    StreamFacts,
    Write,
)
from actors.latency import LatencyHistogram
from actors.nats_connection import connect_at_start
from actors.registry_api import ServeReads, ServeWrites
from actors.registry_log import RegistryLog
from actors.registry_state import RegistryState, Transition
from protocol.stored import InvalidRecord, TermMarker, parse_instance_subject, read_stored_instance
from sdk.connection import DEAD_LINK_AFTER, GuardedClient, NatsAuth

__all__ = ["WRITES_PER_APPEND", "RegistryStream", "StreamStore"]

WRITES_PER_APPEND = 1024
"""Most stream writes in one append: a larger drain is stored in several."""


@dataclass(frozen=True, slots=True)
class StreamStore:
    """Where a registry that lives in JetStream finds its stream (stream mode)."""

    nats_url: str
    auth: NatsAuth = field(default_factory=NatsAuth)
    journal: JournalConfig = field(default_factory=JournalConfig)
    timers: rs.RoleTimers = field(default_factory=rs.RoleTimers)
    router_id: str = "ipc-router"
    """Written into the term marker when this router becomes the leader."""
    dead_link_after: float = DEAD_LINK_AFTER
    """Seconds of unanswered pings after which the stream connection is dialled again."""
    gateway: ActorRef | None = None
    """The NATS gateway, told `ServeWrites` as leadership comes and goes."""
    elector: ActorRef | None = None
    """The leader elector, told `Report` and `Resign`."""


class RegistryStream:
    """One registry's stream, role and followers (see the module)."""

    def __init__(
        self,
        store: StreamStore,
        log: RegistryLog,
        view: Callable[[], RegistryState],
        fresh_view: Callable[[StreamFacts], RegistryState],
    ) -> None:
        """`view` gives the actor's current view; `fresh_view` makes it start an empty
        one of the stream `StreamFacts` describe (and returns it)."""
        self.store = store
        self._log = log
        self._view = view
        self._fresh_view = fresh_view
        self.role = rs.RoleState(store.timers, 0.0)
        self.append_latency = LatencyHistogram()
        self._effects: deque[rs.Effect] = deque()
        self._nc = GuardedClient()
        self.journal = Journal(self._nc, store.journal, timeout=store.timers.failover_after)
        self._facts: StreamFacts | None = None
        """What the last opening of the stream found."""
        self._marker = 0
        """The sequence of the last term marker the view knows."""
        self.reading = 0
        """+1 each time the follower starts or stops: entries of an earlier follower
        still in the mailbox are dropped."""
        self._serving_reads: bool | None = None
        """What the gateway was last told about queries."""
        self.skipped = 0
        """Stored records left out because they were not valid (since the start)."""
        self.skipped_recent: deque[str] = deque(maxlen=10)
        """The last of them: sequence, subject and why."""

    async def start(
        self, deliver: Callable[[Entry, int], Awaitable[None]], on_closed: Callable[[], Awaitable[None]]
    ) -> None:
        """Connect, open the stream and start reading it. `deliver(entry, reading)`
        brings each entry to the actor's mailbox; `on_closed` runs if the connection
        closes for good.

        Raises:
            StartupError: NATS or the stream cannot be used (one line, exit 2: not a
                restart loop).
        """
        self._deliver = deliver
        await connect_at_start(
            self._nc, self.store.nats_url, auth=self.store.auth, timeout=10.0,
            name="ipc-router-registry", closed_cb=on_closed, error_cb=self._on_error,
            dead_link_after=self.store.dead_link_after,
        )  # fmt: skip
        now = asyncio.get_running_loop().time()
        self._log.started(now)
        self.role = rs.RoleState(self.store.timers, now)
        (opening,) = self.role.start()
        assert isinstance(opening, rs.OpenStream)
        try:
            self._facts = await self.journal.open(patient=True)
        except JournalError as error:
            raise StartupError(str(error)) from None
        self.step(_opened(opening.load, self._facts))
        await self.carry_out()

    async def stop(self) -> None:
        await self.journal.stop_following()
        if not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    def tick(self, now: float) -> None:
        """The clock moved: tell the machine (and the gateway, if it should now answer
        queries or stop)."""
        self.step(rs.Tick(self._view().revision))
        self._tell_reads(now)

    def _tell_reads(self, now: float) -> None:
        serving = self.role.serving_reads(now)
        if serving is not self._serving_reads:
            self._serving_reads = serving
            _tell(self.store.gateway, ServeReads(serving))
            if not serving and self.role.ready:
                self._log.log.warning("queries_left", reason=self.not_serving_reads(now))

    def not_serving_reads(self, now: float) -> str | None:
        """Why this router answers no query now (None: it does)."""
        role = self.role
        if role.serving_reads(now):
            return None
        if not role.ready:
            return "it is reading the stream"
        behind = now - role.lagging_since
        return f"its view has not been known current for {behind:.1f} s (stream unreachable, or it lags)"

    def step(self, event: rs.Event) -> None:
        """Feed the role machine one event (its effects wait for `carry_out`)."""
        role = self.role
        before, now = role.phase, asyncio.get_running_loop().time()
        self._effects.extend(role.step(event, now))
        if role.phase is not before:
            view = self._view()
            self._log.phase(before, role, now, revision=view.revision, instances=view.live,
                            offline=view.offline)  # fmt: skip
            self._tell_reads(now)

    def apply(self, entry: Entry) -> None:
        """One entry of the current follower, in stream order."""
        view = self._view()
        if entry.sequence > view.revision:
            key = parse_instance_subject(self.journal.config.subject_prefix, entry.subject)
            if key is None:
                view.skip_to(entry.sequence)  # a term marker
                self._marker = entry.sequence
            elif entry.forgotten:
                view.apply(entry.sequence, key, None)
            else:
                try:
                    view.apply(entry.sequence, key, read_stored_instance(entry.data, key))
                except InvalidRecord as error:
                    self._skip(entry, str(error))
                    view.skip_to(entry.sequence)
        # (Else our own write coming back, or a repeat after the consumer restarted.)
        if entry.pending == 0:
            self.step(rs.CaughtUp())

    def _skip(self, entry: Entry, reason: str) -> None:
        """A record nobody should have stored (the stream is untrusted input): left out
        of the view, logged, counted, and named in `/healthz`."""
        self.skipped += 1
        named = f"{entry.sequence} {entry.subject}: {reason}"[:300]
        self.skipped_recent.append(named)
        self._log.log.warning("stream_record_skipped", sequence=entry.sequence,
                              subject=entry.subject[:200], reason=reason[:200])  # fmt: skip

    async def persist(self, transitions: list[Transition]) -> bool:
        """Store a drain's changes, in appends of at most `WRITES_PER_APPEND` writes;
        False (and the role machine told) when they were not all surely stored."""
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
                await self.journal.append(chunk, expected)
                self.append_latency.observe(loop.time() - started)
                expected += len(chunk)
        except JournalError as error:  # (Fenced too)
            self.step(rs.StoreFailed(str(error)))
            return False
        return True

    async def carry_out(self) -> None:
        """Carry out the role machine's effects in order, feeding back what came of
        each (which may add more); a stream request the machine gave up on since it was
        decided is answered without I/O (`RoleState.outdated`)."""
        effects = self._effects
        while effects:
            effect = effects.popleft()
            event = self.role.outdated(effect)
            if event is None:
                event = await self._effect(effect)
            if event is not None:
                self.step(event)

    async def _effect(self, effect: rs.Effect) -> rs.Event | None:
        journal, store, view = self.journal, self.store, self._view()
        match effect:
            case rs.OpenStream(load=load):
                try:
                    self._facts = await journal.open()
                except JournalError as error:
                    return rs.OpenFailed(load, str(error))
                return _opened(load, self._facts)
            case rs.ResetView():
                assert self._facts is not None
                self._fresh_view(self._facts)
                self._marker = 0
            case rs.Follow(load=load):
                try:
                    await self._follow(after=view.revision)
                except JournalError as error:
                    return rs.FollowFailed(load, str(error))
                return rs.Following(load)
            case rs.StopFollowing():
                self.reading += 1
                await journal.stop_following()
            case rs.CheckStream(load=load):
                try:
                    head = await journal.head(view.revision)
                except JournalError as error:
                    return rs.CheckFailed(load, str(error))
                return rs.Checked(load, head, view.revision, view.live + view.offline, self._marker)
            case rs.SkipTo(sequence=sequence):
                if sequence > view.revision:
                    view.skip_to(sequence)
            case rs.WriteMarker(term=term, expected_last=expected):
                if not self.role.taking_up(term):
                    return None  # (decided earlier in the drain; the take-up ended since)
                marker = TermMarker(term=term, router=store.router_id)
                try:
                    self._marker = await journal.write_term(marker, expected)
                    return rs.MarkerStored(term, self._marker)
                except Fenced:
                    return rs.MarkerFenced(term)
                except JournalError as error:
                    return rs.MarkerFailed(term, str(error))
            case rs.GrantLeases():
                view.grant_leases()
                self._log.log.info("leases_granted", instances=view.live, revision=view.revision)
            case rs.TakeWrites(take=take):
                if take and self.role.role is not rs.Role.LEADER:
                    # Decided earlier in the drain (a renewal), and its append then failed:
                    # a router that no longer leads must not take writes it answers with
                    # silence, even for the moment before the next TakeWrites(False).
                    return None
                _tell(store.gateway, ServeWrites(take))
            case rs.Report() | rs.Resign():
                _tell(store.elector, effect)
            case rs.NewEpoch():
                with contextlib.suppress(JournalError):  # (the reload says what it finds)
                    await journal.new_epoch()
            case rs.GiveUp(reason=reason):
                raise FatalError(f"the registry gave up: {reason}")
        return None

    async def _follow(self, after: int) -> None:
        """Have the stream's entries after `after` delivered to the actor."""
        self.reading += 1
        reading, deliver = self.reading, self._deliver

        async def on_entry(entry: Entry) -> None:
            await deliver(entry, reading)

        await self.journal.follow(on_entry, after)

    async def _on_error(self, error: Exception) -> None:
        self.journal.note_error(error)
        self._log.log.warning("nats_error", connection="registry", error=repr(error))


def _opened(load: int, facts: StreamFacts) -> rs.Opened:
    return rs.Opened(load, facts.epoch, facts.last_sequence, facts.messages)


def _tell(ref: ActorRef | None, message: object) -> None:
    if ref is not None:
        with contextlib.suppress(ActorDeadError, MailboxFullError):
            ref.tell(message, lane=Lane.URGENT)
