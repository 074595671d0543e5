"""`LeaderElector`: which router writes, decided with a JetStream KV key.

The leader holds one key (`leader` in a KV bucket) and rewrites it every `tick`
seconds, each time conditional on the revision it wrote last. A standby reads the key
every `tick`; when the key has not changed for `failover_after` seconds, it takes it
with a write conditional on the revision it saw: of several standbys one wins, and a
leader that still renews makes the takeover fail. The KV revision that made a router
leader is its term.

A leader counts itself leader only until `failover_after` (less a margin) after the
send time of its last successful renewal: by then no standby can have taken over
(each waits that long from when it *saw* the renewal). That is the fast path; the
fence is the registry stream itself: a new leader's first write is a term marker and
every write is conditional on the stream's last sequence, so an old leader cannot
write after its successor has, however long it was paused.

The elector tells the registry `Elected`, `LeaseRenewed` and `LostLeadership`; the
registry tells it `Resign` (with the term) whenever it stops leading on its own: its
stream writes were fenced off or not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from enum import StrEnum
from typing import Any

import nats.errors
import structlog
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from actors.actor import Actor, ActorDeadError, ActorRef, Lane, MailboxFullError, Message
from actors.errors import StartupError
from actors.nats_connection import connect_at_start
from sdk.connection import GuardedClient, NatsAuth

__all__ = [
    "Elected",
    "LeaderElector",
    "LeaseRenewed",
    "LostLeadership",
    "Resign",
    "Role",
]

log = structlog.get_logger(component="leadership")

_KEY = "leader"


class Role(StrEnum):
    """What a router is doing."""

    LEADER = "leader"
    STANDBY = "standby"
    MEMORY = "memory"
    """The single router of an in-memory registry."""


class Elected(Message, frozen=True):
    """To the registry: this router holds the leadership from `term` on, until
    `valid_until` (loop time) unless renewed."""

    term: int
    valid_until: float


class LeaseRenewed(Message, frozen=True):
    """To the registry: the leadership holds until `valid_until` (loop time)."""

    valid_until: float


class LostLeadership(Message, frozen=True):
    """To the registry: stop writing; another router may be leader already."""

    reason: str


class Resign(Message, frozen=True):
    """From the registry: it stopped leading in `term` (its writes were fenced off, or
    not stored); give that term's leadership up. A later term is kept."""

    reason: str
    term: int


class _Tick(Message, frozen=True):
    pass


_TICK = _Tick()


