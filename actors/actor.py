"""A minimal actor on plain asyncio: a mailbox, `tell`, `ask`, a lifecycle, and a
stable `ActorRef` that is the only way other code reaches an actor.

One task per actor takes envelopes from the mailbox, so whatever state the actor
owns is only ever touched by that task: no locks. The mailbox has three lanes,
each bounded on its own: urgent (what must never wait, such as lease renewals),
normal, and low (work that may wait, such as read-only queries), so that a flood
in one lane neither fills another nor delays what is more urgent. An actor takes
its messages in drains (`max_batch`): one `handle_batch` call per drain, the place
to do once what would otherwise be done per message (flushing, one pipelined write).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

import msgspec
import structlog

__all__ = [
    "Actor",
    "ActorDeadError",
    "ActorRef",
    "AskTimeoutError",
    "Envelope",
    "FutureReply",
    "Lane",
    "MailboxFullError",
    "MailboxStats",
    "Message",
    "Reply",
]

log = structlog.get_logger(component="actor")


class Message(msgspec.Struct, frozen=True):
    """Base of the messages actors send each other: immutable, and cheap to create
    (a frozen dataclass costs several times as much on the hot path)."""


class Lane(IntEnum):
    """Mailbox lanes, most urgent first. Each drain takes urgent messages first, but
    at least one from every other lane that has any, so none is starved outright."""

    URGENT = 0
    NORMAL = 1
    LOW = 2


class ActorDeadError(RuntimeError):
    """The actor is not running (not started yet, stopped, or crashed)."""


class MailboxFullError(RuntimeError):
    """The actor's bounded mailbox lane is full: the caller should retry later."""


class AskTimeoutError(TimeoutError):
    """The actor did not answer an `ask` in time."""


class Reply(Protocol):
    """Where the outcome of handling one message goes.

    Either method may raise `ActorDeadError` when the outcome is to be delivered to
    another actor that is gone; the handling actor then counts a dropped reply."""

    def resolve(self, value: Any) -> None:
        """Deliver the handler's return value."""

    def reject(self, error: BaseException) -> None:
        """Deliver the handler's error (or `ActorDeadError` at teardown)."""


class FutureReply:
    """A `Reply` that completes an asyncio future; late outcomes are dropped."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future

    def resolve(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def reject(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class Envelope:
    """A message plus, for requests, where its reply goes. Settled at most once."""

    __slots__ = ("message", "reply", "settled")

    def __init__(self, message: Any, reply: Reply | None = None) -> None:
        self.message = message
        self.reply = reply
        self.settled = reply is None

    def resolve(self, value: Any) -> bool:
        """Deliver `value`; False if the reply's destination is gone."""
        if self.settled:
            return True
        self.settled = True
        assert self.reply is not None
        try:
            self.reply.resolve(value)
        except ActorDeadError:
            return False
        return True

    def reject(self, error: BaseException) -> bool:
        """Deliver `error`; False if the reply's destination is gone."""
        if self.settled:
            return True
        self.settled = True
        assert self.reply is not None
        try:
            self.reply.reject(error)
        except ActorDeadError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class MailboxStats:
    """A snapshot of one actor's mailbox, for health and metrics."""

    depths: tuple[int, int, int]
    """Messages waiting in each lane (urgent, normal, low)."""
    rejected_full: int
    """`tell`s refused because a lane was full, since the actor started."""
    replies_dropped: int
    """Outcomes that could not be delivered (their destination actor was gone)."""


@dataclass(frozen=True, slots=True)
class _Crash:
    error: BaseException


_EMPTY_STATS = MailboxStats((0, 0, 0), 0, 0)


