"""Unit tests for the actor base (`actors/actor.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors.actor import (
    Actor,
    ActorDeadError,
    AskTimeoutError,
    Envelope,
    FutureReply,
    MailboxFullError,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(10)


# -- helpers -------------------------------------------------------------------


class Boom(Exception):
    """An unexpected error: crashes the actor."""


class BadRequest(ValueError):
    """A caller error: goes back to the asker, the actor carries on."""


class RecordingReply:
    """A `Reply` that records what it was given and signals when it got anything."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.errors: list[BaseException] = []
        self.got = asyncio.Event()

    def resolve(self, value: Any) -> None:
        self.values.append(value)
        self.got.set()

    def reject(self, error: BaseException) -> None:
        self.errors.append(error)
        self.got.set()


class Block:
    """A message that makes the handler wait on `gate`; `entered` is set on arrival."""

    def __init__(self, gate: asyncio.Event | None = None, result: Any = "unblocked") -> None:
        self.gate = gate if gate is not None else asyncio.Event()
        self.entered = asyncio.Event()
        self.cancelled = False
        self.result = result


class Raise:
    """A message that makes the handler raise `error`."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Probe(Actor):
    """An actor that records its lifecycle and the messages it handled.

    Messages: `Block` waits on its gate, `Raise` raises, anything else is
    recorded in `seen` and echoed back.
    """

    caller_errors = (BadRequest,)

    def __init__(
        self,
        name: str = "probe",
        *,
        mailbox_size: int = 0,
        journal: list[Any] | None = None,
        fail_start: BaseException | None = None,
        fail_stop: BaseException | None = None,
        fail_failure: BaseException | None = None,
    ) -> None:
        super().__init__(name, mailbox_size=mailbox_size)
        self.journal: list[Any] = journal if journal is not None else []
        self.seen: list[Any] = []
        self.fail_start = fail_start
        self.fail_stop = fail_stop
        self.fail_failure = fail_failure
        self.stopped = asyncio.Event()

    async def on_start(self) -> None:
        self.journal.append("on_start")
        if self.fail_start is not None:
            raise self.fail_start

    async def on_failure(self, error: BaseException) -> None:
        self.journal.append(("on_failure", error))
        if self.fail_failure is not None:
            raise self.fail_failure

    async def on_stop(self) -> None:
        self.journal.append("on_stop")
        self.stopped.set()
        if self.fail_stop is not None:
            raise self.fail_stop

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Block):
            message.entered.set()
            try:
                await message.gate.wait()
            except asyncio.CancelledError:
                message.cancelled = True
                raise
            self.seen.append(message)
            return message.result
        if isinstance(message, Raise):
            self.seen.append(message)
            raise message.error
        self.seen.append(message)
        self.journal.append(("handled", message))
        return message


@pytest.fixture
async def make_probe() -> AsyncIterator[Callable[..., Probe]]:
    """Build probes; every one is stopped at teardown (retrieving any crash)."""
    probes: list[Probe] = []

    def make(*args: Any, **kwargs: Any) -> Probe:
        probe = Probe(*args, **kwargs)
        probes.append(probe)
        return probe

    yield make
    for probe in probes:
        # Bounded so that a regression in stop() fails the test instead of hanging.
        await asyncio.wait_for(probe.stop(timeout=0.5), 5)


async def started_probe(make_probe: Callable[..., Probe], **kwargs: Any) -> Probe:
    probe = make_probe(**kwargs)
    await probe.start()
    return probe


async def until_queued(probe: Probe, count: int) -> None:
    """Wait until `count` messages wait in the probe's mailbox: an ask from a new task
    reaches it once that task has run."""
    await eventually(
        lambda: sum(probe.mailbox_stats().depths) == count,
        timeout=5,
        interval=0,
        what=f"{count} messages in the mailbox",
    )


# -- tell / ask ----------------------------------------------------------------


async def test_ask_returns_what_the_handler_returned(make_probe: Callable[..., Probe]) -> None:
    probe = await started_probe(make_probe)

    assert await probe.ask("hello") == "hello"
    assert await probe.ask({"n": 1}) == {"n": 1}
    assert probe.seen == ["hello", {"n": 1}]


async def test_tell_delivers_the_message_and_a_given_reply_receives_the_result(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    reply = RecordingReply()

    probe.tell("fire-and-forget")
    probe.tell("with-reply", reply)
    await reply.got.wait()

    assert reply.values == ["with-reply"]
    assert reply.errors == []
    assert probe.seen == ["fire-and-forget", "with-reply"]


async def test_messages_are_handled_in_the_order_they_were_sent(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)

    for n in range(50):
        probe.tell(n)
    asks = [asyncio.create_task(probe.ask(f"ask-{n}")) for n in range(50, 100)]
    answers = await asyncio.gather(*asks)

    assert answers == [f"ask-{n}" for n in range(50, 100)]
    assert probe.seen == list(range(50)) + [f"ask-{n}" for n in range(50, 100)]


async def test_messages_queued_while_the_actor_is_busy_are_handled_fifo(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    block = Block()
    first = asyncio.create_task(probe.ask(block))
    await block.entered.wait()

    later = [asyncio.create_task(probe.ask(n)) for n in range(5)]
    await until_queued(probe, 5)
    assert not any(task.done() for task in later)  # all waiting behind the busy handler
    block.gate.set()

    assert await first == "unblocked"
    assert await asyncio.gather(*later) == [0, 1, 2, 3, 4]
    assert probe.seen == [block, 0, 1, 2, 3, 4]


async def test_ask_raises_ask_timeout_error_when_the_handler_does_not_answer_in_time(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    block = Block()  # its gate is never set by the asker

    with pytest.raises(AskTimeoutError) as excinfo:
        await probe.ask(block, timeout=0.01)

    assert isinstance(excinfo.value, TimeoutError)
    assert probe.name in str(excinfo.value)
    # A timed-out ask does not kill the actor: it is still busy with the message.
    assert probe.alive
    assert block.entered.is_set()

    # Let the handler finish; its late answer is dropped, the actor carries on,
    # and it can then be stopped cleanly.
    block.gate.set()
    assert await probe.ask("next") == "next"
    await probe.stop()
    assert not probe.alive
    assert probe.failure is None
    assert probe.journal[-1] == "on_stop"
    assert probe.task is not None and probe.task.done() and not probe.task.cancelled()
    assert probe.task.exception() is None


async def test_tell_and_ask_on_an_actor_that_was_never_started_raise_actor_dead_error(
    make_probe: Callable[..., Probe],
) -> None:
    probe = make_probe()

    assert not probe.alive
    assert probe.task is None
    with pytest.raises(ActorDeadError):
        probe.tell("x")
    with pytest.raises(ActorDeadError):
        await probe.ask("x")
    assert probe.seen == []


async def test_tell_and_ask_on_a_stopped_actor_raise_actor_dead_error(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    assert probe.alive
    await probe.stop()

    assert not probe.alive
    with pytest.raises(ActorDeadError):
        probe.tell("x")
    with pytest.raises(ActorDeadError):
        await probe.ask("x")
    assert probe.seen == []


async def test_a_bounded_mailbox_raises_mailbox_full_error_when_full(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe, mailbox_size=2)
    block = Block()
    probe.tell(block)
    await block.entered.wait()  # the handler holds the first message; the mailbox is empty

    probe.tell("one")
    queued_ask = asyncio.create_task(probe.ask("two"))
    await until_queued(probe, 2)

    with pytest.raises(MailboxFullError):
        probe.tell("three")
    with pytest.raises(MailboxFullError):
        await probe.ask("four")
    assert probe.alive  # a full mailbox is the caller's problem, not a crash

    block.gate.set()
    assert await queued_ask == "two"
    # Room again once the backlog is drained.
    assert await probe.ask("five") == "five"
    assert probe.seen == [block, "one", "two", "five"]


async def test_an_unbounded_mailbox_accepts_a_large_backlog(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)  # mailbox_size 0 = unbounded
    block = Block()
    probe.tell(block)
    await block.entered.wait()

    for n in range(1000):
        probe.tell(n)
    block.gate.set()

    assert await probe.ask("last") == "last"
    assert probe.seen == [block, *range(1000), "last"]


# -- errors in handle ----------------------------------------------------------


async def test_caller_errors_go_back_to_the_asker_and_the_actor_keeps_running(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    error = BadRequest("bad input")

    with pytest.raises(BadRequest) as excinfo:
        await probe.ask(Raise(error))

    assert excinfo.value is error
    assert probe.alive
    assert probe.failure is None
    assert not any(isinstance(entry, tuple) and entry[0] == "on_failure" for entry in probe.journal)
    assert "on_stop" not in probe.journal
    assert await probe.ask("still here") == "still here"


async def test_a_caller_error_for_a_tell_with_a_reply_goes_to_the_reply(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    reply = RecordingReply()
    error = BadRequest("bad")

    probe.tell(Raise(error), reply)
    await reply.got.wait()

    assert reply.errors == [error]
    assert reply.values == []
    assert probe.alive
    assert await probe.ask("ok") == "ok"


async def test_an_unexpected_error_crashes_the_actor_and_fails_every_pending_ask(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    block = Block()
    blocked = asyncio.create_task(probe.ask(block))
    await block.entered.wait()

    error = Boom("kaput")
    crashing = asyncio.create_task(probe.ask(Raise(error)))
    queued_asks = [asyncio.create_task(probe.ask(f"queued-{n}")) for n in range(3)]
    await until_queued(probe, 4)  # the crashing ask, then the three
    queued_reply = RecordingReply()
    probe.tell("queued-tell", queued_reply)
    block.gate.set()

    assert await blocked == "unblocked"
    with pytest.raises(Boom) as excinfo:
        await crashing
    assert excinfo.value is error
    for task in queued_asks:
        with pytest.raises(ActorDeadError):
            await task
    await queued_reply.got.wait()
    assert len(queued_reply.errors) == 1
    assert isinstance(queued_reply.errors[0], ActorDeadError)

    await probe.stopped.wait()
    assert not probe.alive
    assert probe.failure is error
    # Nothing queued behind the crash was handled.
    assert [m for m in probe.seen if isinstance(m, str)] == []
    # on_failure then on_stop, once each.
    assert probe.journal == ["on_start", ("on_failure", error), "on_stop"]
    with pytest.raises(ActorDeadError):
        probe.tell("after")
    assert probe.task is not None
    await asyncio.wait({probe.task})
    assert probe.task.exception() is error


@pytest.mark.parametrize(
    "error",
    [BadRequest("nobody to tell"), Boom("nobody to tell")],
    ids=["caller error", "unexpected error"],
)
async def test_a_tell_without_reply_whose_handler_raises_crashes_the_actor(
    make_probe: Callable[..., Probe], error: Exception
) -> None:
    probe = await started_probe(make_probe)

    probe.tell(Raise(error))
    await probe.stopped.wait()

    assert not probe.alive
    assert probe.failure is error
    assert probe.journal == ["on_start", ("on_failure", error), "on_stop"]


async def test_a_timeout_error_raised_by_the_handler_is_not_turned_into_ask_timeout_error(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    error = TimeoutError("the handler's own timeout")

    with pytest.raises(TimeoutError) as excinfo:
        await probe.ask(Raise(error), timeout=5.0)

    assert excinfo.value is error
    assert not isinstance(excinfo.value, AskTimeoutError)
    await probe.stopped.wait()
    assert probe.failure is error


async def test_the_base_actor_handle_is_not_implemented_and_crashes_it() -> None:
    actor = Actor("bare")
    await actor.start()  # the default hooks do nothing
    try:
        with pytest.raises(NotImplementedError):
            await actor.ask("anything")
        assert not actor.alive
        assert isinstance(actor.failure, NotImplementedError)
    finally:
        await actor.stop()


async def test_crash_from_outside_fails_the_actor_with_that_exception(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    block = Block()
    probe.tell(block)
    await block.entered.wait()

    before = asyncio.create_task(probe.ask("before"))
    await until_queued(probe, 1)
    error = ConnectionResetError("lost the connection")
    probe.crash(error)
    after = asyncio.create_task(probe.ask("after"))
    await until_queued(probe, 3)  # "before", the crash, "after"
    block.gate.set()

    # Messages queued before the crash are handled; those after get ActorDeadError.
    assert await before == "before"
    with pytest.raises(ActorDeadError):
        await after
    await probe.stopped.wait()
    assert not probe.alive
    assert probe.failure is error
    assert probe.journal == ["on_start", ("handled", "before"), ("on_failure", error), "on_stop"]
    assert probe.task is not None
    await asyncio.wait({probe.task})
    assert probe.task.exception() is error


async def test_crash_on_an_actor_that_is_not_running_is_ignored(
    make_probe: Callable[..., Probe],
) -> None:
    never_started = make_probe()
    never_started.crash(Boom("ignored"))
    assert never_started.failure is None

    stopped = await started_probe(make_probe)
    await stopped.stop()
    stopped.crash(Boom("ignored"))
    await asyncio.sleep(0)
    assert stopped.failure is None
    assert stopped.journal == ["on_start", "on_stop"]


async def test_on_failure_raising_is_swallowed_and_on_stop_still_runs(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe, fail_failure=RuntimeError("on_failure broke"))
    error = Boom("original")

    with capture_logs() as logs:
        probe.crash(error)
        await probe.stopped.wait()
        assert probe.task is not None
        await asyncio.wait({probe.task})

    assert probe.failure is error
    assert probe.task.exception() is error  # the original failure, not the hook's
    assert probe.journal == ["on_start", ("on_failure", error), "on_stop"]
    assert any(entry["event"] == "actor_on_failure_failed" for entry in logs)


# -- lifecycle -----------------------------------------------------------------


async def test_alive_is_true_only_between_start_and_stop(
    make_probe: Callable[..., Probe],
) -> None:
    probe = make_probe()
    assert not probe.alive
    await probe.start()
    assert probe.alive
    assert probe.task is not None and not probe.task.done()
    await probe.stop()
    assert not probe.alive
    assert probe.task.done()


async def test_on_start_runs_before_the_first_message(make_probe: Callable[..., Probe]) -> None:
    journal: list[Any] = []
    probe = await started_probe(make_probe, journal=journal)
    await probe.ask("first")
    await probe.stop()

    assert journal == ["on_start", ("handled", "first"), "on_stop"]


async def test_on_start_raising_makes_start_raise_and_the_actor_never_runs(
    make_probe: Callable[..., Probe],
) -> None:
    error = OSError("cannot bind")
    probe = make_probe(fail_start=error)

    with pytest.raises(OSError) as excinfo:
        await probe.start()

    assert excinfo.value is error
    assert not probe.alive
    assert probe.task is None
    assert probe.journal == ["on_start", "on_stop"]  # on_stop releases what on_start took
    with pytest.raises(ActorDeadError):
        probe.tell("x")
    await probe.stop()  # nothing to stop: returns at once
    assert probe.journal == ["on_start", "on_stop"]


async def test_on_start_raising_and_on_stop_raising_reports_the_start_error(
    make_probe: Callable[..., Probe],
) -> None:
    error = OSError("cannot bind")
    probe = make_probe(fail_start=error, fail_stop=RuntimeError("cleanup broke"))

    with capture_logs() as logs, pytest.raises(OSError) as excinfo:
        await probe.start()

    assert excinfo.value is error
    assert probe.journal == ["on_start", "on_stop"]
    assert any(entry["event"] == "actor_on_stop_failed" for entry in logs)


async def test_stop_handles_the_messages_already_queued_then_calls_on_stop(
    make_probe: Callable[..., Probe],
) -> None:
    journal: list[Any] = []
    probe = await started_probe(make_probe, journal=journal)
    block = Block()
    probe.tell(block)
    await block.entered.wait()
    replies = [RecordingReply() for _ in range(3)]
    for n, reply in enumerate(replies):
        probe.tell(n, reply)

    stopping = asyncio.create_task(probe.stop())
    await asyncio.sleep(0)  # one turn of the loop: stop() has begun, and no more
    assert not probe.alive  # no new messages from the moment stop is called
    with pytest.raises(ActorDeadError):
        probe.tell("too late")
    assert not stopping.done()
    block.gate.set()
    await stopping

    assert [reply.values for reply in replies] == [[0], [1], [2]]
    assert journal == ["on_start", ("handled", 0), ("handled", 1), ("handled", 2), "on_stop"]
    assert probe.failure is None
    assert probe.task is not None and probe.task.exception() is None


async def test_stop_is_idempotent(make_probe: Callable[..., Probe]) -> None:
    probe = await started_probe(make_probe)

    await asyncio.gather(probe.stop(), probe.stop())
    await probe.stop()

    assert probe.journal.count("on_stop") == 1
    assert not probe.alive


async def test_stop_on_an_actor_that_was_never_started_does_nothing(
    make_probe: Callable[..., Probe],
) -> None:
    probe = make_probe()
    await probe.stop()
    assert probe.journal == []
    assert probe.task is None


async def test_stop_after_a_crash_returns_without_raising(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    probe.crash(Boom("gone"))
    await probe.stopped.wait()

    await probe.stop()  # retrieves the crash instead of raising it

    assert isinstance(probe.failure, Boom)
    assert probe.journal.count("on_stop") == 1


async def test_stop_cancels_a_handler_stuck_forever_after_the_timeout(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    block = Block()  # never released
    probe.tell(block)
    await block.entered.wait()
    queued_asks = [asyncio.create_task(probe.ask(n, timeout=None)) for n in range(3)]
    queued_reply = RecordingReply()
    probe.tell("queued-tell", queued_reply)
    await until_queued(probe, 4)

    await probe.stop(timeout=0.01)

    assert block.cancelled
    for task in queued_asks:
        with pytest.raises(ActorDeadError):
            await task
    assert len(queued_reply.errors) == 1
    assert isinstance(queued_reply.errors[0], ActorDeadError)
    assert not probe.alive
    assert probe.failure is None  # being cancelled by stop is not a crash
    assert probe.journal == ["on_start", "on_stop"]
    assert probe.task is not None and probe.task.cancelled()


async def test_the_request_in_flight_when_stop_cancels_a_stuck_handler_gets_actor_dead_error(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    block = Block()  # never released
    in_flight = RecordingReply()
    probe.tell(block, in_flight)
    await block.entered.wait()

    await probe.stop(timeout=0.01)

    assert block.cancelled
    assert len(in_flight.errors) == 1, "the in-flight request was never answered"
    assert isinstance(in_flight.errors[0], ActorDeadError)


async def test_on_stop_raising_does_not_prevent_stop_from_completing(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe, fail_stop=RuntimeError("cleanup broke"))
    assert await probe.ask("work") == "work"

    with capture_logs() as logs:
        await probe.stop()

    assert not probe.alive
    assert probe.journal == ["on_start", ("handled", "work"), "on_stop"]
    assert probe.task is not None and probe.task.done()
    assert probe.task.exception() is None
    assert probe.failure is None
    assert any(entry["event"] == "actor_on_stop_failed" for entry in logs)


async def test_on_stop_raising_after_a_crash_does_not_hide_the_crash(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe, fail_stop=RuntimeError("cleanup broke"))
    error = Boom("the real reason")

    probe.crash(error)
    await probe.stopped.wait()
    assert probe.task is not None
    await asyncio.wait({probe.task})

    assert probe.failure is error
    assert probe.task.exception() is error


async def test_starting_an_actor_twice_raises_runtime_error(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    task = probe.task

    with pytest.raises(RuntimeError, match="already started"):
        await probe.start()

    assert probe.journal == ["on_start"]  # on_start did not run again
    assert probe.task is task
    assert probe.alive


async def test_restarting_a_stopped_actor_raises_runtime_error(
    make_probe: Callable[..., Probe],
) -> None:
    probe = await started_probe(make_probe)
    await probe.stop()

    with pytest.raises(RuntimeError, match="already started"):
        await probe.start()
    assert not probe.alive


# -- FutureReply / Envelope ----------------------------------------------------


async def test_future_reply_completes_the_future_once_and_drops_late_outcomes() -> None:
    loop = asyncio.get_running_loop()

    resolved: asyncio.Future[Any] = loop.create_future()
    reply = FutureReply(resolved)
    reply.resolve(1)
    reply.resolve(2)
    reply.reject(Boom("late"))
    assert resolved.result() == 1

    rejected: asyncio.Future[Any] = loop.create_future()
    reply = FutureReply(rejected)
    error = Boom("first")
    reply.reject(error)
    reply.resolve("late")
    reply.reject(Boom("later"))
    assert rejected.exception() is error

    cancelled: asyncio.Future[Any] = loop.create_future()
    cancelled.cancel()
    reply = FutureReply(cancelled)
    reply.resolve("late")  # e.g. the asker timed out: dropped without error
    reply.reject(Boom("late"))
    assert cancelled.cancelled()


def test_an_envelope_has_no_reply_by_default() -> None:
    envelope = Envelope("message")
    assert envelope.message == "message"
    assert envelope.reply is None
