"""A deterministic simulation of the leadership protocol (FoundationDB style).

Several routers, each a registry host (`RoleState` + `RegistryState`) and an elector
host (`ElectionState`), run against in-memory models of a JetStream stream and a KV
bucket with JetStream's conditional semantics (expected last sequence and message id,
revision compare-and-set, TTL removal, purge, delete and recreate, bucket loss),
driven by one seeded scheduler: every delay, drop, crash, pause and fault comes from
`random.Random(seed)`, and time is a fake clock, so a seed replays exactly.

The hosts mirror `RegistryActor` and `LeaderElector`: an actor takes its mailbox in
drains, awaits each I/O inline (written here as generators that yield I/O requests),
and carries out its machine's effects in order. After every step the world checks the
invariants (`Violation` names the first one broken):

- every stream write after a term marker is the marker writer's (one writer per term);
- a new leader's view, and a leader's view after each append, equal the stream's
  content (it leads with the whole registry: no acknowledged write is lost);
- every acknowledged change is in the stream, and no client got an error for a
  write that was stored;
- once the faults stop, exactly one router leads within the liveness bound, the
  others follow, and every view converges to the stream's content.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from actors.election_state import (
    BucketEnsured,
    CampaignFailed,
    CampaignLost,
    CreateKey,
    DeleteKey,
    ElectionEffect,
    ElectionEvent,
    ElectionState,
    ElectionTimers,
    EnsureBucket,
    KeyRead,
    KeyUnreadable,
    ReadKey,
    RegistryGone,
    Renewed,
    RenewFailed,
    RenewKey,
    RenewRefused,
    TakeKey,
    TellRegistry,
    Won,
)
from actors.election_state import (
    Tick as ElectionTick,
)
from actors.registry_state import RegistryState
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
    StreamHead,
    TakeWrites,
    Tick,
    WriteMarker,
)
from protocol import (
    LeasePolicy,
    LeaseRequest,
    ProtocolError,
    RegisterRequest,
    Status,
)
from protocol.stored import StoredInstance

__all__ = ["Settings", "Violation", "World", "run"]

FAILOVER_AFTER = 0.5
POLICY = LeasePolicy(heartbeat_interval=0.5, lease_ttl=1.5, offline_after=1.0, offline_retention=1.0)
TOMBSTONE_TTL = 1.0
WALL_BASE = 1_700_000_000.0


class Violation(AssertionError):
    """An invariant broke: the message says which, when, and the seed."""


@dataclass(frozen=True)
class Settings:
    """One simulation's shape."""

    routers: int = 3
    chaos_seconds: float = 5.0
    """Faults happen until then; afterwards everything heals."""
    settle_seconds: float = 2.0
    """How long after the faults stop the run goes on (liveness is checked in it)."""
    fault_rate: float = 1.5
    """Faults per simulated second during the chaos phase."""
    instances: int = 8
    liveness_bound: float = FAILOVER_AFTER + 2 * FAILOVER_AFTER / 5
    """Once the faults stop and every router has read the stream: one writer within
    --failover-after plus one renewal (and one tick for the elector to first read the
    key: a router that just started cannot know how long the key it sees has stood)."""


# -- the stream and the bucket, as JetStream keeps them ---------------------------------


@dataclass
class StreamMessage:
    seq: int
    subject: str
    key: tuple[str, str] | None
    """(service, instance) of an instance's message; None for a term marker."""
    stored: StoredInstance | None
    """The record (None: a tombstone, or a marker)."""
    writer: str
    """Who wrote it: a reign (router incarnation and term)."""
    requests: tuple[int, ...] = ()
    removes_at: float = math.inf
    msg_id: str | None = None