class Actor:
    """Base class: subclass and implement `handle` (or `handle_batch`).

    Exceptions whose type is in `caller_errors` raised by `handle` go back to the
    caller of `ask` and the actor carries on. Any other exception is a crash: the
    caller gets it, every other pending request gets `ActorDeadError`, and the
    actor stops (its supervisor may then start a fresh one).
    """

    caller_errors: tuple[type[BaseException], ...] = ()
    max_batch: int = 1
    """Most messages handed to one `handle_batch` call."""
    max_low_per_batch: int = 1 << 30
    """Most low-lane messages in one drain (bounds how long they hold the others up)."""

    def __init__(self, name: str, *, mailbox_size: int = 0) -> None:
        """Create a stopped actor; `mailbox_size` bounds each lane (0: unbounded)."""
        self.name = name
        self._mailbox_size = mailbox_size
        self._lanes: tuple[deque[Envelope], deque[Envelope], deque[Envelope]] = (
            deque(),
            deque(),
            deque(),
        )
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._rejected_full = 0
        self._replies_dropped = 0
        self.failure: BaseException | None = None
        """The exception that crashed the actor, if it crashed."""

    # -- lifecycle hooks -------------------------------------------------------

    async def on_start(self) -> None:
        """Runs in `start()` before the first message. If it raises, `start()` raises
        and the actor never runs (`on_stop` is still called to release resources)."""

    async def on_stop(self) -> None:
        """Runs once when the actor ends, after a clean stop or a crash. Errors are
        swallowed: teardown must not hide the reason the actor ended."""

    async def on_failure(self, error: BaseException) -> None:
        """Runs after a crash, before `on_stop`, with the exception that caused it."""

    async def handle(self, message: Any) -> Any:
        """Handle one message; the return value is the reply to `ask`."""
        raise NotImplementedError

    async def handle_batch(self, batch: list[Envelope]) -> None:
        """Handle one drain of the mailbox (at most `max_batch` envelopes, in lane
        order). Must settle every envelope; an envelope left unsettled when this
        raises gets `ActorDeadError`. The default calls `handle` for each in turn."""
        for envelope in batch:
            try:
                result = await self.handle(envelope.message)
            except self.caller_errors as error:
                if envelope.reply is None:
                    raise
                self.reject(envelope, error)
                continue
            except Exception as error:
                self.reject(envelope, error)
                raise
            self.resolve(envelope, result)

    # -- public API ------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the actor accepts messages."""
        return self._accepting

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task running the mailbox loop (done once the actor ended)."""
        return self._task

    @property
    def ref(self) -> ActorRef:
        """A reference to this actor alone (a supervisor's refs follow restarts)."""
        ref = ActorRef(self.name)
        ref.bind(self)
        return ref

    def mailbox_stats(self) -> MailboxStats:
        """How full the mailbox is, and what it refused or could not deliver."""
        urgent, normal, low = self._lanes
        return MailboxStats(
            (len(urgent), len(normal), len(low)), self._rejected_full, self._replies_dropped
        )

    def tell(self, message: Any, reply: Reply | None = None, *, lane: Lane = Lane.NORMAL) -> None:
        """Queue a message in `lane` without waiting. `reply`, if given, gets the outcome.

        Raises:
            ActorDeadError: the actor is not running.
            MailboxFullError: that lane of the bounded mailbox is full.
        """
        if not self._accepting:
            raise ActorDeadError(f"actor {self.name} is not running")
        queue = self._lanes[lane]
        if self._mailbox_size and len(queue) >= self._mailbox_size:
            self._rejected_full += 1
            raise MailboxFullError(f"actor {self.name} mailbox is full ({self._mailbox_size})")
        queue.append(Envelope(message, reply))
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def ask(
        self, message: Any, timeout: float | None = 5.0, *, lane: Lane = Lane.NORMAL
    ) -> Any:
        """Send a message and wait for the reply.

        Raises:
            ActorDeadError: the actor is not running or ended before answering.
            MailboxFullError: the bounded mailbox is full.
            AskTimeoutError: no answer within `timeout` seconds.
            Exception: whatever `handle` raised for this message.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.tell(message, FutureReply(future), lane=lane)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            if future.cancelled():
                raise AskTimeoutError(
                    f"actor {self.name} did not answer within {timeout} s"
                ) from None
            raise

    async def start(self) -> None:
        """Run `on_start`, then start the mailbox loop. Returns once ready."""
        if self._task is not None:
            raise RuntimeError(f"actor {self.name} was already started")
        try:
            await self.on_start()
        except BaseException:
            await self._safe_on_stop()
            raise
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name=f"actor:{self.name}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop after the messages already queued; cancel if that takes longer than
        `timeout`. Idempotent."""
        if self._task is None:
            return
        if self._accepting:
            self._accepting = False
            self._wake()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
        # Retrieve the outcome so a crash is never reported as "never retrieved".
        await asyncio.gather(self._task, return_exceptions=True)

    def crash(self, error: BaseException) -> None:
        """Make the actor fail with `error` as soon as it reaches this message.

        For callbacks that run outside the actor (a lost connection, say) and must
        hand the failure to the supervisor through the actor itself."""
        if self._accepting:
            self._lanes[Lane.NORMAL].append(Envelope(_Crash(error)))
            self._wake()

    # -- for subclasses ----------------------------------------------------------

    def resolve(self, envelope: Envelope, value: Any) -> None:
        """Settle `envelope` with `value`, counting it if its destination is gone."""
        if not envelope.resolve(value):
            self._replies_dropped += 1

    def reject(self, envelope: Envelope, error: BaseException) -> None:
        """Settle `envelope` with `error`, counting it if its destination is gone."""
        if not envelope.reject(error):
            self._replies_dropped += 1

    # -- internals -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next_batch(self) -> list[Envelope] | None:
        """The next drain, or None once a requested stop has drained the mailbox."""
        lanes = self._lanes
        if lanes[0] or lanes[1] or lanes[2]:
            # Let the event loop run between drains, so that what arrives meanwhile (an
            # urgent message behind a backlog of low ones, say) is in the next drain.
            await asyncio.sleep(0)
        while not (lanes[0] or lanes[1] or lanes[2]):
            if not self._accepting:  # stop() was called: the mailbox is drained
                return None
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        urgent, normal, low = lanes
        size = self.max_batch
        batch: list[Envelope] = []
        if urgent:
            room = max(size - bool(normal) - bool(low), 1)
            while urgent and room:
                batch.append(urgent.popleft())
                room -= 1
        if normal:
            # A crash (queued in the normal lane, after what was there) ends the drain
            # before it, and is a drain of its own.
            room = max(size - len(batch) - bool(low), 1)
            while normal and room:
                if type(normal[0].message) is _Crash:
                    if not batch:
                        batch.append(normal.popleft())
                    return batch
                batch.append(normal.popleft())
                room -= 1
        if low:
            room = min(max(size - len(batch), 1), self.max_low_per_batch)
            while low and room:
                batch.append(low.popleft())
                room -= 1
        return batch

    async def _run(self) -> None:
        try:
            while (batch := await self._next_batch()) is not None:
                first = batch[0].message
                if type(first) is _Crash:
                    raise first.error
                try:
                    await self.handle_batch(batch)
                except BaseException:
                    dead = ActorDeadError(f"actor {self.name} stopped")
                    for envelope in batch:
                        self.reject(envelope, dead)
                    raise
        except Exception as error:
            self.failure = error
            self._accepting = False
            self._reject_pending()
            try:
                await self.on_failure(error)
            except Exception:
                log.exception("actor_on_failure_failed", actor=self.name)
            await self._safe_on_stop()
            raise
        except asyncio.CancelledError:
            self._accepting = False
            self._reject_pending()
            await self._safe_on_stop()
            raise
        self._accepting = False
        self._reject_pending()
        await self._safe_on_stop()

    def _reject_pending(self) -> None:
        dead = ActorDeadError(f"actor {self.name} stopped")
        for lane in self._lanes:
            while lane:
                self.reject(lane.popleft(), dead)

    async def _safe_on_stop(self) -> None:
        try:
            await self.on_stop()
        except Exception:
            log.exception("actor_on_stop_failed", actor=self.name)


class ActorRef:
    """A stable handle on an actor. A supervisor's ref follows its child across
    restarts; between a crash and the restart, every call raises `ActorDeadError`."""

    __slots__ = ("_actor", "id")

    def __init__(self, actor_id: str) -> None:
        self.id = actor_id
        self._actor: Actor | None = None

    def bind(self, actor: Actor | None) -> None:
        """Point the ref at a (new) incarnation, or at none; for supervisors."""
        self._actor = actor

    def _current(self) -> Actor:
        if self._actor is None:
            raise ActorDeadError(f"actor {self.id} is not running")
        return self._actor

    @property
    def alive(self) -> bool:
        """True while the current incarnation accepts messages."""
        return self._actor is not None and self._actor.alive

    def mailbox_stats(self) -> MailboxStats:
        """`Actor.mailbox_stats` of the current incarnation (zeros when none runs)."""
        return self._actor.mailbox_stats() if self._actor is not None else _EMPTY_STATS

    def tell(self, message: Any, reply: Reply | None = None, *, lane: Lane = Lane.NORMAL) -> None:
        """`Actor.tell` on the current incarnation."""
        self._current().tell(message, reply, lane=lane)

    async def ask(
        self, message: Any, timeout: float | None = 5.0, *, lane: Lane = Lane.NORMAL
    ) -> Any:
        """`Actor.ask` on the current incarnation."""
        return await self._current().ask(message, timeout, lane=lane)

    async def ask_or_none(self, message: Any, timeout: float = 2.0) -> Any:
        """Ask on the urgent lane for a read-out (a status, stats): None when no
        incarnation runs, the lane is full, or no answer comes within `timeout`."""
        try:
            return await self.ask(message, timeout, lane=Lane.URGENT)
        except (ActorDeadError, MailboxFullError, TimeoutError):
            return None
