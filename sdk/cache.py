"""`ServiceCache`: an always-fresh local view of one service's usable instances (ONLINE,
not in maintenance).

It reads a snapshot, then applies the router's change events in revision order.
Each event names the revision of the previous change to the same service, so a
missed event shows up as a mismatch and the cache reads a fresh snapshot. A
periodic check catches a missed last event too.

A restarted router (new epoch) starts with an empty memory that fills as services
register again. The cache does not follow it down to zero: until the new router
has been up for one lease TTL, instances it reports are added to the last known
view but nothing is dropped; then the router's own view replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from protocol import Instance, InstanceStatus, RegistryEvent, ServiceDetail
from sdk.choice import InstanceChooser, Preference, Strategy

if TYPE_CHECKING:
    from sdk.client import EventSubscription, ServiceClient

__all__ = ["ServiceCache"]

log = logging.getLogger("ipc_router.sdk.cache")

_DEFAULT_CHECK_INTERVAL = 3.0
_CLOSE_WAIT = 1.0
"""Seconds `close()` waits for the cache's task to end once cancelled."""


class _Check:
    """Queue item: time for the periodic consistency check."""


class ServiceCache:
    """The usable instances of one service (ONLINE, not in maintenance), kept fresh by
    change events.

    Create it with `await client.discover(name)` (started) or use it as an async
    context manager. Read `instances` at any time (or `len(cache)`, `id in cache`,
    `cache.get(id)`); `choose()` picks one instance to call; `wait_for()` waits for a
    condition; `on_change(cache)` is called after every change.

    `rng` (a `random.Random`) drives `choose()`'s random choices; tests seed one.
    """

    def __init__(
        self,
        client: ServiceClient,
        service_name: str,
        *,
        check_interval: float | None = None,
        on_change: Callable[[ServiceCache], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self.service_name = service_name
        self._check_interval = check_interval
        self._on_change = on_change
        self._view: dict[str, Instance] = {}
        self._sorted: list[Instance] | None = []
        self.epoch: str | None = None
        """Epoch of the router incarnation the view follows."""
        self.service_revision = 0
        """Revision of the last change applied."""
        self._lease_ttl = _DEFAULT_CHECK_INTERVAL
        self._grace_until: float | None = None
        self._queue: asyncio.Queue[RegistryEvent | _Check] = asyncio.Queue()
        self._subscription: EventSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.resyncs = 0
        """Snapshots read after the first (gaps, restarts, failed checks)."""
        self._chooser = InstanceChooser(lambda: self.instances, rng)

    # -- public ----------------------------------------------------------------------

    @property
    def instances(self) -> list[Instance]:
        """The usable instances, sorted by instance id (each at most once)."""
        if self._sorted is None:
            self._sorted = [self._view[key] for key in sorted(self._view)]
        return self._sorted

    def __len__(self) -> int:
        return len(self._view)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._view

    def get(self, instance_id: str) -> Instance | None:
        """The instance with this id, if it is usable (ONLINE, not in maintenance)."""
        return self._view.get(instance_id)

    def choose(
        self, *, strategy: Strategy = "round_robin", prefer: Preference | None = None
    ) -> Instance | None:
        """One usable instance (ONLINE, not in maintenance) to send a request to, or
        None when the view has none. Synchronous: it reads the local view, no I/O.

        None rather than an exception: an empty view is an ordinary state (the service
        is not up yet, or is between deploys) that the caller handles where it calls,
        as it does `get()`'s None, and the `Instance | None` type makes mypy insist on
        it. The SDK's exceptions stand for answers from the router; this asks none.

        - `"round_robin"` (default): each instance in turn, in instance id order,
          starting at a random place. A change to the view does not restart the cycle:
          it goes on after the instance chosen last.
        - `"random"`: uniformly at random.
        - `"weighted"`: at random in proportion to `metadata["weight"]`, a finite
          number >= 0 (int or float, not bool). A missing or invalid weight (a string,
          a negative number, ...) counts as 1; an instance of weight 0 is never chosen,
          unless all weigh 0, and then the choice is uniform.

        `prefer={"zone": "a"}` chooses among the instances whose metadata has every
        key with an equal value (as the router's metadata filter matches them, so
        `{"replicas": "3"}` finds `{"replicas": 3}`), and among all usable instances
        when none matches. Each preference has its own round robin.

        Cheap: the tables are built when the view has changed, on the first call after
        it; a call then allocates nothing beyond, with `prefer`, its lookup key (up to
        `sdk.choice.MAX_PREFERENCES` distinct preferences are kept). Call it from the
        event loop's thread only (it takes no lock: it never awaits, so the view cannot
        change during a call). Raises ValueError for an unknown strategy.
        """
        return self._chooser.choose(strategy, prefer)

    async def start(self) -> None:
        """Subscribe to events, read the first snapshot, and keep the view fresh."""
        self._subscription = await self._client.subscribe_events(
            self.service_name, self._queue.put_nowait
        )
        try:
            await self._resync(initial=True)
        except BaseException:
            await self.close()
            raise
        self._task = asyncio.create_task(self._run(), name=f"service-cache:{self.service_name}")

    async def close(self) -> None:
        """Stop following changes (the last view stays readable). Idempotent; returns
        within a second whatever the task it stops is doing."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=_CLOSE_WAIT)
            if done and not task.cancelled():
                task.exception()  # (retrieved: it ended by itself)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_for(
        self, predicate: Callable[[list[Instance]], bool], timeout: float | None = None
    ) -> list[Instance]:
        """Wait until `predicate(instances)` is true; returns the instances."""

        async def wait() -> list[Instance]:
            while not predicate(self.instances):
                self._changed.clear()
                await self._changed.wait()
            return self.instances

        async with asyncio.timeout(timeout):  # (not wait_for: see _run)
            return await wait()

    # -- internals -------------------------------------------------------------------

    @property
    def _interval(self) -> float:
        return self._check_interval if self._check_interval is not None else self._lease_ttl

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            timeout = self._interval
            if self._grace_until is not None:
                timeout = max(0.0, min(timeout, self._grace_until - loop.time()))
            try:
                # (asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that comes as an event does, and close() then waits for
                # ever: CPython gh-86296.)
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                item = _Check()
            try:
                if isinstance(item, _Check):
                    await self._check()
                else:
                    await self._apply(item)
            except Exception as error:  # noqa: BLE001 - the cache must outlive one failure
                # Router unreachable (or worse): keep the last view, try again later.
                log.info("service cache %s could not refresh: %r", self.service_name, error)
                if self._grace_until is not None and loop.time() >= self._grace_until:
                    self._grace_until = loop.time() + self._interval  # not in a tight loop

    async def _check(self) -> None:
        loop = asyncio.get_running_loop()
        if self._grace_until is not None and loop.time() >= self._grace_until:
            await self._resync()
            return
        probe = await self._client.service_stamp(self.service_name)
        if (probe.epoch, probe.service_revision) != (self.epoch, self.service_revision):
            log.info("service cache %s is behind the router; resyncing", self.service_name)
            await self._resync()

    async def _apply(self, event: RegistryEvent) -> None:
        if event.epoch != self.epoch:
            await self._resync()  # a restarted router, or an event from before our snapshot
            return
        if event.revision <= self.service_revision:
            return  # already in the snapshot
        if event.previous_revision != self.service_revision:
            log.info(
                "service cache %s missed an event (expected previous %d, got %d); resyncing",
                self.service_name,
                self.service_revision,
                event.previous_revision,
            )
            await self._resync()
            return
        self.service_revision = event.revision
        instance = event.instance
        if instance.status is InstanceStatus.ONLINE and instance.maintenance is None:
            self._view[instance.instance_id] = instance
        else:
            self._view.pop(instance.instance_id, None)
        self._publish()

    async def _resync(self, *, initial: bool = False) -> None:
        snapshot = await self._client.get_service(self.service_name)
        if not initial:
            self.resyncs += 1
        self._take(snapshot)

    def _take(self, snapshot: ServiceDetail) -> None:
        if snapshot.epoch == self.epoch and snapshot.service_revision < self.service_revision:
            # From a router behind the one whose events it holds (a standby that lost
            # its link to the stream, say): the cache never moves backwards.
            log.info("service cache %s ignored an older snapshot (revision %d < %d)",
                     self.service_name, snapshot.service_revision, self.service_revision)  # fmt: skip
            return
        loop = asyncio.get_running_loop()
        self._lease_ttl = snapshot.lease_ttl or _DEFAULT_CHECK_INTERVAL
        fresh = {
            instance.instance_id: instance
            for instance in snapshot.instances
            if instance.maintenance is None  # (a router leaves them out already)
        }
        restarted = self.epoch is not None and snapshot.epoch != self.epoch
        young = snapshot.router_uptime < snapshot.lease_ttl
        if restarted and young and self._view:
            # Keep what we knew until the new router has had a lease TTL to relearn it.
            self._grace_until = loop.time() + snapshot.lease_ttl - snapshot.router_uptime
            self._view.update(fresh)
            log.info(
                "router restarted; keeping %d known instances of %s for %.1f s",
                len(self._view),
                self.service_name,
                self._grace_until - loop.time(),
            )
        elif self._grace_until is not None and snapshot.epoch == self.epoch and young:
            self._view.update(fresh)  # still in the grace period: only add
        else:
            self._grace_until = None
            self._view = fresh
        self.epoch = snapshot.epoch
        self.service_revision = snapshot.service_revision
        self._publish()

    def _publish(self) -> None:
        self._sorted = None  # sorted again on the next read, not on every event
        self._chooser.invalidate()
        self._changed.set()
        if self._on_change is not None:
            try:
                self._on_change(self)
            except Exception:  # a user callback must not stop the cache
                log.exception("service cache on_change callback failed")
