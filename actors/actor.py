"""A minimal actor on plain asyncio: a mailbox, `tell`, `ask` and a lifecycle.

One task per actor takes envelopes from the mailbox one at a time, so whatever
state the actor owns is only ever touched by that task: no locks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

__all__ = [
    "Actor",
    "ActorDeadError",
    "AskTimeoutError",
    "Envelope",
    "FutureReply",
    "MailboxFullError",
    "Reply",
]

log = structlog.get_logger(component="actor")


class ActorDeadError(RuntimeError):
    """The actor is not running (not started yet, stopped, or crashed)."""


class MailboxFullError(RuntimeError):
    """The actor's bounded mailbox is full: the caller should retry later."""


class AskTimeoutError(TimeoutError):
    """The actor did not answer an `ask` in time."""


class Reply(Protocol):
    """Where the outcome of handling one message goes."""

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


@dataclass(slots=True)
class Envelope:
    """A message plus, for requests, where its reply goes."""

    message: Any
    reply: Reply | None = None


class _Stop:
    pass


@dataclass(slots=True)
class _Crash:
    error: BaseException


_STOP = _Stop()


class Actor:
    """Base class: subclass and implement `handle`.

    Exceptions whose type is in `caller_errors` raised by `handle` go back to the
    caller of `ask` and the actor carries on. Any other exception is a crash: the
    caller gets it, every other pending request gets `ActorDeadError`, and the
    actor stops (its supervisor may then start a fresh one).
    """

    caller_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, name: str, *, mailbox_size: int = 0) -> None:
        """Create a stopped actor; `mailbox_size` 0 means unbounded."""
        self.name = name
        self._mailbox_size = mailbox_size
        self._mailbox: deque[Envelope] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
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

    def on_mailbox_empty(self) -> None:
        """Runs each time the actor has handled every queued message, before it waits
        for more: the place to flush work batched across messages. Raising crashes
        the actor."""

    # -- public API ------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the actor accepts messages."""
        return self._accepting

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The task running the mailbox loop (done once the actor ended)."""
        return self._task

    def tell(self, message: Any, reply: Reply | None = None) -> None:
        """Queue a message without waiting. `reply`, if given, gets the outcome.

        Raises:
            ActorDeadError: the actor is not running.
            MailboxFullError: the bounded mailbox is full.
        """
        if not self._accepting:
            raise ActorDeadError(f"actor {self.name} is not running")
        if self._mailbox_size and len(self._mailbox) >= self._mailbox_size:
            raise MailboxFullError(f"actor {self.name} mailbox is full ({self._mailbox_size})")
        self._mailbox.append(Envelope(message, reply))
        self._wake()

    async def ask(self, message: Any, timeout: float | None = 5.0) -> Any:
        """Send a message and wait for the reply.

        Raises:
            ActorDeadError: the actor is not running or ended before answering.
            MailboxFullError: the bounded mailbox is full.
            AskTimeoutError: no answer within `timeout` seconds.
            Exception: whatever `handle` raised for this message.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.tell(message, FutureReply(future))
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
            self._mailbox.append(Envelope(_STOP))
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
            self._mailbox.append(Envelope(_Crash(error)))
            self._wake()

    # -- internals -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next(self) -> Envelope:
        if not self._mailbox:
            self.on_mailbox_empty()
        while not self._mailbox:
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        return self._mailbox.popleft()

    async def _run(self) -> None:
        try:
            while True:
                envelope = await self._next()
                message = envelope.message
                if message is _STOP:
                    break
                if isinstance(message, _Crash):
                    raise message.error
                try:
                    result = await self.handle(message)
                except asyncio.CancelledError:
                    if envelope.reply is not None:
                        envelope.reply.reject(ActorDeadError(f"actor {self.name} stopped"))
                    raise
                except self.caller_errors as error:
                    if envelope.reply is None:
                        raise
                    envelope.reply.reject(error)
                    continue
                except Exception as error:
                    if envelope.reply is not None:
                        envelope.reply.reject(error)
                    raise
                if envelope.reply is not None:
                    envelope.reply.resolve(result)
        except Exception as error:
            self.failure = error
            self._accepting = False
            self._reject_pending()
            try:
                await self.on_failure(error)
            except Exception:  # noqa: BLE001 - the original failure matters more
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
        while self._mailbox:
            envelope = self._mailbox.popleft()
            if envelope.reply is not None:
                envelope.reply.reject(ActorDeadError(f"actor {self.name} stopped"))

    async def _safe_on_stop(self) -> None:
        try:
            await self.on_stop()
        except Exception:  # noqa: BLE001 - see on_stop docstring
            log.exception("actor_on_stop_failed", actor=self.name)
