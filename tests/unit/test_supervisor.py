"""Unit tests for the one-for-one supervisor (`actors/supervisor.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

import actors.supervisor as supervisor_module
from actors.actor import Actor, ActorDeadError, FutureReply
from actors.supervisor import ActorRef, ChildSpec, RestartIntensityError, Supervisor
from tests.support.actors import bound_actor, incarnation
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(10)


# -- helpers -------------------------------------------------------------------


class Boom(Exception):
    """An unexpected error: crashes a child."""


class StartFailed(Exception):
    """Raised by a child's on_start when told to fail."""


class FakeClock:
    """Stands in for the `time` module inside `actors.supervisor`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Child(Actor):
    """A supervised child that records its lifecycle in a shared journal.

    Messages: "ping" -> ("pong", incarnation), "whoami" -> self,
    ("raise", exc) raises exc, ("block", event) waits on event.
    """

    def __init__(self, factory: ChildFactory, incarnation: int) -> None:
        super().__init__(factory.child_id)
        self.factory = factory
        self.incarnation = incarnation
        self.start_completed = False

    @property
    def key(self) -> str:
        return f"{self.name}#{self.incarnation}"

    async def on_start(self) -> None:
        factory = self.factory
        factory.journal.append(("start", self.key))
        factory.event("entered", self.incarnation).set()
        gate = factory.start_gates.get(self.incarnation)
        if gate is not None:
            await gate.wait()
        if self.incarnation in factory.fail_start_on:
            factory.event("start_failed", self.incarnation).set()
            raise StartFailed(f"{self.key} cannot start")
        self.start_completed = True
        # Last thing on_start does: by the time a waiter runs, the supervisor has
        # already pointed the ref at this instance.
        factory.event("started", self.incarnation).set()

    async def on_stop(self) -> None:
        self.factory.journal.append(("stop", self.key))
        self.factory.event("stopped", self.incarnation).set()

    async def handle(self, message: Any) -> Any:
        if message == "ping":
            return ("pong", self.incarnation)
        if message == "whoami":
            return self
        kind, arg = message
        if kind == "raise":
            raise arg
        if kind == "block":
            await arg.wait()
            return "unblocked"
        raise AssertionError(f"unexpected message {message!r}")


class ChildFactory:
    """`ChildSpec.factory`: makes numbered incarnations and signals their lifecycle."""

    def __init__(
        self,
        child_id: str,
        journal: list[Any],
        *,
        fail_start_on: Iterable[int] = (),
        start_gates: dict[int, asyncio.Event] | None = None,
        cls: type[Child] = Child,
    ) -> None:
        self.child_id = child_id
        self.journal = journal
        self.fail_start_on = set(fail_start_on)
        self.start_gates = start_gates or {}
        self.cls = cls
        self.instances: list[Child] = []
        self._events: dict[tuple[str, int], asyncio.Event] = {}

    def __call__(self) -> Child:
        child = self.cls(self, len(self.instances) + 1)
        self.instances.append(child)
        return child

    def event(self, kind: str, incarnation: int) -> asyncio.Event:
        return self._events.setdefault((kind, incarnation), asyncio.Event())

    async def wait_started(self, incarnation: int) -> Child:
        await self.event("started", incarnation).wait()
        return self.instances[incarnation - 1]


@pytest.fixture
def journal() -> list[Any]:
    return []


@pytest.fixture
async def make_supervisor() -> AsyncIterator[Callable[..., Supervisor]]:
    """Build supervisors; each is stopped at teardown and its outcome retrieved."""
    supervisors: list[Supervisor] = []

    def make(children: list[ChildSpec], **kwargs: Any) -> Supervisor:
        supervisor = Supervisor(children, **kwargs)
        supervisors.append(supervisor)
        return supervisor

    yield make
    for supervisor in supervisors:
        # Bounded so that a regression in stop() fails the test instead of hanging.
        await asyncio.wait_for(supervisor.stop(), 5)
        done = supervisor.done
        if done is not None and done.done() and not done.cancelled():
            done.exception()  # mark retrieved: no "exception never retrieved" noise


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A clock the test moves by hand, used for the restart-intensity window."""
    fake = FakeClock()
    monkeypatch.setattr(supervisor_module, "time", fake)
    return fake