class SimStream:
    """The registry's stream: one message kept per subject, conditional appends."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.exists = False
        self.epoch = ""
        self.incarnation = 0
        self.last_seq = 0
        self.by_subject: dict[str, StreamMessage] = {}
        self.log: list[StreamMessage] = []
        """Every message ever stored in this incarnation, in order."""
        self.last_msg_id: str | None = None
        self.last_marker: str | None = None
        """The writer of the last term marker in the log."""
        self.generation = 0
        """+1 whenever content goes behind the routers' backs (created anew, purged)."""
        self.followers: list[Follower] = []

    def create(self) -> None:
        self.exists, self.epoch = True, self._token()
        self.incarnation += 1
        self.generation += 1
        self.last_seq, self.by_subject, self.log, self.last_msg_id = 0, {}, [], None
        self.last_marker = None

    def _token(self) -> str:
        return f"e{self.world.rng.getrandbits(32):08x}"

    def head(self, revision: int) -> StreamHead:
        if not self.exists:
            return StreamHead(None)
        held = [m.seq for m in self.by_subject.values()]
        after = [seq for seq in held if seq > revision]
        return StreamHead(self.epoch, self.last_seq, min(held, default=self.last_seq + 1),
                          len(held), min(after, default=None))  # fmt: skip

    def publish(self, message: StreamMessage, expected_last: int | None, expected_id: str | None,
                ) -> str:  # fmt: skip
        """Store `message` if its conditions hold: "ok", "wrong" or "gone"."""
        if not self.exists:
            return "gone"
        if expected_last is not None and self.last_seq != expected_last:
            return "wrong"
        if expected_id is not None and self.last_msg_id != expected_id:
            return "wrong"
        self.last_seq += 1
        message.seq = self.last_seq
        self.world.on_stored(message)
        self.by_subject[message.subject] = message
        self.log.append(message)
        self.last_msg_id = message.msg_id
        if message.key is None:
            self.last_marker = message.writer
        for follower in self.followers:
            follower.kick()
        return "ok"

    def purge(self) -> None:
        self.by_subject.clear()
        self.generation += 1

    def delete(self) -> None:
        self.exists = False
        self.by_subject.clear()
        for follower in self.followers:
            follower.alive = False
        self.followers.clear()

    def remove_expired(self, now: float) -> None:
        for subject, message in list(self.by_subject.items()):
            if message.removes_at <= now:
                del self.by_subject[subject]

    def content(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        return {
            m.key: _record(m.stored)
            for m in self.by_subject.values()
            if m.key is not None and m.stored is not None
        }


class SimBucket:
    """The leadership KV bucket: one key, revision compare-and-set, a TTL per write."""

    TTL = 10 * FAILOVER_AFTER

    def __init__(self) -> None:
        self.exists = True
        self.sequence = 0
        self.key: tuple[int, str, float] | None = None
        """(revision, value, expires_at)."""

    def read(self, now: float) -> tuple[int, str] | None:
        if self.key is not None and self.key[2] <= now:
            self.key = None
        return None if self.key is None else (self.key[0], self.key[1])

    def write(self, value: str, last: int | None, now: float) -> int | str:
        """`last` None: create (fails if present). Revision, or "wrong" / "gone"."""
        if not self.exists:
            return "gone"
        current = self.read(now)
        if (last is None and current is not None) or (
            last is not None and (current is None or current[0] != last)
        ):
            return "wrong"
        self.sequence += 1
        self.key = (self.sequence, value, now + self.TTL)
        return self.sequence

    def delete(self, last: int, now: float) -> None:
        current = self.read(now)
        if self.exists and current is not None and current[0] == last:
            self.sequence += 1
            self.key = None

    def drop(self) -> None:
        self.exists, self.key = False, None

    def ensure(self) -> None:
        if not self.exists:
            self.exists, self.sequence, self.key = True, 0, None


def _record(stored: StoredInstance | None) -> tuple[Any, ...]:
    assert stored is not None
    return (stored.status, dict(stored.metadata), stored.registered_at, stored.session_hash,
            stored.offline_at)  # fmt: skip


def view_content(state: RegistryState) -> dict[tuple[str, str], tuple[Any, ...]]:
    """A registry view's records as the stream would hold them (no heartbeat times)."""
    return {
        (record.service_name, record.instance_id): _record(record.stored())
        for service in state._services.values()
        for record in service.instances.values()
    }


# -- I/O requests the hosts yield, and their outcomes ---------------------------------


@dataclass(frozen=True)
class IO:
    """An I/O request: its `steps` run against the world one after another (a chained
    append publishes several messages: other routers' may come between), and the last
    one's outcome is the answer; `timeout` is when the waiting actor gives up on it."""

    steps: tuple[Callable[[], Any], ...]
    timeout: float
    connection: str
    """"stream" or "election": which of the router's connections carries it."""


TIMED_OUT = object()
"""The outcome of an I/O request whose answer did not come in time."""

Host = Generator[IO, Any, None]


class Follower:
    """A registry's ordered consumer: hands every stream message after `cursor` to the
    registry, in order, each after a delivery delay; one the registry does not take yet
    (it is starting) is offered again, never dropped."""

    def __init__(self, host: RegistryHost, stream: SimStream, after: int, reading: int) -> None:
        self.host, self.stream, self.cursor, self.reading = host, stream, after, reading
        self.alive = True
        self.scheduled = False

    def kick(self) -> None:
        if self.alive and not self.scheduled and self._next() is not None:
            self.scheduled = True
            self.host.world.later(self.host.world.delay(0.0002, 0.004), self._deliver)

    def _next(self) -> StreamMessage | None:
        after = [m for m in self.stream.by_subject.values() if m.seq > self.cursor]
        return min(after, key=lambda m: m.seq, default=None)

    def _deliver(self) -> None:
        self.scheduled = False
        if not self.alive or not self.host.alive:
            return
        message = self._next()
        if message is None:
            return
        pending = sum(1 for m in self.stream.by_subject.values() if m.seq > message.seq)
        if self.host.mail(("apply", message, pending, self.reading), urgent=False):
            self.cursor = message.seq
        self.kick()


# -- the actors -----------------------------------------------------------------------


class SimActor:
    """An actor with a two-lane mailbox that takes drains and awaits its I/O inline.
    It takes messages once it has started (`accepting`), as `Actor` does."""

    max_batch = 64

    def __init__(self, router: SimRouter) -> None:
        self.router, self.world = router, router.world
        self.urgent: deque[Any] = deque()
        self.normal: deque[Any] = deque()
        self.alive = True
        self.accepting = False
        self.running: Host | None = None
        self.waiting: int | None = None
        """The I/O request this actor awaits (its id)."""
        self.woken = False
        """A run of its mailbox is scheduled."""

    def mail(self, message: Any, *, urgent: bool) -> bool:
        if not (self.alive and self.accepting):
            return False
        (self.urgent if urgent else self.normal).append(message)
        self.world.wake(self)
        return True

    def start_host(self, host: Host) -> None:
        self.running = host
        self.advance(None)

    def advance(self, outcome: Any) -> None:
        """Run the host until it awaits I/O or ends."""
        assert self.running is not None
        try:
            request = self.running.send(outcome)
        except StopIteration:
            self.running = None
            self.world.wake(self)
            return
        self.waiting = self.world.io(self, request)

    def take_drain(self) -> list[Any]:
        batch: list[Any] = []
        while self.urgent and len(batch) < self.max_batch:
            batch.append(self.urgent.popleft())
        while self.normal and len(batch) < self.max_batch:
            batch.append(self.normal.popleft())
        return batch

    def boot(self) -> Host:
        raise NotImplementedError

    def drain(self, batch: list[Any]) -> Host:
        raise NotImplementedError


class RegistryHost(SimActor):
    """`RegistryActor`, as the simulation runs it."""

    def __init__(self, router: SimRouter) -> None:
        super().__init__(router)
        world = router.world
        timers = RoleTimers(FAILOVER_AFTER, load_patience=30.0, tombstone_ttl=TOMBSTONE_TTL)
        self.role = RoleState(timers, world.now)
        self.state = self._new_state()
        self.effects: deque[Effect] = deque()
        self.reading = 0
        self.follower: Follower | None = None
        self.generation = -1
        """The stream generation its view was read from."""
        self.expiry_at = -math.inf
        """When its expiry timer fires next (the latest one armed)."""
        self.facts = ("", -1)
        self.marker = 0
        """The sequence of the last term marker its view knows."""
        """What the last opening found: the stream's epoch and generation."""

    def _new_state(self) -> RegistryState:
        clock = self.router.lease_clock
        return RegistryState(POLICY, clock=clock, wall_clock=lambda: WALL_BASE + clock(),
                             keep_stored=True)  # fmt: skip

    def boot(self) -> Host:
        (opening,) = self.role.start()
        assert isinstance(opening, OpenStream)
        for _ in range(10):  # (as the journal retries its first requests)
            opened = yield self.world.stream_io(self.world.open_stream)
            if opened is not TIMED_OUT:
                break
        else:
            self.router.exit("the registry could not start: JetStream did not answer")
            return
        self.step(self.opened(opening.load))
        yield from self.carry_out()
        self.accepting = True
        self.world.every(FAILOVER_AFTER / 5, self, lambda: self.mail(("tick",), urgent=True))

    def opened(self, load: int) -> Opened:
        stream = self.world.stream
        self.facts = (stream.epoch, stream.generation)
        return Opened(load, stream.epoch, stream.last_seq, len(stream.by_subject))

    def reset_view(self) -> None:
        self.state = self._new_state()
        self.state.epoch, self.generation = self.facts
        self.marker = 0

    def step(self, event: Event) -> None:
        before = self.role.phase
        self.effects.extend(self.role.step(event, self.world.now))
        if self.role.phase is not before:
            self.world.note(f"{self.router.name} {before} -> {self.role.phase}: {self.role.reason}")

    def may_write(self) -> bool:
        return self.role.may_write(self.world.now)

    def drain(self, batch: list[Any]) -> Host:
        state = self.state
        replies: list[tuple[Request, Any]] = []
        owners: list[tuple[int, ...]] = []
        """The request each transition of the drain came from (() for expiry)."""
        for message in batch:
            before = len(state.transitions)
            match message:
                case ("tick",):
                    self.step(Tick(state.revision))
                case ("view", view):
                    self.step(view)
                case ("expire",):
                    if self.may_write() and state.expire(512):
                        self.mail(("expire",), urgent=False)
                case ("apply", stream_message, pending, reading):
                    if reading == self.reading:
                        self.apply(stream_message, pending)
                case ("write", request):
                    outcome: Any = "silent"
                    if self.may_write():
                        try:
                            outcome = self.write(request)
                        except ProtocolError as error:
                            outcome = error
                    replies.append((request, outcome))
            ids = (message[1].number,) if message[0] == "write" else ()
            owners += [ids] * (len(state.transitions) - before)
        transitions = state.take_transitions()
        if transitions:
            stored = yield from self.persist(transitions, owners)
            if not stored:
                replies = [(request, "silent") for request, _ in replies]
        for request, outcome in replies:
            self.world.reply(request, outcome)
        yield from self.carry_out()
        self.arm_expiry()

    def write(self, request: Request) -> Any:
        state = self.state
        if request.kind == "register":
            return state.register(RegisterRequest(
                service_name=request.key[0], instance_id=request.key[1],
                metadata={"n": request.number % 3}, session_id=request.session,
            ))  # fmt: skip
        lease = LeaseRequest(service_name=request.key[0], instance_id=request.key[1],
                             session_id=request.session)  # fmt: skip
        if request.kind == "heartbeat":
            return state.heartbeat(lease)
        return state.deregister(lease)

    def persist(
        self, transitions: list[Any], owners: list[tuple[int, ...]]
    ) -> Generator[IO, Any, bool]:
        expected = transitions[0].event.revision - 1
        writes = [
            (change.service_name, change.instance_id, change.stored, ids)
            for change, ids in zip(transitions, owners, strict=True)
        ]
        outcome = yield self.world.append_io(self, writes, expected)
        if outcome != "ok":
            reason = "timeout" if outcome is TIMED_OUT else outcome
            self.step(StoreFailed(f"append: {reason}"))
            return False
        return True

    def apply(self, message: StreamMessage, pending: int) -> None:
        state = self.state
        if message.seq > state.revision:
            if message.key is None:
                state.skip_to(message.seq)
                self.marker = message.seq
            else:
                state.apply(message.seq, message.key, message.stored)
        if pending == 0:
            self.step(CaughtUp())

    def carry_out(self) -> Host:
        while self.effects:
            effect = self.effects.popleft()
            event = self.role.outdated(effect)
            if event is None:
                event = yield from self.effect(effect)
            if event is not None:
                self.step(event)

    def effect(self, effect: Effect) -> Generator[IO, Any, Event | None]:
        world, state = self.world, self.state
        match effect:
            case OpenStream(load=load):
                outcome = yield world.stream_io(world.open_stream)
                if outcome is TIMED_OUT:
                    return OpenFailed(load, "timeout")
                return self.opened(load)
            case ResetView():
                self.reset_view()
            case Follow(load=load):
                outcome = yield world.stream_io(lambda: world.stream.exists)
                if outcome is TIMED_OUT or not outcome:
                    return FollowFailed(load, "no stream")
                self.stop_following()
                self.reading += 1
                self.follower = Follower(self, world.stream, self.state.revision, self.reading)
                world.stream.followers.append(self.follower)
                self.follower.kick()
                return Following(load)
            case StopFollowing():
                self.reading += 1
                self.stop_following()
            case CheckStream(load=load):
                revision = state.revision
                outcome = yield world.stream_io(lambda: world.stream.head(revision))
                if outcome is TIMED_OUT:
                    return CheckFailed(load, "timeout")
                return Checked(load, outcome, revision, state.live + state.offline, self.marker)
            case SkipTo(sequence=sequence):
                if sequence > state.revision:
                    state.skip_to(sequence)
            case WriteMarker(term=term, expected_last=expected):
                if not self.role.taking_up(term):
                    return None
                outcome = yield world.marker_io(self, term, expected)
                if outcome is TIMED_OUT:
                    return MarkerFailed(term, "timeout")
                if outcome[0] == "ok":
                    self.marker = outcome[1]
                    return MarkerStored(term, outcome[1])
                if outcome[0] == "wrong":
                    return MarkerFenced(term)
                return MarkerFailed(term, outcome[0])
            case GrantLeases():
                state.grant_leases()
            case TakeWrites(take=take):
                if take and self.role.role is not Role.LEADER:
                    return None  # (as the actor: decided earlier in the drain, led no more)
                self.router.serve_writes(take)
            case Report() | Resign():
                self.router.tell_elector(effect)
            case NewEpoch():
                yield world.stream_io(world.new_epoch)
            case GiveUp(reason=reason):
                self.router.exit(reason)
        return None

    def stop_following(self) -> None:
        if self.follower is not None:
            self.follower.alive = False
            self.follower = None

    def arm_expiry(self) -> None:
        if not self.may_write():
            return
        deadline = self.state.next_deadline()
        if deadline is None:
            return
        at = max(self.router.lease_deadline(deadline), self.world.now) + 0.01
        if at < self.expiry_at or self.expiry_at <= self.world.now:
            self.expiry_at = at
            self.world.later(at - self.world.now, lambda: self.mail(("expire",), urgent=False), self)


class ElectorHost(SimActor):
    """`LeaderElector`, as the simulation runs it."""

    def __init__(self, router: SimRouter) -> None:
        super().__init__(router)
        self.timers = ElectionTimers(FAILOVER_AFTER)
        self.election = ElectionState(self.timers, router.world.now)

    def boot(self) -> Host:
        for _ in range(10):  # (as the elector retries while a cluster forms)
            outcome = yield self.world.kv_io(self.world.bucket.ensure, 0.5)
            if outcome is not TIMED_OUT:
                break
        else:
            self.router.exit("the elector could not start: no bucket")
            return
        self.accepting = True
        self.schedule()

    def schedule(self) -> None:
        self.world.later(self.timers.tick, lambda: self.mail(("tick",), urgent=True), self)

    def take_drain(self) -> list[Any]:
        return [self.urgent.popleft()] if self.urgent else []  # (one message at a time)

    def drain(self, batch: list[Any]) -> Host:
        for message in batch:
            match message:
                case ("tick",):
                    yield from self.feed(ElectionTick())
                    self.schedule()
                case Report() | Resign():
                    yield from self.feed(message)

    def feed(self, event: ElectionEvent | Report | Resign) -> Host:
        effects: deque[ElectionEffect] = deque()
        pending: ElectionEvent | Report | Resign | None = event
        while pending is not None or effects:
            if pending is not None:
                before = self.election.phase
                effects.extend(self.election.step(pending, self.world.now))
                if self.election.phase is not before:
                    self.world.note(f"{self.router.name} elector {before} -> "
                                    f"{self.election.phase}: {self.election.reason}")  # fmt: skip
                pending = None
            else:
                pending = yield from self.effect(effects.popleft())

    def effect(self, effect: ElectionEffect) -> Generator[IO, Any, ElectionEvent | None]:
        world, bucket, me = self.world, self.world.bucket, self.router.name
        timeout = self.timers.io_timeout
        match effect:
            case TellRegistry(view=view):
                if not self.router.tell_registry(view):
                    return RegistryGone()
            case ReadKey():
                outcome = yield world.kv_io(lambda: bucket.read(world.now), timeout)
                if outcome is TIMED_OUT:
                    return KeyUnreadable("timeout")
                if outcome is None:
                    return KeyRead(None)
                return KeyRead(outcome[0], ours=outcome[1] == me)
            case CreateKey() | TakeKey():
                sent = world.now
                last = effect.last if isinstance(effect, TakeKey) else None
                outcome = yield world.kv_io(lambda: bucket.write(me, last, world.now), timeout)
                if outcome is TIMED_OUT:
                    return CampaignFailed("timeout")
                if outcome == "wrong":
                    return CampaignLost()
                if outcome == "gone":
                    return CampaignFailed("gone", bucket_missing=True)
                return Won(outcome, sent)
            case RenewKey(last=last):
                sent = world.now
                outcome = yield world.kv_io(lambda: bucket.write(me, last, world.now), timeout)
                if outcome is TIMED_OUT:
                    return RenewFailed("timeout")
                if outcome == "wrong":
                    return RenewRefused()
                if outcome == "gone":
                    return RenewFailed("gone", bucket_missing=True)
                return Renewed(outcome, sent)
            case DeleteKey(last=last):
                yield world.kv_io(lambda: bucket.delete(last, world.now), timeout)
            case EnsureBucket():
                outcome = yield world.kv_io(bucket.ensure, self.timers.bucket_timeout)
                return None if outcome is TIMED_OUT else BucketEnsured()
        return None


# -- a router: the two actors, its gateway's subscription, its process ----------------


class SimRouter:
    def __init__(self, world: World, index: int) -> None:
        self.world, self.index = world, index
        self.incarnation = 0
        self.name = f"r{index}"
        """The router id its elector writes in the key (the same across its actors'
        restarts, a new one for each process)."""
        self.registry: RegistryHost | None = None
        self.elector: ElectorHost | None = None
        self.serving = False
        self.paused_until = -math.inf
        self.pause_started = -1.0
        """When the current pause began (-1: not paused)."""
        self.deferred: list[Callable[[], None]] = []
        """I/O answers that came during a pause, read when it ends."""
        self.paused_total = 0.0
        self.cut: dict[str, float] = {}
        """Connection ("stream", "election") -> until when it is cut."""
        self.running = False

    @property
    def paused(self) -> bool:
        return self.world.now < self.paused_until

    def lease_clock(self) -> float:
        """The registry's StallClock: time the process did not run is left out."""
        if self.paused:
            return self.pause_started - self.paused_total
        return self.world.now - self.paused_total

    def lease_deadline(self, clock_time: float) -> float:
        return clock_time + self.paused_total

    def pause(self, length: float) -> None:
        """SIGSTOP for `length` seconds (longer if paused already)."""
        if not self.paused:
            self.pause_started = self.world.now
        self.paused_until = max(self.paused_until, self.world.now + length)
        self.world.later(length, self.resume)

    def resume(self, early: bool = False) -> None:
        """SIGCONT (at the end of the pause, or `early`, when the faults stop)."""
        if early:
            self.paused_until = self.world.now
        elif self.world.now < self.paused_until or self.pause_started < 0:
            return  # paused again for longer, or resumed already
        self.paused_total += self.world.now - self.pause_started
        self.pause_started = -1.0
        deferred, self.deferred = self.deferred, []
        for deliver in deferred:
            deliver()
        for actor in (self.registry, self.elector):
            if actor is not None:
                self.world.wake(actor)

    def reign(self, term: int) -> str:
        return f"{self.name}:t{term}"

    def start(self) -> None:
        self.incarnation += 1
        self.name = f"r{self.index}#{self.incarnation}"
        self.running, self.serving = True, False
        self.cut.clear()
        self.start_registry()
        self.start_elector()

    def start_registry(self) -> None:
        self.registry = RegistryHost(self)
        self.registry.start_host(self.registry.boot())

    def start_elector(self) -> None:
        self.elector = ElectorHost(self)
        self.elector.start_host(self.elector.boot())

    def kill(self) -> None:
        for actor in (self.registry, self.elector):
            if actor is not None:
                self.world.end(actor)
        self.registry = self.elector = None
        self.running = self.serving = False

    def exit(self, reason: str) -> None:
        """The process ends (the supervisor gave up); an orchestrator starts it again."""
        self.world.note(f"{self.name} exits: {reason}")
        self.kill()
        self.world.later(self.world.delay(0.2, 0.6), self.restart_if_down)

    def restart_if_down(self) -> None:
        if not self.running:
            self.start()

    def crash(self, which: str) -> None:
        actor = self.registry if which == "registry" else self.elector
        if actor is None or not actor.alive or self.paused:
            return  # (a paused process runs nothing: it cannot crash either)
        self.world.end(actor)
        if which == "registry":
            self.registry = None
        else:
            self.elector = None
        self.world.later(self.world.delay(0.0, 0.02), lambda: self.restart_actor(which))

    def restart_actor(self, which: str) -> None:
        if not self.running:
            return
        if which == "registry" and self.registry is None:
            self.start_registry()
        elif which == "elector" and self.elector is None:
            self.start_elector()

    def serve_writes(self, take: bool) -> None:
        self.world.later(self.world.delay(0.0005, 0.003), lambda: self._subscribed(take))

    def _subscribed(self, take: bool) -> None:
        if self.running:
            self.serving = take

    def tell_elector(self, message: Any) -> None:
        if self.elector is not None:
            self.elector.mail(message, urgent=True)

    def tell_registry(self, view: LeaseView) -> bool:
        return self.registry is not None and self.registry.mail(("view", view), urgent=True)


# -- clients --------------------------------------------------------------------------


@dataclass
class Request:
    number: int
    kind: str
    key: tuple[str, str]
    session: str
    sent_at: float
    attempts: int = 1
    answered: Any = None


class Clients:
    """Services that register, heartbeat and deregister instances through the SDK's
    retry rules: no answer within a second is sent again (up to four times)."""

    TIMEOUT = 1.0

    def __init__(self, world: World, instances: int) -> None:
        self.world = world
        self.keys = [(f"s{n % 3}", f"i{n}") for n in range(instances)]
        self.sessions: dict[tuple[str, str], str] = {}
        """Instances a client believes registered, by key: the session it holds."""
        self.numbers = itertools.count(1)
        self.requests: dict[int, Request] = {}
        self.beating: set[tuple[str, str]] = set()

    def act(self) -> None:
        world = self.world
        rng = world.rng
        key = rng.choice(self.keys)
        roll = rng.random()
        if key not in self.sessions and roll < 0.8:
            self.sessions[key] = f"sess-{key[1]}-{rng.getrandbits(24):x}"
            self.beating.add(key)
            self.send("register", key, self.sessions[key])
        elif key in self.sessions and roll < 0.25:
            self.send("deregister", key, self.sessions.pop(key))
            self.beating.discard(key)
        elif key in self.sessions and roll < 0.35:
            session = self.sessions.pop(key)  # the service hangs: its lease runs out
            self.beating.discard(key)
            for request in self.requests.values():
                if request.session == session and request.answered is None:
                    request.answered = "abandoned"

    def heartbeat(self) -> None:
        for key in sorted(self.beating):
            if key in self.sessions:
                self.send("heartbeat", key, self.sessions[key])

    def send(self, kind: str, key: tuple[str, str], session: str) -> Request:
        request = Request(next(self.numbers), kind, key, session, self.world.now)
        self.requests[request.number] = request
        self._transmit(request)
        return request

    def _transmit(self, request: Request) -> None:
        world = self.world
        urgent = request.kind == "heartbeat"
        for router in world.routers:
            registry = router.registry
            if router.serving and registry is not None:
                world.later(world.delay(0.0002, 0.003), partial(registry.mail, ("write", request),
                                                                urgent=urgent))  # fmt: skip
        attempt = request.attempts
        world.later(self.TIMEOUT, lambda: self._timed_out(request, attempt))

    def _timed_out(self, request: Request, attempt: int) -> None:
        if request.answered is not None or request.attempts != attempt:
            return
        if request.attempts > 4:
            request.answered = "gave up"
            return
        request.attempts += 1
        self._transmit(request)

    def answer(self, request: Request, outcome: Any) -> None:
        if request.answered is not None:
            return  # the first answer wins; later ones are ignored
        request.answered = outcome
        if isinstance(outcome, ProtocolError):
            self.world.check_error_reply(request)
            holder = self.sessions.get(request.key) == request.session
            if request.kind == "heartbeat" and outcome.status == Status.NOT_FOUND and holder:
                self.send("register", request.key, request.session)  # the SDK registers again
            elif request.kind in ("heartbeat", "register") and holder:
                self.sessions.pop(request.key)
                self.beating.discard(request.key)


# -- the world ------------------------------------------------------------------------


class World:
    """The simulated cluster, its clock and its scheduler."""

    def __init__(self, seed: int, settings: Settings) -> None:
        self.seed, self.settings = seed, settings
        self.rng = random.Random(seed)
        self.now = 0.0
        self._queue: list[tuple[float, float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._io_ids = itertools.count(1)
        self._io_waiting: dict[int, SimActor] = {}
        self.stream = SimStream(self)
        self.bucket = SimBucket()
        self.routers = [SimRouter(self, n) for n in range(settings.routers)]
        self.clients = Clients(self, settings.instances)
        self.trace: deque[str] = deque(maxlen=400)
        self.stored_requests: dict[int, int] = {}
        """Request number -> stream sequence of a change it caused."""
        self.faults_end = settings.chaos_seconds
        self.resets = 0
        """Stream deletions and purges so far (acknowledged writes before one may go)."""
        self.stable_since: float | None = None
        self.ready_at: float | None = None
        """After the faults stopped: when every router was up and had read the stream."""
        self.clients_stopped = False

    # -- scheduling ---------------------------------------------------------------------

    def later(self, delay: float, action: Callable[[], object], owner: SimActor | None = None) -> None:
        """Run `action` after `delay` (unless `owner` has ended by then); actions due at
        the same time run in a seeded random order."""
        run = action if owner is None else (lambda: action() if owner.alive else None)
        heapq.heappush(self._queue, (self.now + delay, self.rng.random(), next(self._order), run))

    def every(self, period: float, owner: SimActor, action: Callable[[], object]) -> None:
        def again() -> None:
            if owner.alive:
                action()
                self.later(period, again)

        self.later(period, again)

    def delay(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def note(self, line: str) -> None:
        self.trace.append(f"{self.now:8.4f} {line}")

    def wake(self, actor: SimActor) -> None:
        if not actor.woken:
            actor.woken = True
            self.later(0.0, lambda: self._run_actor(actor))

    def _run_actor(self, actor: SimActor) -> None:
        actor.woken = False
        if not actor.alive or actor.running is not None or actor.router.paused:
            return
        batch = actor.take_drain()
        if batch:
            actor.start_host(actor.drain(batch))

    def end(self, actor: SimActor) -> None:
        actor.alive = False
        actor.running = None
        if isinstance(actor, RegistryHost):
            actor.stop_following()

    # -- I/O --------------------------------------------------------------------------

    def io(self, actor: SimActor, request: IO) -> int:
        """Carry `request` out after a network delay (unless its connection is cut, or
        it is lost); its outcome comes back to `actor` after another, or TIMED_OUT."""
        number = next(self._io_ids)
        self._io_waiting[number] = actor
        router = actor.router

        def cut() -> bool:
            return self.now < router.cut.get(request.connection, -math.inf) or (
                self.now < self.faults_end and self.rng.random() < 0.005
            )

        def run(index: int) -> None:
            if cut():
                return  # this step and those after it are lost
            outcome = request.steps[index]()
            if index + 1 < len(request.steps):
                self.later(0.00005, lambda: run(index + 1))
            elif not cut():
                self.later(self.delay(0.0002, 0.004), lambda: self._resume(number, outcome))

        self.later(self.delay(0.0002, 0.004), lambda: run(0))
        self.later(request.timeout, lambda: self._resume(number, TIMED_OUT))
        return number

    def _resume(self, number: int, outcome: Any) -> None:
        actor = self._io_waiting.pop(number, None)
        if actor is None or not actor.alive or actor.waiting != number:
            return
        if actor.router.paused:
            # A paused process reads its socket when it runs again.
            self._io_waiting[number] = actor
            actor.router.deferred.append(lambda: self._resume(number, outcome))
            return
        actor.waiting = None
        actor.advance(outcome)

    def stream_io(self, run: Callable[[], Any]) -> IO:
        return IO((run,), FAILOVER_AFTER, "stream")

    def kv_io(self, run: Callable[[], Any], timeout: float) -> IO:
        return IO((run,), timeout, "election")

    def open_stream(self) -> bool:
        if not self.stream.exists:
            self.stream.create()
            self.note(f"stream created, epoch {self.stream.epoch}")
        return True

    def new_epoch(self) -> None:
        if self.stream.exists:
            self.stream.epoch = self.stream._token()
            self.note(f"new epoch {self.stream.epoch}")

    def marker_io(self, registry: RegistryHost, term: int, expected: int) -> IO:
        reign = registry.router.reign(term)

        def run() -> tuple[str, int]:
            message = StreamMessage(0, "term", None, None, reign)
            outcome = self.stream.publish(message, expected, None)
            if outcome == "ok":
                self.note(f"{reign} marker at {message.seq}")
                self.check_leader_view(registry, f"at its term marker {message.seq}")
            return outcome, message.seq

        return IO((run,), FAILOVER_AFTER, "stream")

    def append_io(self, registry: RegistryHost, writes: list[Any], expected: int) -> IO:
        """A chained append: each write conditional on the one before (the first on the
        stream's last sequence); a foreign write may come between, any may be lost."""
        reign = registry.router.reign(registry.role.term or -1)
        batch = f"{reign}:{self.rng.getrandbits(32):x}"
        stream, incarnation = self.stream, self.stream.incarnation
        chained = len(writes) > 1

        def publish(index: int) -> str:
            service, instance, stored, requests = writes[index]
            if stream.incarnation != incarnation and not stream.exists:
                return "gone"
            message = StreamMessage(
                0, f"i.{service}.{instance}", (service, instance), stored, reign, requests,
                removes_at=self.now + TOMBSTONE_TTL if stored is None else math.inf,
                msg_id=f"{batch}.{index}" if chained else None,
            )  # fmt: skip
            outcome = stream.publish(
                message,
                expected if index == 0 else None,
                f"{batch}.{index - 1}" if index else None,
            )
            if outcome == "ok" and index == len(writes) - 1:
                self.check_leader_view(registry, f"when its append ending at {message.seq} was stored")
            return outcome

        steps = tuple((lambda i=index: publish(i)) for index in range(len(writes)))
        return IO(steps, FAILOVER_AFTER, "stream")

    def reply(self, request: Request, outcome: Any) -> None:
        if isinstance(outcome, str) and outcome == "silent":
            return
        self.later(self.delay(0.0002, 0.003), lambda: self.clients.answer(request, outcome))

    # -- invariants -----------------------------------------------------------------------

    def fail(self, what: str) -> None:
        trace = "\n".join(self.trace)
        raise Violation(f"seed {self.seed}, t={self.now:.4f}: {what}\nlast steps:\n{trace}")

    def on_stored(self, message: StreamMessage) -> None:
        """Every write after a term marker is the marker writer's."""
        if message.key is None:
            return
        last_marker = self.stream.last_marker
        if last_marker != message.writer:
            self.fail(f"write {message.seq} by {message.writer} after {last_marker}'s "
                      "term marker")  # fmt: skip
        for number in message.requests:
            self.stored_requests[number] = message.seq

    def check_leader_view(self, registry: RegistryHost, when: str) -> None:
        """A leader leads with the whole registry: its view is the stream's content."""
        if not self.stream.exists or registry.generation != self.stream.generation:
            return  # (purged or made anew behind its back: its stream check finds out)
        mine, stream = view_content(registry.state), self.stream.content()
        if mine != stream:
            keys = sorted(k for k in mine.keys() | stream.keys() if mine.get(k) != stream.get(k))
            differ = [(k, mine.get(k), stream.get(k)) for k in keys[:3]]
            self.fail(f"{registry.router.name}'s view differs from the stream {when}: {differ}")

    def check_error_reply(self, request: Request) -> None:
        """No client gets an error for a write that was stored (and is still the last
        change to its instance: a later one, by another client, may contradict it)."""
        latest = max((m for m in self.stream.log if m.key == request.key), key=lambda m: m.seq,
                     default=None)  # fmt: skip
        if latest is not None and request.number in latest.requests:
            self.fail(f"request {request.number} ({request.kind} {request.key}) got an error "
                      f"{request.answered!r} but was stored at {self.stored_requests[request.number]}")  # fmt: skip

    def check_acknowledged(self) -> None:
        """Every acknowledged change is in the stream (unless an operator removed it)."""
        if self.resets:
            return
        for request in self.clients.requests.values():
            created = getattr(request.answered, "status", None) == Status.CREATED
            if request.kind == "register" and created and request.number not in self.stored_requests:
                self.fail(f"registration {request.number} {request.key} was acknowledged "
                              "(201) but never stored")  # fmt: skip

    def check_liveness(self) -> None:
        """After the faults stop: once every router is up again and has read the stream
        as it is, one writer within the bound, and it stays."""
        if self.now < self.faults_end:
            return
        routers = self.routers
        if self.ready_at is None:
            # (Leases granted before the faults stopped, and requests lost in them, may
            # run out after: from then on.)
            settled = self.faults_end + max(FAILOVER_AFTER, ElectionTimers(FAILOVER_AFTER).bucket_timeout)
            if self.now >= settled and all(map(self._settled, routers)):
                self.ready_at = self.now
            return
        leaders = sum(r.registry is not None and r.registry.may_write() for r in routers)
        stable = leaders == 1 and all(r.running for r in routers)
        if stable and self.stable_since is None:
            self.stable_since = self.now
        if not stable:
            self.stable_since = None
        waited = self.now - self.ready_at
        if self.stable_since is None and waited > self.settings.liveness_bound:
            phases = {r.name: (r.registry.role.phase if r.registry else None,
                               r.elector.election.phase if r.elector else None) for r in routers}  # fmt: skip
            self.fail(f"no single writer {waited:.3f} s after every router was up and had read "
                      f"the stream (the faults stopped at {self.faults_end}): {phases}")  # fmt: skip

    def _settled(self, router: SimRouter) -> bool:
        """Up, and its view read from the stream as it is (a purge or a new stream that
        came before the faults stopped may still be noticed after)."""
        registry = router.registry
        return (
            registry is not None
            and registry.role.ready
            and registry.generation == self.stream.generation
            and registry.state.epoch == self.stream.epoch
        )

    def divergence(self) -> str | None:
        """What keeps the routers from agreeing with the stream now (None: they do):
        every router runs, one leads, the others follow, and every view is the stream's
        content on the stream's epoch."""
        stream = self.stream.content()
        leaders = 0
        for router in self.routers:
            registry = router.registry
            if registry is None or not registry.accepting:
                return f"{router.name} has no running registry"
            role = registry.role
            leaders += role.phase is Phase.LEADING
            if role.phase not in (Phase.LEADING, Phase.STANDBY):
                return f"{router.name} is {role.phase} ({role.reason})"
            if view_content(registry.state) != stream:
                return f"{router.name}'s view differs from the stream"
            if registry.state.epoch != self.stream.epoch:
                return f"{router.name} is on epoch {registry.state.epoch}, the stream on {self.stream.epoch}"
        return None if leaders == 1 else f"{leaders} routers lead"

    # -- faults -----------------------------------------------------------------------------

    def fault(self) -> None:
        if self.now >= self.faults_end:
            return
        rng = self.rng
        router = rng.choice(self.routers)
        kind = rng.choices(
            ["crash_registry", "crash_elector", "kill", "pause", "cut_stream", "cut_election",
             "delete_stream", "purge_stream", "delete_bucket"],
            weights=[3, 3, 3, 4, 2, 2, 0.4, 0.4, 0.6],
        )[0]  # fmt: skip
        self.note(f"fault: {kind} {router.name}")
        match kind:
            case "crash_registry" | "crash_elector":
                router.crash(kind.removeprefix("crash_"))
            case "kill":
                if router.running:
                    router.kill()
                    self.later(self.delay(0.1, 1.5), router.restart_if_down)
            case "pause":
                router.pause(self.delay(0.05, 1.5))
            case "cut_stream" | "cut_election":
                router.cut[kind.removeprefix("cut_")] = self.now + self.delay(0.1, 1.5)
            case "delete_stream":
                self.resets += 1
                self.stream.delete()
            case "purge_stream":
                self.resets += 1
                self.stream.purge()
            case "delete_bucket":
                self.bucket.drop()

    def heal(self) -> None:
        """The faults stop: pauses and cuts end, every process and actor runs."""
        self.note("faults stop")
        for router in self.routers:
            router.cut.clear()
            if router.pause_started >= 0:
                router.resume(early=True)
            if not router.running:
                router.start()
            else:
                router.restart_actor("registry")
                router.restart_actor("elector")

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        for router in self.routers:
            self.later(self.delay(0.0, 0.3), router.start)
        self.later(0.5, self._client_loop)
        self.later(1.0, self._heartbeats)
        self.later(0.05, self._ttl_loop)
        if settings.fault_rate > 0:
            self.later(self.rng.expovariate(settings.fault_rate), self._fault_loop)
        self.later(settings.chaos_seconds, self.heal)
        end = settings.chaos_seconds + settings.settle_seconds
        self._run_until(end, self.check_liveness)
        self.check_acknowledged()
        # The clients stop; within a second every view must agree with the stream.
        self.clients_stopped = True
        if self._run_until(end + 1.0, lambda: None, until=lambda: self.divergence() is None):
            return
        self.fail(f"the routers did not converge: {self.divergence()}")

    def _run_until(
        self, end: float, check: Callable[[], None], until: Callable[[], bool] | None = None
    ) -> bool:
        """Run the scheduled actions up to `end`, checking after each; True as soon as
        `until` holds."""
        while self._queue and self._queue[0][0] <= end:
            at, _, _, action = heapq.heappop(self._queue)
            self.now = at
            action()
            check()
            if until is not None and until():
                return True
        self.now = end
        return False

    def _client_loop(self) -> None:
        if not self.clients_stopped:
            self.clients.act()
            self.later(self.rng.expovariate(6.0), self._client_loop)

    def _heartbeats(self) -> None:
        if not self.clients_stopped:
            self.clients.heartbeat()
            self.later(POLICY.heartbeat_interval, self._heartbeats)

    def _ttl_loop(self) -> None:
        self.stream.remove_expired(self.now)
        self.later(0.05, self._ttl_loop)

    def _fault_loop(self) -> None:
        self.fault()
        if self.now < self.faults_end:
            self.later(self.rng.expovariate(self.settings.fault_rate), self._fault_loop)


def run(seed: int, settings: Settings | None = None) -> World:
    """Run one schedule; raises `Violation` at the first invariant broken."""
    world = World(seed, settings or Settings())
    world.run()
    return world


def seeds(first: int, count: int) -> Iterator[int]:
    return iter(range(first, first + count))