class LeaderElector(Actor):
    """Campaigns for, holds and gives up the leadership (see the module)."""

    def __init__(
        self,
        registry: ActorRef,
        nats_url: str,
        *,
        auth: NatsAuth | None = None,
        bucket: str = "IPC_ROUTER_LEADER",
        replicas: int = 1,
        failover_after: float = 0.5,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__("leader-elector")
        self._registry = registry
        self._url = nats_url
        self._auth = auth or NatsAuth()
        self._bucket = bucket
        self._replicas = replicas
        self.failover_after = failover_after
        self.tick = failover_after / 5
        self._startup_timeout = startup_timeout
        self.router_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._value = json.dumps({"router": self.router_id}).encode()
        """What this router writes in the leadership key."""
        self._nc: GuardedClient | None = None
        self._kv: KeyValue | None = None
        self._role = Role.STANDBY
        self._revision = 0
        """Leader: the revision of our last write. Standby: the last revision seen."""
        self._term = 0
        """Leader: the revision that won the leadership."""
        self._seen_at = 0.0
        """Standby: loop time the key was last seen to change (or be absent)."""
        self._valid_until = 0.0
        self._quiet_until = 0.0
        """After resigning, no campaign before this (let another router take over)."""
        self._timer: asyncio.TimerHandle | None = None

    async def on_start(self) -> None:
        self._nc = GuardedClient()
        await connect_at_start(
            self._nc, self._url, auth=self._auth, timeout=self._startup_timeout,
            name="ipc-router-leadership",
        )  # fmt: skip
        js = self._nc.jetstream()
        for attempt in range(40):
            try:
                # An existing bucket is used as it is (routers started with other
                # settings, earlier or beside this one, share it); only a missing one
                # is created.
                try:
                    self._kv = await js.key_value(self._bucket)
                except BucketNotFoundError:
                    self._kv = await js.create_key_value(
                        bucket=self._bucket,
                        history=1,
                        # A dead leader's key goes away by itself in the end, even if
                        # no standby is watching.
                        ttl=max(10 * self.failover_after, 5.0),
                        replicas=self._replicas,
                    )
                break
            except (nats.errors.Error, OSError) as error:
                if attempt == 39:
                    raise StartupError(
                        f"cannot use the leadership bucket {self._bucket}: {error!r}; may the "
                        "router user use JetStream (see deploy/nats-server.conf)?"
                    ) from None
                await asyncio.sleep(0.25)  # a new cluster is still electing its leaders
        self._seen_at = asyncio.get_running_loop().time()
        self._schedule()

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._role is Role.LEADER and self._kv is not None:
            with contextlib.suppress(Exception):
                # Let a standby take over at once rather than after failover_after.
                await asyncio.wait_for(self._kv.delete(_KEY, last=self._revision), 1.0)
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def handle(self, message: Any) -> Any:
        match message:
            case _Tick():
                self._timer = None
                try:
                    if self._role is Role.LEADER:
                        await self._renew()
                    else:
                        await self._watch()
                finally:
                    self._schedule()
                return None
            case Resign(reason=reason, term=term):
                if self._role is Role.LEADER and term == self._term:
                    await self._give_up(f"resigned: {reason}")
                return None
            case _:
                raise TypeError(f"leader elector cannot handle {type(message).__name__}")

    # -- the two loops -------------------------------------------------------------

    async def _watch(self) -> None:
        """Standby: read the key; take it when absent, or unchanged for too long."""
        assert self._kv is not None
        now = asyncio.get_running_loop().time()
        if now < self._quiet_until:
            return
        try:
            entry = await self._kv.get(_KEY)
        except KeyNotFoundError:
            await self._campaign(None)
            return
        except (nats.errors.Error, OSError) as error:
            log.debug("leader_key_unreadable", error=repr(error))
            return
        revision = entry.revision or 0
        if revision != self._revision:
            self._revision, self._seen_at = revision, now
            return
        if now - self._seen_at >= self.failover_after:
            await self._campaign(revision)

    async def _campaign(self, revision: int | None) -> None:
        """Claim the key: create it, or replace the stale revision we saw."""
        assert self._kv is not None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            if revision is None:
                term = await self._kv.create(_KEY, self._value)
            else:
                term = await self._kv.update(_KEY, self._value, last=revision)
        except (KeyWrongLastSequenceError, nats.errors.Error, OSError) as error:
            log.debug("campaign_lost", error=repr(error))
            self._seen_at = loop.time()  # somebody moved: watch again from now
            return
        self._role = Role.LEADER
        self._revision = self._term = term
        self._valid_until = sent + self._validity()
        log.info("leadership_won", term=term, router=self.router_id)
        self._tell(Elected(term=term, valid_until=self._valid_until))

    async def _renew(self) -> None:
        """Leader: rewrite the key on our last revision."""
        assert self._kv is not None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            self._revision = await self._kv.update(_KEY, self._value, last=self._revision)
        except KeyWrongLastSequenceError:
            await self._give_up("another router took the leadership")
            return
        except (nats.errors.Error, OSError) as error:
            if loop.time() >= self._valid_until:
                await self._give_up(f"could not renew the leadership in time: {error!r}")
            return
        if sent > self._valid_until:
            # Paused (or cut off) for longer than the lease: a standby may have taken
            # over and written; our renewal went through only because none did yet.
            # Stand down all the same: the registry has already stopped writing.
            await self._give_up("the leadership lapsed before it was renewed")
            return
        self._valid_until = sent + self._validity()
        self._tell(LeaseRenewed(valid_until=self._valid_until))

    async def _give_up(self, reason: str) -> None:
        log.warning("leadership_lost", reason=reason, router=self.router_id)
        loop = asyncio.get_running_loop()
        self._role = Role.STANDBY
        self._tell(LostLeadership(reason=reason))
        self._seen_at = loop.time()
        self._quiet_until = loop.time() + self.failover_after
        if self._kv is not None:
            with contextlib.suppress(KeyWrongLastSequenceError, nats.errors.Error, OSError):
                await self._kv.delete(_KEY, last=self._revision)

    def _validity(self) -> float:
        # A margin for clocks that run at slightly different rates on two machines.
        return self.failover_after * 0.8

    def _tell(self, message: Message) -> None:
        try:
            self._registry.tell(message, lane=Lane.URGENT)
        except (ActorDeadError, MailboxFullError) as error:
            log.warning("registry_not_told", message=type(message).__name__, error=repr(error))

    def _schedule(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.tick, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        with contextlib.suppress(ActorDeadError, MailboxFullError):
            self.tell(_TICK, lane=Lane.URGENT)