def specs(*factories: ChildFactory, shutdown_timeout: float = 5.0) -> list[ChildSpec]:
    return [
        ChildSpec(id=f.child_id, factory=f, shutdown_timeout=shutdown_timeout) for f in factories
    ]


async def crash_and_wait_for_restart(supervisor: Supervisor, factory: ChildFactory) -> Child:
    """Crash the current incarnation of a child and wait for the next one."""
    crashed = len(factory.instances)
    incarnation(supervisor.ref(factory.child_id)).crash(Boom(f"crash of #{crashed}"))
    return await factory.wait_started(crashed + 1)


# A crash sequence: (child, seconds after the crash before it) for each crash.
Crashes = list[tuple[str, float]]


async def started_abc(
    make_supervisor: Callable[..., Supervisor], journal: list[Any], max_restarts: int
) -> tuple[Supervisor, dict[str, ChildFactory]]:
    """A started supervisor of children "a", "b" and "c" that allows `max_restarts`
    restarts within 10 s."""
    factories = {name: ChildFactory(name, journal) for name in "abc"}
    supervisor = make_supervisor(
        specs(*factories.values()), max_restarts=max_restarts, within_seconds=10.0
    )
    await supervisor.start()
    return supervisor, factories


async def crash_each_and_wait_for_restarts(
    supervisor: Supervisor, factories: dict[str, ChildFactory], clock: FakeClock, crashes: Crashes
) -> None:
    for child, seconds_later in crashes:
        clock.now += seconds_later
        await crash_and_wait_for_restart(supervisor, factories[child])


def crashes_of(child: str, crashes: Crashes) -> int:
    return [crashed for crashed, _ in crashes].count(child)


# -- start / stop order --------------------------------------------------------


