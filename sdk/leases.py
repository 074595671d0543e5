"""`LeaseKeeper`: keeps the instances a `ServiceClient` registered alive.

One background task renews every held lease once per heartbeat interval, on a fixed
schedule. The router's answers steer it: 404 (it does not know the instance, after a
restart for instance) registers the instance again after a jittered pause; 404
`instance_removed` (an operator removed it) gives it up with a warning and a call to
`on_removed`; 403 (another client owns it) and 409 on that re-registration (another
client took the id while the router had forgotten it) give the instance up with an
error log.

The keeper sends nothing by itself: its owner hands it three callables (send one
request, register again, deregister once), so that it needs no NATS connection and
can be tested with fakes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from protocol import HEARTBEAT_SUBJECT, ErrorCode, LeaseReply, LeaseRequest, Status
from sdk.errors import RegistryError

__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DeregisterOnce",
    "LeaseKeeper",
    "RegisterAgain",
    "SendRequest",
]

# The SDK's logger: its heartbeat messages are documented as coming from it.
log = logging.getLogger("ipc_router.sdk")

DEFAULT_HEARTBEAT_INTERVAL = 1.0
"""Seconds between heartbeats until a router tells otherwise."""

SendRequest: TypeAlias = Callable[[str, LeaseRequest, float], Awaitable[LeaseReply]]
"""`send(subject, request, timeout)`: one request, no retries; returns the reply.
Raises `RegistryError` when no reply came (no router, timeout, lost connection)."""

RegisterAgain: TypeAlias = Callable[[str, str, dict[str, Any]], Awaitable[object]]
"""`register_again(service_name, instance_id, metadata)`, with the owner's retries.
Raises `RegistryError` when the router refuses or cannot be reached."""

DeregisterOnce: TypeAlias = Callable[[str, str], Awaitable[None]]
"""`deregister_once(service_name, instance_id)`: one try, best effort, never raises."""


@dataclass(slots=True)
class _Lease:
    """An instance the keeper keeps alive."""

    service_name: str
    instance_id: str
    metadata: dict[str, Any]
    heartbeat: LeaseRequest
    """The heartbeat request, built once (a nonce is added per beat)."""
    reregistering: asyncio.Task[None] | None = None


class LeaseKeeper:
    """Renews the leases of one client session in the background.

    The owner adds instances with `hold()` after registering them, starts the loop
    with `start()`, and drops an instance with `release()` before deregistering it.
    `close()` stops for good and deregisters every held instance once.
    """

    def __init__(
        self,
        session_id: str,
        *,
        send_request: SendRequest,
        register_again: RegisterAgain,
        deregister_once: DeregisterOnce,
        interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        on_removed: Callable[[str, str], None] | None = None,
    ) -> None:
        self.interval = interval
        """Seconds between heartbeats; takes effect from the next beat on."""
        self._session_id = session_id
        self._send_request = send_request
        self._register_again = register_again
        self._deregister_once = deregister_once
        self._on_removed = on_removed
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def held(self) -> list[tuple[str, str]]:
        """(service_name, instance_id) of every instance being kept alive."""
        return list(self._leases)

    @property
    def running(self) -> bool:
        """True while the heartbeat loop runs."""
        return self._task is not None and not self._task.done()

    def hold(self, service_name: str, instance_id: str, metadata: dict[str, Any]) -> None:
        """Keep an instance alive from now on. For one already held, only replace the
        metadata it is registered again with."""
        lease = self._leases.get((service_name, instance_id))
        if lease is not None:
            lease.metadata = metadata
            return
        heartbeat = LeaseRequest(
            service_name=service_name, instance_id=instance_id, session_id=self._session_id
        )
        self._leases[service_name, instance_id] = _Lease(
            service_name, instance_id, metadata, heartbeat
        )

    async def release(self, service_name: str, instance_id: str) -> None:
        """Stop keeping an instance alive, and wait until a re-registration of it in
        flight is cancelled. Sends nothing: deregistering is the owner's job."""
        lease = self._leases.pop((service_name, instance_id), None)
        if lease is not None and lease.reregistering is not None:
            lease.reregistering.cancel()
            await asyncio.gather(lease.reregistering, return_exceptions=True)

    def start(self) -> None:
        """Start the heartbeat loop (no-op while it runs, or once closed). The first
        beat is one interval from now."""
        if self._closed or self.running:
            return
        self._task = asyncio.create_task(self._beat_forever(), name="ipc-router-heartbeats")

    async def stop(self) -> None:
        """Stop the loop and every re-registration in flight, and wait for them. The
        leases stay held: `start()` resumes."""
        tasks = [lease.reregistering for lease in self._leases.values() if lease.reregistering]
        if self._task is not None:
            tasks.append(self._task)
            self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A task cancelled before it first ran never reaches its own cleanup.
        for lease in self._leases.values():
            lease.reregistering = None

    async def close(self) -> None:
        """Stop for good, deregister every held instance (one try each, all at once,
        failures only logged) and forget them. Idempotent."""
        self._closed = True
        await self.stop()
        if self._leases:
            await asyncio.gather(
                *(self._deregister_once(*key) for key in list(self._leases)),
                return_exceptions=True,
            )
        self._leases.clear()

    # -- internals -------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        """Renew every lease once per interval, on a fixed schedule that does not
        drift, and without a burst of catch-up beats after a pause."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            interval = self.interval
            next_beat += interval
            now = loop.time()
            next_beat = max(next_beat, now)
            await asyncio.sleep(next_beat - now)
            # Woken late (a pause, a blocked loop): one beat now, and the schedule goes
            # on from now rather than making up for the beats it missed.
            next_beat = max(next_beat, loop.time() - interval / 2)
            leases = [lease for lease in self._leases.values() if lease.reregistering is None]
            results = await asyncio.gather(
                *(self._renew(lease, interval) for lease in leases), return_exceptions=True
            )
            for result in results:
                if isinstance(result, Exception):  # keep beating for the others
                    log.warning("heartbeat failed unexpectedly: %r", result)

    async def _renew(self, lease: _Lease, interval: float) -> None:
        try:
            reply = await self._send_request(HEARTBEAT_SUBJECT, lease.heartbeat, interval)
        except RegistryError as error:
            # No router, or no reply in time: the next beat is the retry.
            log.debug(
                "heartbeat failed for %s/%s: %r", lease.service_name, lease.instance_id, error
            )
            return
        if not self._holds(lease):
            return  # released (or closing) while the beat was in flight
        if reply.status == Status.NOT_FOUND and reply.error is not None and (
            reply.error.code == ErrorCode.INSTANCE_REMOVED
        ):
            log.warning(
                "an operator removed %s/%s; no longer renewing it, nor registering it again "
                "(register it again to come back)",
                lease.service_name,
                lease.instance_id,
            )
            self._leases.pop((lease.service_name, lease.instance_id), None)
            if self._on_removed is not None:
                try:
                    self._on_removed(lease.service_name, lease.instance_id)
                except Exception:  # a user callback must not stop the heartbeats
                    log.exception("on_removed callback failed")
        elif reply.status == Status.NOT_FOUND:
            log.info(
                "router does not know %s/%s; registering it again",
                lease.service_name,
                lease.instance_id,
            )
            lease.reregistering = asyncio.create_task(self._reregister(lease, interval))
        elif reply.status == Status.FORBIDDEN:
            log.error(
                "router says %s/%s belongs to another client; no longer renewing it",
                lease.service_name,
                lease.instance_id,
            )
            self._leases.pop((lease.service_name, lease.instance_id), None)

    async def _reregister(self, lease: _Lease, interval: float) -> None:
        """Register a lease again after a jittered pause, so that thousands of
        instances do not all hit a restarted router in the same instant."""
        try:
            await asyncio.sleep(random.uniform(0, interval / 2))
            if not self._holds(lease):
                return
            await self._register_again(lease.service_name, lease.instance_id, lease.metadata)
            if not self._holds(lease):
                # Released while the registration was in flight: undo it.
                await self._deregister_once(lease.service_name, lease.instance_id)
                return
            log.info("registered %s/%s again", lease.service_name, lease.instance_id)
        except RegistryError as error:
            if error.status == Status.CONFLICT:
                log.error(
                    "%s/%s was claimed by another client while the router forgot it; "
                    "no longer renewing it",
                    lease.service_name,
                    lease.instance_id,
                )
                self._leases.pop((lease.service_name, lease.instance_id), None)
            else:
                log.warning(
                    "registering %s/%s again failed (%s); will retry on the next heartbeat",
                    lease.service_name,
                    lease.instance_id,
                    error,
                )
        finally:
            lease.reregistering = None

    def _holds(self, lease: _Lease) -> bool:
        return (
            not self._closed and self._leases.get((lease.service_name, lease.instance_id)) is lease
        )
