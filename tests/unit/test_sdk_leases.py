"""`sdk.leases.LeaseKeeper` against a fake router: the schedule of heartbeats and what
each answer leads to. The real thing over NATS is in tests/integration/test_leases.py."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from protocol import HEARTBEAT_SUBJECT, LeaseReply, LeaseRequest, Status
from sdk.errors import ConflictError, RegistryError, RouterTimeoutError, RouterUnavailableError
from sdk.leases import LeaseKeeper
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(10)

SESSION = "session-0123456789abcdef"
INTERVAL = 0.02


class FakeRouter:
    """The keeper's three callables, answering as scripted and recording every call."""

    def __init__(self) -> None:
        self.beats: list[tuple[float, str]] = []
        """(loop time, instance id) of every heartbeat sent."""
        self.timeouts: set[float] = set()
        self.answers: dict[str, list[int | Exception]] = {}
        """Per instance id, the next answers to heartbeats (then 200)."""
        self.reply_delay = 0.0
        self.on_beat: Callable[[str], None] | None = None
        self.registered: list[tuple[str, str, dict[str, Any]]] = []
        self.register_errors: list[RegistryError] = []
        """Raised by the next registrations, in order (then success)."""
        self.register_gate: asyncio.Event | None = None
        """When set, a registration waits for it."""
        self.register_cancelled = 0
        self.deregistered: list[tuple[str, str]] = []

    def keeper(self) -> LeaseKeeper:
        return LeaseKeeper(
            SESSION,
            send_request=self.send,
            register_again=self.register_again,
            deregister_once=self.deregister_once,
            interval=INTERVAL,
        )

    async def send(self, subject: str, request: LeaseRequest, timeout: float) -> LeaseReply:
        if subject != HEARTBEAT_SUBJECT or request.session_id != SESSION:
            raise AssertionError(f"not a heartbeat of this session: {subject} {request}")
        self.beats.append((asyncio.get_running_loop().time(), request.instance_id))
        self.timeouts.add(timeout)
        if self.on_beat is not None:
            self.on_beat(request.instance_id)
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        script = self.answers.get(request.instance_id)
        answer = script.pop(0) if script else Status.OK
        if isinstance(answer, Exception):
            raise answer
        return LeaseReply(status=answer)

    async def register_again(
        self, service_name: str, instance_id: str, metadata: dict[str, Any]
    ) -> None:
        self.registered.append((service_name, instance_id, metadata))
        try:
            if self.register_gate is not None:
                await self.register_gate.wait()
        except asyncio.CancelledError:
            self.register_cancelled += 1
            raise
        if self.register_errors:
            raise self.register_errors.pop(0)

    async def deregister_once(self, service_name: str, instance_id: str) -> None:
        self.deregistered.append((service_name, instance_id))

    def beats_of(self, instance_id: str) -> list[float]:
        return [at for at, beaten in self.beats if beaten == instance_id]