async def test_children_start_in_spec_order_and_stop_in_reverse_order(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a, b, c = (ChildFactory(name, journal) for name in "abc")
    supervisor = make_supervisor(specs(a, b, c))

    await supervisor.start()
    assert journal == [("start", "a#1"), ("start", "b#1"), ("start", "c#1")]

    await supervisor.stop()
    assert journal[3:] == [("stop", "c#1"), ("stop", "b#1"), ("stop", "a#1")]
    assert not any(supervisor.ref(name).alive for name in "abc")


async def test_start_returns_only_after_each_child_on_start_completed(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    gate_a, gate_b = asyncio.Event(), asyncio.Event()
    a = ChildFactory("a", journal, start_gates={1: gate_a})
    b = ChildFactory("b", journal, start_gates={1: gate_b})
    supervisor = make_supervisor(specs(a, b))

    starting = asyncio.create_task(supervisor.start())
    await a.event("entered", 1).wait()
    assert not starting.done()
    assert b.instances == []  # b waits for a's on_start to finish

    gate_a.set()
    await b.event("entered", 1).wait()
    assert a.instances[0].start_completed
    assert not starting.done()

    gate_b.set()
    await starting
    assert b.instances[0].start_completed
    assert supervisor.ref("a").alive and supervisor.ref("b").alive


async def test_refs_reach_the_running_children_after_start(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a, b = ChildFactory("a", journal), ChildFactory("b", journal)
    supervisor = make_supervisor(specs(a, b))
    await supervisor.start()

    assert supervisor.ref("a") is supervisor.refs["a"]
    assert supervisor.ref("a").id == "a"
    assert incarnation(supervisor.ref("a")) is a.instances[0]
    assert await supervisor.ref("a").ask("ping") == ("pong", 1)
    assert await supervisor.ref("b").ask("whoami") is b.instances[0]
    assert supervisor.done is not None and not supervisor.done.done()


# -- restarts ------------------------------------------------------------------


@dataclass(frozen=True)
class ChildEnding:
    """One way for a child to end without the supervisor asking it to."""

    bring_down: Callable[[ActorRef, Child], Awaitable[None]]
    failure: type[BaseException] | None
    """What `Actor.failure` of the ended incarnation is."""
    cancelled: bool = False
    """Whether its task ended cancelled."""
    logged: str = ""
    """What the "child_crashed" log line says of the error."""


async def raise_in_its_handler(ref: ActorRef, child: Child) -> None:
    with pytest.raises(Boom):
        await ref.ask(("raise", Boom("bug")))


async def crash_from_outside(ref: ActorRef, child: Child) -> None:
    child.crash(Boom("injected"))


async def stop_on_its_own(ref: ActorRef, child: Child) -> None:
    await child.stop()


async def stop_with_a_timeout_while_stuck(ref: ActorRef, child: Child) -> None:
    child.tell(("block", asyncio.Event()))  # never released
    await child.stop(timeout=0.01)


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param(ChildEnding(raise_in_its_handler, Boom, logged="bug"), id="handler raised"),
        pytest.param(ChildEnding(crash_from_outside, Boom, logged="injected"), id="crashed"),
        pytest.param(
            ChildEnding(stop_on_its_own, None, logged="stopped unexpectedly"),
            id="stopped cleanly on its own",
        ),
        pytest.param(
            ChildEnding(stop_with_a_timeout_while_stuck, None, cancelled=True),
            id="cancelled by an outside stop timeout",
        ),
    ],
)
async def test_a_child_that_ends_on_its_own_is_restarted_as_a_new_instance_the_ref_follows(
    make_supervisor: Callable[..., Supervisor], journal: list[Any], ending: ChildEnding
) -> None:
    a, b = ChildFactory("a", journal), ChildFactory("b", journal)
    supervisor = make_supervisor(specs(a, b))
    await supervisor.start()
    ref = supervisor.ref("b")
    first = await ref.ask("whoami")

    with capture_logs() as logs:
        await ending.bring_down(ref, first)
        second = await b.wait_started(2)

    assert second is not first
    assert not first.alive
    if ending.failure is None:
        assert first.failure is None
    else:
        assert isinstance(first.failure, ending.failure)
    assert first.task is not None and first.task.cancelled() == ending.cancelled
    assert incarnation(ref) is second
    assert ref.alive
    assert await ref.ask("ping") == ("pong", 2)
    assert await ref.ask("whoami") is second
    crashed = [entry for entry in logs if entry["event"] == "child_crashed"]
    assert [entry["child"] for entry in crashed] == ["b"]
    assert ending.logged in crashed[0]["error"]
    # One-for-one: the sibling was left alone.
    assert a.instances == [incarnation(supervisor.ref("a"))]
    assert supervisor.ref("a").alive
    assert journal == [
        ("start", "a#1"),
        ("start", "b#1"),
        ("stop", "b#1"),
        ("start", "b#2"),
    ]
    assert supervisor.done is not None and not supervisor.done.done()


@pytest.mark.parametrize(
    ("max_restarts", "crashes"),
    [
        pytest.param(
            1,
            [("a", 0.0), ("a", 10.5), ("a", 10.5), ("a", 10.5)],
            id="restarts spread beyond the window",
        ),
        pytest.param(2, [("b", 0.0), ("b", 1.0)], id="max_restarts crashes within the window"),
    ],
)
async def test_restarts_within_the_intensity_are_allowed(
    make_supervisor: Callable[..., Supervisor],
    journal: list[Any],
    clock: FakeClock,
    max_restarts: int,
    crashes: Crashes,
) -> None:
    supervisor, factories = await started_abc(make_supervisor, journal, max_restarts)

    await crash_each_and_wait_for_restarts(supervisor, factories, clock, crashes)

    for name, factory in factories.items():
        incarnations = 1 + crashes_of(name, crashes)
        assert len(factory.instances) == incarnations
        assert await supervisor.ref(name).ask("ping") == ("pong", incarnations)
    assert supervisor.done is not None and not supervisor.done.done()


@pytest.mark.parametrize(
    ("max_restarts", "crashes"),
    [
        pytest.param(0, [("a", 0.0)], id="max_restarts 0: the first crash"),
        pytest.param(1, [("a", 0.0), ("a", 9.5)], id="two crashes within the window, max 1"),
        pytest.param(
            2, [("b", 0.0), ("b", 1.0), ("b", 1.0)], id="three crashes within the window, max 2"
        ),
        pytest.param(1, [("a", 0.0), ("b", 0.0)], id="children share one budget"),
    ],
)
async def test_one_crash_more_than_the_intensity_allows_fails_done_and_stops_all_children(
    make_supervisor: Callable[..., Supervisor],
    journal: list[Any],
    clock: FakeClock,
    max_restarts: int,
    crashes: Crashes,
) -> None:
    supervisor, factories = await started_abc(make_supervisor, journal, max_restarts)
    *restarted, (last, seconds_later) = crashes
    await crash_each_and_wait_for_restarts(supervisor, factories, clock, restarted)
    clock.now += seconds_later
    journal.clear()

    with capture_logs() as logs:
        incarnation(supervisor.ref(last)).crash(Boom("one crash too many"))
        assert supervisor.done is not None
        with pytest.raises(RestartIntensityError, match=f"last crash: {last}"):
            await supervisor.done

    for name, factory in factories.items():  # nothing restarted after the last crash
        assert len(factory.instances) == 1 + crashes_of(name, restarted)
    assert not any(supervisor.ref(name).alive for name in factories)
    # The crashed child stopped itself; the supervisor then stops the others, in reverse.
    current = {name: f"{name}#{len(factory.instances)}" for name, factory in factories.items()}
    stopped_by_the_supervisor = [current[name] for name in "cba" if name != last]
    assert journal == [("stop", key) for key in [current[last], *stopped_by_the_supervisor]]
    assert "restart_intensity_exceeded" in [entry["event"] for entry in logs]


async def test_a_restart_whose_on_start_fails_counts_as_another_failure(
    make_supervisor: Callable[..., Supervisor], journal: list[Any], clock: FakeClock
) -> None:
    # Incarnation 2 cannot start. With max_restarts=1 the first restart uses the
    # whole budget, so the failed start must make the supervisor give up.
    a = ChildFactory("a", journal, fail_start_on={2})
    b = ChildFactory("b", journal)
    supervisor = make_supervisor(specs(a, b), max_restarts=1, within_seconds=10.0)
    await supervisor.start()

    with capture_logs() as logs:
        a.instances[0].crash(Boom("first crash"))
        assert supervisor.done is not None
        with pytest.raises(RestartIntensityError):
            await supervisor.done

    assert len(a.instances) == 2  # no third attempt
    assert a.event("start_failed", 2).is_set()
    assert not supervisor.ref("b").alive
    assert "child_restart_failed" in [entry["event"] for entry in logs]


async def test_a_failed_restart_is_retried_and_the_ref_follows_the_next_instance(
    make_supervisor: Callable[..., Supervisor], journal: list[Any], clock: FakeClock
) -> None:
    a = ChildFactory("a", journal, fail_start_on={2})
    supervisor = make_supervisor(specs(a), max_restarts=2, within_seconds=10.0)
    await supervisor.start()

    a.instances[0].crash(Boom("first crash"))
    third = await a.wait_started(3)

    assert incarnation(supervisor.ref("a")) is third
    assert await supervisor.ref("a").ask("ping") == ("pong", 3)
    assert journal == [
        ("start", "a#1"),
        ("stop", "a#1"),
        ("start", "a#2"),
        ("stop", "a#2"),  # on_stop runs even when on_start failed
        ("start", "a#3"),
    ]
    # Both restarts (the failed one included) used the budget of 2: one more
    # crash inside the window is one too many.
    third.crash(Boom("second crash"))
    assert supervisor.done is not None
    with pytest.raises(RestartIntensityError):
        await supervisor.done
    assert len(a.instances) == 3


# -- failed start --------------------------------------------------------------


async def test_a_child_that_fails_to_start_makes_start_raise_and_stops_the_started_ones_in_reverse(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a, b = ChildFactory("a", journal), ChildFactory("b", journal)
    c = ChildFactory("c", journal, fail_start_on={1})
    d = ChildFactory("d", journal)
    supervisor = make_supervisor(specs(a, b, c, d))

    with pytest.raises(StartFailed):
        await supervisor.start()

    assert journal == [
        ("start", "a#1"),
        ("start", "b#1"),
        ("start", "c#1"),
        ("stop", "c#1"),  # its own on_stop, from Actor.start
        ("stop", "b#1"),
        ("stop", "a#1"),
    ]
    assert d.instances == []  # never reached
    assert not supervisor.ref("a").alive and not supervisor.ref("b").alive
    assert bound_actor(supervisor.ref("c")) is None
    assert supervisor.done is not None and supervisor.done.done()
    assert supervisor.done.result() is None
    # Nothing restarts afterwards, and stop has nothing left to do.
    await supervisor.stop()
    assert len(a.instances) == 1 and len(b.instances) == 1


# -- ActorRef ------------------------------------------------------------------


async def test_tell_and_ask_on_a_ref_with_no_actor_raise_actor_dead_error() -> None:
    ref = ActorRef("nobody")

    assert bound_actor(ref) is None
    assert not ref.alive
    with pytest.raises(ActorDeadError, match="nobody"):
        ref.tell("x")
    with pytest.raises(ActorDeadError, match="nobody"):
        await ref.ask("x")


async def test_refs_exist_before_start_but_have_no_actor(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    supervisor = make_supervisor(specs(ChildFactory("a", journal)))

    ref = supervisor.ref("a")
    assert bound_actor(ref) is None
    with pytest.raises(ActorDeadError):
        ref.tell("x")
    with pytest.raises(ActorDeadError):
        await ref.ask("x")


async def test_ref_tell_passes_the_reply_to_the_current_incarnation(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a = ChildFactory("a", journal)
    supervisor = make_supervisor(specs(a))
    await supervisor.start()
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    supervisor.ref("a").tell("ping", FutureReply(future))

    assert await future == ("pong", 1)


async def test_a_ref_to_a_crashed_child_raises_actor_dead_error_until_it_is_restarted(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    gate = asyncio.Event()
    a = ChildFactory("a", journal, start_gates={2: gate})
    supervisor = make_supervisor(specs(a))
    await supervisor.start()
    ref = supervisor.ref("a")

    a.instances[0].crash(Boom("down"))
    await a.event("entered", 2).wait()  # restart under way, not finished

    assert not ref.alive
    with pytest.raises(ActorDeadError):
        await ref.ask("ping")

    gate.set()
    await a.wait_started(2)
    assert await ref.ask("ping") == ("pong", 2)


async def test_ask_or_none_answers_or_says_none_when_the_actor_cannot(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    """A read-out (status, stats) never raises: None when no actor runs or none
    answers in time; the answer otherwise."""
    assert await ActorRef("nobody").ask_or_none("ping") is None
    supervisor = make_supervisor(specs(ChildFactory("a", journal)))
    await supervisor.start()
    ref = supervisor.ref("a")
    assert await ref.ask_or_none("ping") == ("pong", 1)
    gate = asyncio.Event()
    ref.tell(("block", gate))
    await eventually(lambda: ref.mailbox_stats().depths == (0, 0, 0), what="the block taken")
    assert await ref.ask_or_none("ping", timeout=0.05) is None  # stuck in the block
    gate.set()


# -- stop ----------------------------------------------------------------------


async def test_stop_is_idempotent_and_done_resolves_to_none(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a, b = ChildFactory("a", journal), ChildFactory("b", journal)
    supervisor = make_supervisor(specs(a, b))
    await supervisor.start()

    await supervisor.stop()
    await supervisor.stop()
    await asyncio.gather(supervisor.stop(), supervisor.stop())

    assert supervisor.done is not None and supervisor.done.done()
    assert supervisor.done.result() is None
    assert journal == [("start", "a#1"), ("start", "b#1"), ("stop", "b#1"), ("stop", "a#1")]


async def test_stop_before_start_does_nothing(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a = ChildFactory("a", journal)
    supervisor = make_supervisor(specs(a))

    await supervisor.stop()

    assert a.instances == []
    assert journal == []
    assert supervisor.done is None


async def test_children_are_not_restarted_once_the_supervisor_stops(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a, b = ChildFactory("a", journal), ChildFactory("b", journal)
    supervisor = make_supervisor(specs(a, b))
    await supervisor.start()

    await supervisor.stop()
    for _ in range(3):
        await asyncio.sleep(0)  # give a (wrong) restart a chance to happen

    assert len(a.instances) == 1 and len(b.instances) == 1
    assert not supervisor.ref("a").alive and not supervisor.ref("b").alive


async def test_stop_after_the_supervisor_gave_up_returns_and_keeps_the_error(
    make_supervisor: Callable[..., Supervisor], journal: list[Any], clock: FakeClock
) -> None:
    a = ChildFactory("a", journal)
    supervisor = make_supervisor(specs(a), max_restarts=0)
    await supervisor.start()
    a.instances[0].crash(Boom("fatal"))
    assert supervisor.done is not None
    with pytest.raises(RestartIntensityError):
        await supervisor.done

    await supervisor.stop()

    assert isinstance(supervisor.done.exception(), RestartIntensityError)
    assert journal.count(("stop", "a#1")) == 1


class SignalsStop(Child):
    """A child that signals when someone starts stopping it."""

    async def stop(self, timeout: float = 5.0) -> None:
        self.factory.event("stop_called", self.incarnation).set()
        await super().stop(timeout)


async def test_stop_during_the_give_up_waits_for_it_to_finish(
    make_supervisor: Callable[..., Supervisor], journal: list[Any], clock: FakeClock
) -> None:
    a = ChildFactory("a", journal)
    b = ChildFactory("b", journal, cls=SignalsStop)
    supervisor = make_supervisor(specs(a, b, shutdown_timeout=5.0), max_restarts=0)
    await supervisor.start()
    release = asyncio.Event()
    b.instances[0].tell(("block", release))  # b's stop will wait for this
    a.instances[0].crash(Boom("fatal"))
    await b.event("stop_called", 1).wait()  # the watcher is giving up

    stopping = asyncio.create_task(supervisor.stop())
    await asyncio.sleep(0)
    assert not stopping.done()
    release.set()
    await stopping

    assert supervisor.done is not None
    assert isinstance(supervisor.done.exception(), RestartIntensityError)
    assert not supervisor.ref("b").alive


async def test_stop_cancels_a_stuck_child_after_its_spec_shutdown_timeout(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a, b = ChildFactory("a", journal), ChildFactory("b", journal)
    supervisor = make_supervisor(specs(a, b, shutdown_timeout=0.01))
    await supervisor.start()
    b.instances[0].tell(("block", asyncio.Event()))  # never released

    await supervisor.stop()

    task = b.instances[0].task
    assert task is not None and task.cancelled()
    assert journal[-2:] == [("stop", "b#1"), ("stop", "a#1")]
    assert len(b.instances) == 1  # not restarted
    assert supervisor.done is not None and supervisor.done.result() is None


class StopFails(Child):
    """A child whose `stop()` itself raises after stopping."""

    async def stop(self, timeout: float = 5.0) -> None:
        await super().stop(timeout)
        raise RuntimeError("stop broke")


async def test_a_child_whose_stop_raises_does_not_keep_the_others_running(
    make_supervisor: Callable[..., Supervisor], journal: list[Any]
) -> None:
    a = ChildFactory("a", journal)
    b = ChildFactory("b", journal, cls=StopFails)
    c = ChildFactory("c", journal)
    supervisor = make_supervisor(specs(a, b, c))
    await supervisor.start()

    with capture_logs() as logs:
        await supervisor.stop()

    assert journal[3:] == [("stop", "c#1"), ("stop", "b#1"), ("stop", "a#1")]
    assert not any(supervisor.ref(name).alive for name in "abc")
    assert supervisor.done is not None and supervisor.done.result() is None
    assert "child_stop_failed" in [entry["event"] for entry in logs]
