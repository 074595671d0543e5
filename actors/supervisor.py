"""A one-for-one supervisor in the OTP manner.

Children start in order and stop in reverse. A child that crashes is started
again from its spec; more than `max_restarts` restarts within `within_seconds`
means something is badly wrong, so the supervisor stops every child and fails,
and the process exits non-zero rather than limping on. So it does at once when a
child fails with `FatalError` (it knows a restart would not help), or when a restart
fails with `StartupError` (the child cannot start as things are: a restart loop that
takes its time per attempt would never reach the intensity, and would limp on).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from actors.actor import Actor, ActorRef
from actors.errors import FatalError, StartupError

__all__ = ["ActorRef", "ChildSpec", "RestartIntensityError", "Supervisor"]

log = structlog.get_logger(component="supervisor")


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start (and restart) one child."""

    id: str
    factory: Callable[[], Actor]
    shutdown_timeout: float = 5.0


class RestartIntensityError(RuntimeError):
    """The supervisor gave up: children crashed more often than the restart intensity
    allows, or one cannot go on (`FatalError`) or cannot be started again."""


class Supervisor:
    """Starts, watches and restarts a list of child actors (one-for-one)."""

    def __init__(
        self,
        children: list[ChildSpec],
        *,
        max_restarts: int = 3,
        within_seconds: float = 5.0,
        refs: dict[str, ActorRef] | None = None,
    ) -> None:
        """`refs`: refs made beforehand (children that need each other's refs get them
        before the supervisor exists); the others are made here."""
        self._specs = list(children)
        given = refs or {}
        self.refs: dict[str, ActorRef] = {
            spec.id: given.get(spec.id) or ActorRef(spec.id) for spec in children
        }
        self._actors: dict[str, Actor] = {}
        """The current incarnation of each started child."""
        self._max_restarts = max_restarts
        self._within = within_seconds
        self._restart_times: deque[float] = deque()
        self._crashed: asyncio.Queue[tuple[ChildSpec, BaseException]] = asyncio.Queue()
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self.done: asyncio.Future[None] | None = None
        """Completes when the supervisor has stopped; fails with
        `RestartIntensityError` if it gave up."""

    def ref(self, child_id: str) -> ActorRef:
        """The stable reference to a child."""
        return self.refs[child_id]

    async def start(self) -> None:
        """Start every child in order; returns once all are ready.

        If a child fails to start, the ones already started are stopped in reverse
        order and the error is raised."""
        self.done = asyncio.get_running_loop().create_future()
        started: list[ChildSpec] = []
        try:
            for spec in self._specs:
                await self._start_child(spec)
                started.append(spec)
        except BaseException:
            self._stopping = True
            await self._stop_children(reversed(started))
            self.done.set_result(None)
            raise
        self._watcher = asyncio.create_task(self._watch(), name="supervisor")

    async def stop(self) -> None:
        """Stop every child in reverse order. Idempotent."""
        if self._stopping:
            if self._watcher is not None:
                await asyncio.gather(self._watcher, return_exceptions=True)
            return
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        await self._stop_children(reversed(self._specs))
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def _start_child(self, spec: ChildSpec) -> None:
        actor = spec.factory()
        await actor.start()
        self._actors[spec.id] = actor
        self.refs[spec.id].bind(actor)
        assert actor.task is not None
        actor.task.add_done_callback(lambda task: self._on_child_exit(spec, actor, task))
        log.debug("child_started", child=spec.id)

    def _on_child_exit(self, spec: ChildSpec, actor: Actor, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            error: BaseException | None = None
        else:
            error = task.exception()
        if self._stopping or self._actors.get(spec.id) is not actor:
            return
        if error is None:
            # A child that ends cleanly (or is cancelled) without being asked to is
            # still a failure for a permanent child: the system needs it.
            error = RuntimeError(f"child {spec.id} stopped unexpectedly")
        log.error("child_crashed", child=spec.id, error=repr(error))
        self._crashed.put_nowait((spec, error))

    async def _watch(self) -> None:
        while True:
            spec, error = await self._crashed.get()
            if isinstance(error, FatalError):
                await self._give_up(spec, f"{spec.id} cannot go on: {error}")
                return
            if not self._allow_restart():
                log.critical(
                    "restart_intensity_exceeded",
                    child=spec.id,
                    max_restarts=self._max_restarts,
                    within_seconds=self._within,
                )
                await self._give_up(
                    spec,
                    f"more than {self._max_restarts} restarts within {self._within} s "
                    f"(last crash: {spec.id})",
                )
                return
            try:
                await self._start_child(spec)
                log.warning("child_restarted", child=spec.id)
            except StartupError as failure:
                log.error("child_restart_failed", child=spec.id, error=repr(failure))
                await self._give_up(spec, f"{spec.id} could not be started again: {failure}")
                return
            except Exception as failure:  # noqa: BLE001 - a failed restart is another crash
                log.error("child_restart_failed", child=spec.id, error=repr(failure))
                self._crashed.put_nowait((spec, failure))

    async def _give_up(self, spec: ChildSpec, reason: str) -> None:
        """Stop every child and fail `done` (the process exits non-zero)."""
        log.critical("supervisor_gave_up", child=spec.id, reason=reason)
        self._stopping = True
        await self._stop_children(reversed(self._specs))
        assert self.done is not None
        self.done.set_exception(RestartIntensityError(f"{reason}; giving up"))

    def _allow_restart(self) -> bool:
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > self._within:
            self._restart_times.popleft()
        if len(self._restart_times) >= self._max_restarts:
            return False
        self._restart_times.append(now)
        return True

    async def _stop_children(self, specs: Any) -> None:
        for spec in specs:
            actor = self._actors.get(spec.id)
            if actor is None:
                continue
            try:
                await actor.stop(spec.shutdown_timeout)
            except Exception as error:  # noqa: BLE001 - keep stopping the others
                log.error("child_stop_failed", child=spec.id, error=repr(error))
            log.debug("child_stopped", child=spec.id)