async def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Re-check `predicate` every quarter interval; fail after `timeout` seconds."""
    await eventually(predicate, timeout=timeout, interval=INTERVAL / 4)


def stall(seconds: float) -> None:
    """Block the event loop, as a stopped process or a blocking call would."""
    time.sleep(seconds)


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
async def keeper(router: FakeRouter) -> AsyncIterator[LeaseKeeper]:
    keeper = router.keeper()
    yield keeper
    await keeper.stop()


async def test_beats_on_a_fixed_schedule_that_does_not_drift(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    router.reply_delay = INTERVAL * 0.6  # a schedule that waited for replies would slip
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    await wait_until(lambda: len(router.beats) >= 30)
    beats = router.beats_of("orders-1")
    period = (beats[-1] - beats[0]) / (len(beats) - 1)
    assert INTERVAL * 0.8 < period < INTERVAL * 1.35  # slipping: 1.6 intervals
    assert router.timeouts == {INTERVAL}  # a reply is awaited for one interval at most


async def test_no_burst_of_catch_up_beats_after_a_pause(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    await wait_until(lambda: len(router.beats) >= 2)
    stall(INTERVAL * 20)
    resumed = asyncio.get_running_loop().time()

    def beats_since_resumed() -> list[float]:
        return [at for at in router.beats_of("orders-1") if at >= resumed]

    await wait_until(lambda: len(beats_since_resumed()) >= 3)
    after = beats_since_resumed()
    # The beat that was due at once, then one per interval; catching up would send
    # about 20 at once.
    assert after[0] - resumed < INTERVAL
    assert after[1] - after[0] > INTERVAL / 2
    assert after[2] - after[1] > INTERVAL / 2


async def test_the_first_beat_waits_one_interval_and_start_twice_runs_one_loop(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    loop = asyncio.get_running_loop()
    keeper.hold("orders", "orders-1", {})
    started = loop.time()
    keeper.start()
    keeper.start()
    assert keeper.running
    await wait_until(lambda: len(router.beats) >= 5)
    elapsed = loop.time() - started
    assert router.beats[0][0] >= started + INTERVAL
    assert len(router.beats) <= elapsed / INTERVAL + 1  # two loops would beat twice as often


async def test_404_registers_again_after_a_jitter_with_the_latest_metadata(
    router: FakeRouter, keeper: LeaseKeeper, monkeypatch: pytest.MonkeyPatch
) -> None:
    jitters: list[tuple[float, float]] = []
    uniform = random.uniform

    def recorded_uniform(low: float, high: float) -> float:
        jitters.append((low, high))
        return uniform(low, high)

    monkeypatch.setattr(random, "uniform", recorded_uniform)
    router.answers["orders-1"] = [Status.NOT_FOUND]
    keeper.hold("orders", "orders-1", {"version": "1"})
    keeper.hold("orders", "orders-1", {"version": "2"})  # a repeat register() updates it
    keeper.start()
    await wait_until(lambda: bool(router.registered))
    assert router.registered == [("orders", "orders-1", {"version": "2"})]
    assert jitters == [(0, INTERVAL / 2)]
    await wait_until(lambda: len(router.beats_of("orders-1")) >= 4)
    assert keeper.held == [("orders", "orders-1")]
    assert len(router.registered) == 1


async def test_no_beats_for_an_instance_while_it_registers_again(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    router.answers["orders-1"] = [Status.NOT_FOUND]
    router.register_gate = asyncio.Event()
    keeper.hold("orders", "orders-1", {})
    keeper.hold("orders", "orders-2", {})
    keeper.start()
    await wait_until(lambda: bool(router.registered))
    before = len(router.beats_of("orders-1"))
    await wait_until(lambda: len(router.beats_of("orders-2")) >= 6)
    assert len(router.beats_of("orders-1")) == before
    router.register_gate.set()
    await wait_until(lambda: len(router.beats_of("orders-1")) > before)


async def test_403_gives_the_instance_up_with_an_error_log(
    router: FakeRouter, keeper: LeaseKeeper, caplog: pytest.LogCaptureFixture
) -> None:
    router.answers["orders-1"] = [Status.FORBIDDEN]
    keeper.hold("orders", "orders-1", {})
    keeper.hold("orders", "orders-2", {})
    with caplog.at_level(logging.ERROR, logger="ipc_router.sdk"):
        keeper.start()
        await wait_until(lambda: keeper.held == [("orders", "orders-2")])
    assert "orders/orders-1 belongs to another client" in caplog.text
    given_up = len(router.beats_of("orders-1"))
    await wait_until(lambda: len(router.beats_of("orders-2")) >= given_up + 3)
    assert len(router.beats_of("orders-1")) == given_up == 1
    assert router.registered == []
    assert router.deregistered == []


async def test_409_when_registering_again_gives_the_instance_up(
    router: FakeRouter, keeper: LeaseKeeper, caplog: pytest.LogCaptureFixture
) -> None:
    router.answers["orders-1"] = [Status.NOT_FOUND]
    router.register_errors = [ConflictError("taken", status=Status.CONFLICT)]
    keeper.hold("orders", "orders-1", {})
    keeper.hold("orders", "orders-2", {})  # its beats tell how far the schedule went
    with caplog.at_level(logging.ERROR, logger="ipc_router.sdk"):
        keeper.start()
        await wait_until(lambda: keeper.held == [("orders", "orders-2")])
    assert "claimed by another client" in caplog.text
    given_up = len(router.beats_of("orders-2"))
    await wait_until(lambda: len(router.beats_of("orders-2")) >= given_up + 3)
    assert len(router.beats_of("orders-1")) == 1
    assert router.deregistered == []


async def test_a_failed_registration_is_tried_again_after_the_next_404(
    router: FakeRouter, keeper: LeaseKeeper, caplog: pytest.LogCaptureFixture
) -> None:
    router.answers["orders-1"] = [Status.NOT_FOUND, Status.NOT_FOUND]
    router.register_errors = [RouterUnavailableError("router restarting")]
    keeper.hold("orders", "orders-1", {})
    with caplog.at_level(logging.WARNING, logger="ipc_router.sdk"):
        keeper.start()
        await wait_until(lambda: len(router.registered) == 2)
    assert "will retry on the next heartbeat" in caplog.text
    await wait_until(lambda: len(router.beats_of("orders-1")) >= 4)
    assert keeper.held == [("orders", "orders-1")]
    assert len(router.registered) == 2


async def test_failed_beats_are_retried_by_the_next_beat(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    router.answers["orders-1"] = [
        RouterTimeoutError("no reply"),
        RouterUnavailableError("no responders"),
    ]
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    await wait_until(lambda: len(router.beats) >= 4)
    assert keeper.held == [("orders", "orders-1")]
    assert router.registered == []


async def test_an_unanswered_beat_is_only_a_failed_beat(router: FakeRouter) -> None:
    """(An unreadable or forged reply is dropped by the client's `Exchange`: to the
    keeper it is a beat that got no answer.)"""

    async def unanswered(subject: str, request: LeaseRequest, timeout: float) -> LeaseReply:
        await router.send(subject, request, timeout)
        raise RouterTimeoutError("no reply")

    keeper = LeaseKeeper(
        SESSION,
        send_request=unanswered,
        register_again=router.register_again,
        deregister_once=router.deregister_once,
        interval=INTERVAL,
    )
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    try:
        await wait_until(lambda: len(router.beats) >= 3)
        assert keeper.running
        assert keeper.held == [("orders", "orders-1")]
    finally:
        await keeper.stop()


async def test_an_unexpected_error_for_one_instance_spares_the_others(
    router: FakeRouter, keeper: LeaseKeeper, caplog: pytest.LogCaptureFixture
) -> None:
    router.answers["orders-1"] = [RuntimeError("bug")]
    keeper.hold("orders", "orders-1", {})
    keeper.hold("orders", "orders-2", {})
    with caplog.at_level(logging.WARNING, logger="ipc_router.sdk"):
        keeper.start()
        await wait_until(lambda: len(router.beats_of("orders-2")) >= 3)
    assert "heartbeat failed unexpectedly" in caplog.text
    assert len(router.beats_of("orders-1")) >= 3  # still renewed
    assert keeper.running


async def test_a_reply_that_arrives_after_release_changes_nothing(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    router.answers["orders-1"] = [Status.NOT_FOUND]  # as the deregistration would cause
    router.reply_delay = INTERVAL / 2
    released: list[asyncio.Task[None]] = []

    def release_during_the_beat(instance_id: str) -> None:
        if instance_id == "orders-1" and not released:
            released.append(asyncio.ensure_future(keeper.release("orders", instance_id)))

    router.on_beat = release_during_the_beat
    keeper.hold("orders", "orders-1", {})
    keeper.hold("orders", "orders-2", {})  # its beats tell how far the schedule went
    keeper.start()
    await wait_until(lambda: bool(released))
    await released[0]
    since = len(router.beats_of("orders-2"))
    await wait_until(lambda: len(router.beats_of("orders-2")) >= since + 3)
    assert keeper.held == [("orders", "orders-2")]
    assert router.registered == []
    assert len(router.beats_of("orders-1")) == 1


async def test_release_cancels_a_registration_in_flight(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    router.answers["orders-1"] = [Status.NOT_FOUND]
    router.register_gate = asyncio.Event()  # never set: the registration hangs
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    await wait_until(lambda: bool(router.registered))
    await asyncio.wait_for(keeper.release("orders", "orders-1"), INTERVAL * 10)
    assert router.register_cancelled == 1
    assert keeper.held == []
    assert router.deregistered == []  # deregistering is the owner's job
    await keeper.release("orders", "orders-1")  # idempotent


async def test_stop_keeps_the_leases_and_start_resumes(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    await wait_until(lambda: len(router.beats) >= 2)
    await keeper.stop()
    assert not keeper.running
    stopped = len(router.beats)
    await asyncio.sleep(INTERVAL * 3)  # the window under test: a running keeper would beat
    assert len(router.beats) == stopped
    assert keeper.held == [("orders", "orders-1")]
    keeper.start()
    await wait_until(lambda: len(router.beats) > stopped)


async def test_a_registration_stopped_before_it_ran_does_not_strand_the_lease(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    router.answers["orders-1"] = [Status.NOT_FOUND]
    stopping: list[asyncio.Future[None]] = []

    def stop_now(instance_id: str) -> None:
        # Scheduled before the 404 creates the re-registration task, so that the stop
        # cancels the task before it first runs.
        if not stopping:
            stopping.append(asyncio.ensure_future(keeper.stop()))

    router.on_beat = stop_now
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    await wait_until(lambda: bool(stopping))
    await stopping[0]
    assert router.registered == []
    router.on_beat = None
    keeper.start()
    await wait_until(lambda: len(router.beats_of("orders-1")) >= 3)


async def test_close_stops_the_beats_then_deregisters_each_instance_once(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    for n in range(3):
        keeper.hold("orders", f"orders-{n}", {})
    keeper.start()
    await wait_until(lambda: len(router.beats) >= 6)
    await keeper.close()
    closed = len(router.beats)
    assert sorted(router.deregistered) == [("orders", f"orders-{n}") for n in range(3)]
    assert keeper.held == []
    assert not keeper.running
    await keeper.close()  # idempotent: nothing more is sent
    assert len(router.deregistered) == 3
    keeper.hold("orders", "orders-9", {})
    keeper.start()  # no-op once closed
    assert not keeper.running
    await asyncio.sleep(INTERVAL * 3)  # the window under test: a running keeper would beat
    assert len(router.beats) == closed


async def test_close_cancels_a_registration_in_flight_then_deregisters(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    router.answers["orders-1"] = [Status.NOT_FOUND]
    router.register_gate = asyncio.Event()
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    await wait_until(lambda: bool(router.registered))
    await asyncio.wait_for(keeper.close(), INTERVAL * 10)
    assert router.register_cancelled == 1
    assert router.deregistered == [("orders", "orders-1")]


async def test_a_new_interval_takes_effect_from_the_next_beat(
    router: FakeRouter, keeper: LeaseKeeper
) -> None:
    keeper.hold("orders", "orders-1", {})
    keeper.start()
    await wait_until(lambda: len(router.beats) >= 2)
    keeper.interval = 10.0
    changed = len(router.beats)
    await asyncio.sleep(INTERVAL * 5)  # the window under test: the old interval would beat
    assert len(router.beats) <= changed + 1  # the beat already scheduled, then none
