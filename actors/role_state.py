"""Who writes: one router's role in the registry, as a pure state machine.

`RoleState` decides, for one registry (one partition of the services, when there are
several), whether this router may write, and what it must do to start or stop: no
I/O and no asyncio inside, time is an input. `RegistryActor` (registry.py) carries
its effects out (reading and writing the stream, telling the elector and the
gateway) and feeds what came of them back in as events, the way etcd's raft is
driven by its host loop.

```
            Opened + CaughtUp + Checked (nothing left to read)
 LOADING ───────────────────────────────────────────▶ STANDBY ◀───────────────┐
    ▲                                                  │   ▲                   │ Following
    │ the stream changed (deleted, recreated,          │   │ the term lapsed,  │
    │ purged, written by another), a store failed,     │   │ or was not taken  │
    │ the stream cannot be followed (every phase)      │   │ up in time        │
    │                                       LeaseView  │   │ (resigns)         │
    │                                        (term)    ▼   │                   │
    │                                              TAKING_UP                   │
    │                                                  │ MarkerStored          │
    │                                                  ▼                       │
    │                     renewed in time ┌──────▶ LEADING ──────┐ LeaseView   │
    │                                     │            │          │ (no term)   │
    │                                     │            │ no       ▼            │
    │                                     └────── LAPSED renewal  STANDING_DOWN ┘
    │                                             (silent) ────▶ (resigns)
    └── GiveUp (loading made no progress for `load_patience`): the process exits
```

The elector (`ElectionState`, election_state.py) tells the registry its view of the
leadership on every tick (`LeaseView`), and the registry answers each with a
`Report` of what it holds: whichever of the two restarts, the other learns it within
one tick. A registry that stops leading for a reason of its own resigns the term.

Requests that take time (opening, checking and following the stream) carry the
number of the load they were made for: an answer that comes after the registry
started reading the stream again belongs to the view it threw away, and is ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import msgspec

__all__ = [
    "CaughtUp",
    "CheckFailed",
    "CheckStream",
    "Checked",
    "Effect",
    "Event",
    "Follow",
    "FollowFailed",
    "Following",
    "GiveUp",
    "GrantLeases",
    "LeaseView",
    "MarkerFailed",
    "MarkerFenced",
    "MarkerStored",
    "NewEpoch",
    "OpenFailed",
    "OpenStream",
    "Opened",
    "Phase",
    "Report",
    "ResetView",
    "Resign",
    "Role",
    "RoleState",
    "RoleTimers",
    "SkipTo",
    "StopFollowing",
    "StoreFailed",
    "StreamHead",
    "TakeWrites",
    "Tick",
    "WriteMarker",
]


class Role(StrEnum):
    """What a router does, as `/healthz` and the metrics say it."""

    LEADER = "leader"
    """It writes (phase LEADING)."""
    STANDBY = "standby"
    """Any other phase: it does not write."""
    MEMORY = "memory"
    """The single router of an in-memory registry."""


class Phase(StrEnum):
    """Where a router stands in the registry (see the module's diagram)."""

    LOADING = "loading"
    """Reading the stream from its start (at start, or again after it changed): it
    answers nothing yet."""
    STANDBY = "standby"
    """Follows the stream and answers queries; may be elected."""
    TAKING_UP = "taking_up"
    """Elected: makes sure it has applied all the stream holds, then writes its term
    marker, conditional on the stream's last sequence."""
    LEADING = "leading"
    """Decides and stores every change, grants and expires leases."""
    LAPSED = "lapsed"
    """Led, but its leadership may have lapsed (no renewal in time): it decides
    nothing and answers no write until the elector renews or ends the term."""
    STANDING_DOWN = "standing_down"
    """Gave the leadership up; follows the stream again from what it stored."""


@dataclass(frozen=True, slots=True)
class RoleTimers:
    """The role's time limits, in seconds (all but one derived from `failover_after`)."""

    failover_after: float = 0.5
    """How long a standby waits for the leader's renewal before it takes over."""
    load_patience: float = 30.0
    """Loading that makes no progress for this long gives up (the process exits, for
    an orchestrator to start it again)."""
    tombstone_ttl: float = 600.0
    """How long the stream keeps a forgotten instance's tombstone: a view that was not
    known to be current for most of that time may have missed one, and reads the stream
    again (a router paused or cut off for minutes)."""

    @property
    def check_every(self) -> float:
        """How often the stream is checked for being deleted, recreated, purged or
        written by another router."""
        return self.failover_after

    @property
    def take_up_within(self) -> float:
        """An elected router that has not written its term marker by then resigns."""
        return self.failover_after

    @property
    def lagging_after(self) -> float:
        """A standby whose view was not known current for this long (its stream checks
        unanswered, its follower behind) stops answering queries until it catches up."""
        return 3 * self.failover_after

    @property
    def stale_after(self) -> float:
        """A view not known to be current for this long is read again."""
        return self.tombstone_ttl * 0.8

    @property
    def lapse_grace(self) -> float:
        """A lapsed leader that hears nothing from its elector for this long stands
        down by itself."""
        return self.failover_after


# -- what comes in ---------------------------------------------------------------------


class StreamHead(msgspec.Struct, frozen=True):
    """The registry's stream as one check found it."""

    epoch: str | None
    """None: there is no such stream."""
    last_sequence: int = 0
    """The stream's last sequence (the last message ever stored, even if removed)."""
    first_sequence: int = 0
    """The sequence of the first message it holds (past the last when it holds none)."""
    messages: int = 0
    """Messages it holds now."""
    next_unapplied: int | None = None
    """The first message after the view's revision, if the stream holds one."""


class Event(msgspec.Struct, frozen=True):
    """Something the role machine is told."""


class Tick(Event, frozen=True):
    """The clock moved (the host ticks every fifth of `failover_after`)."""

    revision: int = 0
    """The view's revision now (loading that moves it makes progress)."""


class Opened(Event, frozen=True):
    """The stream was found (or created), for load number `load`."""

    load: int
    epoch: str
    last_sequence: int
    messages: int


class OpenFailed(Event, frozen=True):
    load: int
    reason: str


class CaughtUp(Event, frozen=True):
    """The follower delivered the last message the stream held."""


class Checked(Event, frozen=True):
    """A check of the stream made for load number `load`, beside the view at that time:
    its revision, its records and the sequence of the last term marker it knows."""

    load: int
    head: StreamHead
    revision: int
    records: int
    marker: int = 0


class CheckFailed(Event, frozen=True):
    load: int
    reason: str


class Following(Event, frozen=True):
    """Following the stream, from the view's revision, for load number `load`."""

    load: int


class FollowFailed(Event, frozen=True):
    load: int
    reason: str


class LeaseView(Event, frozen=True):
    """The elector's view: this router holds the leadership in `term` until
    `valid_until` (None: it does not)."""

    term: int | None
    valid_until: float
    serial: int
    """Echoed in the `Report`, so the elector knows which view it answers."""


class MarkerStored(Event, frozen=True):
    term: int
    sequence: int


class MarkerFenced(Event, frozen=True):
    """The stream had moved on: the follower brings what came in."""

    term: int


class MarkerFailed(Event, frozen=True):
    """No acknowledgement: it may or may not be stored."""

    term: int
    reason: str


class StoreFailed(Event, frozen=True):
    """A drain's changes were not (all surely) stored: what is in memory may differ from
    the stream."""

    reason: str


# -- what goes out --------------------------------------------------------------------


class Effect(msgspec.Struct, frozen=True):
    """Something the host must do."""


class OpenStream(Effect, frozen=True):
    """Find the stream (create it if there is none) -> `Opened` or `OpenFailed`."""

    load: int


class ResetView(Effect, frozen=True):
    """Start an empty view of the stream the last `Opened` found."""


class Follow(Effect, frozen=True):
    """Follow the stream from the view's revision on -> `Following` or `FollowFailed`;
    entries then come in order, and `CaughtUp` when none is left."""

    load: int


class StopFollowing(Effect, frozen=True):
    pass


class CheckStream(Effect, frozen=True):
    """-> `Checked` or `CheckFailed`."""

    load: int


class SkipTo(Effect, frozen=True):
    """The view is at `sequence` (messages between were removed, or hold no instance)."""

    sequence: int


class WriteMarker(Effect, frozen=True):
    """Write the term marker, conditional on the stream's last sequence -> `MarkerStored`,
    `MarkerFenced` or `MarkerFailed` (only while `taking_up(term)` still holds: a
    marker decided earlier in a drain is not written once the take-up ended)."""

    term: int
    expected_last: int


class GrantLeases(Effect, frozen=True):
    """Give every instance a fresh lease (a new leader's first act)."""


class TakeWrites(Effect, frozen=True):
    """Tell the gateway to take (or leave) the write subjects."""

    take: bool


class Resign(Effect, frozen=True):
    """Tell the elector to give `term` up."""

    term: int
    reason: str


class Report(Effect, frozen=True):
    """Answer a `LeaseView`: the term held (None: none) and whether this router could
    be elected now."""

    serial: int
    holding: int | None
    eligible: bool


class NewEpoch(Effect, frozen=True):
    """Give the stream a new epoch (its content was removed behind the routers' backs:
    caches must read everything again)."""


class GiveUp(Effect, frozen=True):
    """Stop the registry for good: the process exits, for an orchestrator to restart."""

    reason: str


_HOLDS_TERM = frozenset({Phase.TAKING_UP, Phase.LEADING, Phase.LAPSED})
_LED = frozenset({Phase.LEADING, Phase.LAPSED})


class RoleState:
    """One registry's role (see the module). `step` takes an event and the time (the
    host's monotonic seconds) and returns the effects, in order."""

    def __init__(self, timers: RoleTimers, now: float) -> None:
        self.timers = timers
        self.phase = Phase.LOADING
        self.reason = "starting"
        """Why the last phase change happened (for logs and /healthz)."""
        self.term: int | None = None
        """The term being taken up or led."""
        self.valid_until = -math.inf
        """While it holds a term: until when the leadership surely holds."""
        self.epoch: str | None = None
        """The epoch of the stream the view belongs to."""
        self.counts: dict[str, int] = {}
        """Leadership events so far, by kind (for metrics)."""
        self._load = 0
        """+1 each time the stream is read again from its start."""
        self._opened = False
        self._opening: int | None = None
        """The load an `OpenStream` is out for (its outcome not in yet)."""
        self._checking: int | None = None
        """The load a `CheckStream` is out for."""
        self._stream_ok = True
        """The last look at the stream was answered (a router that cannot reach the
        stream does not campaign)."""
        self._resigned: int | None = None
        """The term last resigned: a view of it still on its way is not taken up again."""
        self._elected_at = 0.0
        self._current_at = now
        """When the view was last known to hold all the stream held."""
        self._next_check = now + timers.check_every
        self._progress_at = now
        self._progress_revision = 0

    # -- what the host asks ---------------------------------------------------------

    def start(self) -> list[Effect]:
        """The effects to begin with."""
        return self._open()

    def may_write(self, now: float) -> bool:
        """Whether changes may be decided now (leading, and surely still)."""
        return self.phase is Phase.LEADING and now < self.valid_until

    def outdated(self, effect: Effect) -> Event | None:
        """For a stream request of a load given up since it was decided (a reload began
        later in the same drain), the answer to feed back instead of carrying it out:
        the machine ignores any answer to it, and its I/O, which waits a whole timeout
        on a dead link, would only hold up the effects after it (a resignation, leaving
        the write subjects). None: carry `effect` out."""
        match effect:
            case OpenStream(load=load) if load != self._load:
                return OpenFailed(load, "outdated")
            case CheckStream(load=load) if load != self._load:
                return CheckFailed(load, "outdated")
            case Follow(load=load) if load != self._load:
                return FollowFailed(load, "outdated")
        return None

    def taking_up(self, term: int) -> bool:
        """Whether `term` is being taken up still."""
        return self.phase is Phase.TAKING_UP and self.term == term

    @property
    def holding(self) -> int | None:
        """The term taken up or led, if any."""
        return self.term if self.phase in _HOLDS_TERM else None

    @property
    def eligible(self) -> bool:
        """Whether this router could take the leadership up now (it follows the stream,
        and reaches it)."""
        return self.phase is Phase.STANDBY and self._stream_ok

    @property
    def role(self) -> Role:
        """Leader while leading (a lapsed leader is not sure: it says standby)."""
        return Role.LEADER if self.phase is Phase.LEADING else Role.STANDBY

    @property
    def ready(self) -> bool:
        """Whether the view holds the whole stream (queries may be answered)."""
        return self.phase is not Phase.LOADING

    def serving_reads(self, now: float) -> bool:
        """Whether this router should answer queries now: it has read the stream, and
        its view is known to be current (a leader's always is: it writes it), not
        frozen behind a dead link."""
        if self.phase is Phase.LOADING:
            return False
        return self.phase in _LED or now - self._current_at <= self.timers.lagging_after

    @property
    def lagging_since(self) -> float:
        """When the view was last known current."""
        return self._current_at

    # -- the transitions --------------------------------------------------------------

    def step(self, event: Event, now: float) -> list[Effect]:
        """Apply one event; returns what the host must do, in order."""
        match self.phase, event:
            # The elector's view, answered every time with what this router holds.
            case _, LeaseView(term=term, valid_until=valid_until, serial=serial):
                effects = self._on_lease(term, valid_until, now)
                effects.append(Report(serial, self.holding, self.eligible))
                return effects

            case _, Tick(revision=revision):
                return self._on_tick(revision, now)

            # Answers to the requests that take time: only those of the current load
            # count.
            case _, Opened(load=load) | OpenFailed(load=load) if load != self._load:
                self._opening = None if self._opening == load else self._opening
                return []
            case _, Checked(load=load) | CheckFailed(load=load) if load != self._load:
                self._checking = None if self._checking == load else self._checking
                return []
            case _, Following(load=load) | FollowFailed(load=load) if load != self._load:
                return []

            # Loading: open, follow from the start, then make sure nothing is left.
            case Phase.LOADING, Opened(epoch=epoch, last_sequence=last, messages=messages):
                self._opening, self._opened, self._stream_ok = None, True, True
                self.epoch = epoch
                self._progress(now)
                if messages == 0:
                    self._become(Phase.STANDBY, "loaded")
                    self._current_at = now
                    return [ResetView(), SkipTo(last), Follow(self._load)]
                return [ResetView(), Follow(self._load)]
            case _, Opened() | OpenFailed():
                self._opening = None  # (failed: the next tick tries again)
                return []
            case Phase.LOADING, CaughtUp() if self._opened:
                return self._check()
            case Phase.LOADING, CaughtUp():
                return []  # (of the view thrown away, before the new one began)
            case Phase.TAKING_UP, CaughtUp():
                self._current_at = now
                return self._check()
            case _, CaughtUp():
                self._current_at = now  # (all the stream held was delivered)
                return []

            case _, Checked(head=head, revision=revision, records=records, marker=marker):
                self._checking, self._stream_ok = None, True
                return self._on_checked(head, revision, records, marker, now)
            case _, CheckFailed():
                self._checking, self._stream_ok = None, False
                self._count("checks_failed")
                return []

            case Phase.STANDING_DOWN, Following():
                self._become(Phase.STANDBY, "following the stream again")
                return []
            case _, Following():
                return []
            case _, FollowFailed(reason=reason):
                self._stream_ok = False
                return self._reload(f"cannot follow the stream: {reason}", now)

            # Taking up: the term marker.
            case Phase.TAKING_UP, MarkerStored(term=term, sequence=sequence) if term == self.term:
                self._count("terms_taken_up")
                self._current_at = now
                self._become(Phase.LEADING, f"took up term {term}")
                # (Only the leader writes: its own writes need no reading back.)
                return [SkipTo(sequence), GrantLeases(), StopFollowing(), TakeWrites(True)]
            case Phase.TAKING_UP, MarkerFenced(term=term) if term == self.term:
                return []  # the follower brings what came in; then CaughtUp checks again
            case Phase.TAKING_UP, MarkerFailed(term=term, reason=reason) if term == self.term:
                return self._abandon_take_up(f"the term marker was not stored: {reason}", now)
            case _, MarkerStored() | MarkerFenced() | MarkerFailed():
                return []  # of a term given up since

            case _, StoreFailed(reason=reason):
                # (Also after standing down within the drain that accepted them.)
                return self._reload(f"changes were not stored: {reason}", now)

            case _:
                return []  # an event that means nothing in this phase

    def _on_lease(self, term: int | None, valid_until: float, now: float) -> list[Effect]:
        if term is not None and term == self.term:
            self.valid_until = valid_until
        if term != self._resigned:
            self._resigned = None  # (the elector has moved on from it)
        elif term is not None:
            term = None  # told before the elector had our resignation: not ours any more
        match self.phase:
            case Phase.STANDBY if term is not None and valid_until > now and self._stream_ok:
                return self._take_up(term, valid_until, now)
            case Phase.TAKING_UP if term != self.term:
                return self._abandon_take_up("the elector no longer holds the term", now)
            case Phase.LEADING | Phase.LAPSED if term != self.term:
                return self._stand_down("the elector gave the leadership up", now, resign=False)
            case Phase.LAPSED if valid_until > now:
                self._become(Phase.LEADING, "the leadership was renewed")
                return [TakeWrites(True)]
            case _:
                return []

    def _on_tick(self, revision: int, now: float) -> list[Effect]:
        if self.phase is not Phase.LOADING and now - self._current_at > self.timers.stale_after:
            return self._reload("the view fell behind for longer than tombstones last", now)
        match self.phase:
            case Phase.LOADING:
                if revision > self._progress_revision:
                    self._progress(now, revision)
                elif now - self._progress_at > self.timers.load_patience:
                    return [GiveUp(f"the stream could not be read for "
                                   f"{self.timers.load_patience:g} s ({self.reason})")]  # fmt: skip
                if not self._opened:
                    return self._open()
            case Phase.TAKING_UP:
                if now >= self.valid_until or now - self._elected_at >= self.timers.take_up_within:
                    return self._abandon_take_up("the term was not taken up in time", now)
                return self._check()  # still waiting for entries: look again
            case Phase.LEADING if now >= self.valid_until:
                self._count("lapses")
                self._become(Phase.LAPSED, "the leadership was not renewed in time")
                return [TakeWrites(False)]
            case Phase.LAPSED if now >= self.valid_until + self.timers.lapse_grace:
                return self._stand_down("the elector said nothing of the leadership", now)
        if now < self._next_check:
            return []
        self._next_check = now + self.timers.check_every
        return self._check()

    def _on_checked(
        self, head: StreamHead, revision: int, records: int, marker: int, now: float
    ) -> list[Effect]:
        if head.epoch is None:
            return self._reload("the stream was deleted", now, changed=True)
        if self.epoch is not None and head.epoch != self.epoch:
            return self._reload("the stream was replaced (new epoch)", now, changed=True)
        if head.last_sequence < revision:
            return self._reload("the stream went back (recreated or restored)", now, changed=True)
        # Records this view holds were removed from the stream (it holds fewer messages
        # than the view records), or the term marker it knows was (the stream keeps the
        # last one, and the view has read everything there is): a purge. Its finder
        # gives the stream a new epoch, so that every router and cache reads it again.
        caught_up = head.next_unapplied is None
        if head.messages < records or (caught_up and 0 < marker < head.first_sequence):
            self._count("purges_seen")
            return [NewEpoch(), *self._reload("the stream's content was removed", now, changed=True)]
        if caught_up and self.phase is not Phase.LOADING:
            if now - self._current_at > self.timers.stale_after:
                # Nothing left to read, but tombstones may have gone meanwhile unread.
                return self._reload("the view fell behind for longer than tombstones last", now)
            self._current_at = now
        match self.phase:
            case Phase.LOADING:
                if revision > self._progress_revision:
                    self._progress(now, revision)
                if caught_up:
                    self._become(Phase.STANDBY, "loaded")
                    self._current_at = now
                    return [SkipTo(head.last_sequence)]
            case Phase.TAKING_UP if head.next_unapplied is None:
                assert self.term is not None
                if now >= self.valid_until:
                    return self._abandon_take_up("the term lapsed while taking it up", now)
                return [SkipTo(head.last_sequence), WriteMarker(self.term, head.last_sequence)]
            case Phase.LEADING | Phase.LAPSED if head.last_sequence != revision:
                return self._reload(
                    f"another router wrote to the stream (sequence {head.last_sequence})", now
                )
        return []

    # -- the moves --------------------------------------------------------------------

    def _take_up(self, term: int, valid_until: float, now: float) -> list[Effect]:
        self._become(Phase.TAKING_UP, f"elected in term {term}")
        self.term, self.valid_until, self._elected_at = term, valid_until, now
        return self._check()

    def _abandon_take_up(self, reason: str, now: float) -> list[Effect]:
        assert self.term is not None
        effects = self._resign(self.term, reason)
        self._become(Phase.STANDBY, reason)
        return effects

    def _stand_down(self, reason: str, now: float, *, resign: bool = True) -> list[Effect]:
        """Stop leading; everything in the view up to its revision is stored, so it
        follows the stream again from there."""
        self._count("stand_downs")
        effects: list[Effect] = [TakeWrites(False)]
        if resign and self.term is not None:
            effects += self._resign(self.term, reason)
        self._become(Phase.STANDING_DOWN, reason)
        return [*effects, Follow(self._load)]

    def _reload(self, reason: str, now: float, *, changed: bool = False) -> list[Effect]:
        """Read the stream again from its start: the view may differ from it."""
        self._count("stream_changes" if changed else "reloads")
        effects: list[Effect] = []
        if self.phase in _LED:
            effects.append(TakeWrites(False))
        if self.holding is not None:
            effects += self._resign(self.holding, reason)
        self._load += 1
        self._opened = False
        if self.phase is not Phase.LOADING:  # (patience runs from the first reload)
            self._progress(now)
        self._become(Phase.LOADING, reason)
        return [*effects, StopFollowing(), *self._open()]

    def _resign(self, term: int, reason: str) -> list[Effect]:
        self._resigned = term
        return [Resign(term, reason)]

    def _open(self) -> list[Effect]:
        """Open the stream, unless an opening for this load is out already."""
        if self._opening == self._load:
            return []
        self._opening = self._load
        return [OpenStream(self._load)]

    def _check(self) -> list[Effect]:
        """Look at the stream, unless a look is out already (an outdated one comes back
        first: effects are carried out in order)."""
        if self._checking is not None:
            return []
        self._checking = self._load
        return [CheckStream(self._load)]

    def _become(self, phase: Phase, reason: str) -> None:
        self.phase, self.reason = phase, reason
        if phase not in _HOLDS_TERM:
            self.term, self.valid_until = None, -math.inf

    def _progress(self, now: float, revision: int = 0) -> None:
        self._progress_at, self._progress_revision = now, revision

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
