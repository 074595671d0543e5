"""`LeaderElector`: the actor that holds (or watches) the leadership key.

Which router writes is decided with one key (`leader`) in a JetStream KV bucket; the
rules are `ElectionState`'s (election_state.py, pure): this actor only carries out
its effects against the bucket and the registry, and feeds back what came of them.
Every KV request is bounded by a timeout derived from `--failover-after`, not nats-py's
default of 5 s: a renewal that cannot be made in time is a lost leadership, not a
long wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from typing import Any

import nats.errors
import structlog
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
)
from nats.js.kv import KeyValue

from actors.actor import Actor, ActorDeadError, ActorRef, Lane, MailboxFullError, Message
from actors.election_state import (
    BucketEnsured,
    Campaign,
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
    Tick,
    Won,
)
from actors.errors import StartupError
from actors.nats_connection import connect_at_start
from actors.role_state import Report, Resign, Role
from sdk.connection import DEAD_LINK_AFTER, GuardedClient, NatsAuth

__all__ = ["GetElection", "LeaderElector", "Role"]

log = structlog.get_logger(component="leadership")

_KEY = "leader"
_FAILED = (nats.errors.Error, OSError, TimeoutError)
"""What a KV request raises when the server did not answer, or not in time."""


class _Tick(Message, frozen=True):
    pass


_TICK = _Tick()


class GetElection(Message, frozen=True):
    """-> the elector's phase and its event counts, `(Campaign, dict[str, int])`."""


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
        router_id: str = "ipc-router",
        dead_link_after: float = DEAD_LINK_AFTER,
    ) -> None:
        """`router_id` names this router in the key (so that a restarted elector knows
        a key its predecessor left, and lets it go at once)."""
        super().__init__("leader-elector")
        self._registry = registry
        self._url = nats_url
        self._auth = auth or NatsAuth()
        self._bucket = bucket
        self._replicas = replicas
        self.timers = ElectionTimers(failover_after)
        self._startup_timeout = startup_timeout
        self._dead_link_after = dead_link_after
        self.router_id = router_id
        self._value = json.dumps({"router": router_id}).encode()
        """What this router writes in the leadership key."""
        self._nc: GuardedClient | None = None
        self._kv: KeyValue | None = None
        self.election: ElectionState | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def on_start(self) -> None:
        self._nc = GuardedClient()
        await connect_at_start(
            self._nc, self._url, auth=self._auth, timeout=self._startup_timeout,
            name="ipc-router-leadership", dead_link_after=self._dead_link_after,
        )  # fmt: skip
        for attempt in range(40):
            try:
                await self._open_bucket()
                break
            except _FAILED as error:
                if attempt == 39:
                    raise StartupError(
                        f"cannot use the leadership bucket {self._bucket}: {error!r}; may the "
                        "router user use JetStream (see deploy/nats-server.conf)?"
                    ) from None
                await asyncio.sleep(0.25)  # a new cluster is still electing its leaders
        self.election = ElectionState(self.timers, asyncio.get_running_loop().time())
        self._schedule()

    async def _open_bucket(self, timeout: float = 5.0) -> None:
        """Use the bucket as it is (routers started with other settings, earlier or
        beside this one, share it); create it only when it is missing."""
        assert self._nc is not None
        # Bucket management may wait for a cluster to place the stream; the key's own
        # requests must not wait longer than a renewal can.
        manage = self._nc.jetstream(timeout=timeout)
        try:
            await manage.key_value(self._bucket)
        except BucketNotFoundError:
            await manage.create_key_value(
                bucket=self._bucket,
                history=1,
                # A dead leader's key goes away by itself in the end, even if no
                # standby is watching.
                ttl=max(10 * self.timers.failover_after, 5.0),
                replicas=self._replicas,
            )
        self._kv = await self._nc.jetstream(timeout=self.timers.io_timeout).key_value(self._bucket)

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        election = self.election
        if election is not None and election.phase is Campaign.LEADING and self._kv is not None:
            with contextlib.suppress(Exception):
                # Let a standby take over at once rather than after failover_after.
                await asyncio.wait_for(self._kv.delete(_KEY, last=election.term), 1.0)
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def handle(self, message: Any) -> Any:
        match message:
            case _Tick():
                self._timer = None
                try:
                    await self._feed(Tick())
                finally:
                    self._schedule()
                return None
            case Report() | Resign():
                await self._feed(message)
                return None
            case GetElection():
                assert self.election is not None
                return self.election.phase, dict(self.election.counts)
            case _:
                raise TypeError(f"leader elector cannot handle {type(message).__name__}")

    async def _feed(self, event: ElectionEvent | Report | Resign) -> None:
        """Feed `event` to the election machine and carry out its effects in order,
        feeding back what came of each."""
        election = self.election
        assert election is not None
        loop = asyncio.get_running_loop()
        effects: deque[ElectionEffect] = deque()
        pending: ElectionEvent | Report | Resign | None = event
        while pending is not None or effects:
            if pending is not None:
                before = election.phase
                effects.extend(election.step(pending, loop.time()))
                if election.phase is not before:
                    self._log_phase(before, election)
                pending = None
            else:
                pending = await self._effect(effects.popleft())

    async def _effect(self, effect: ElectionEffect) -> ElectionEvent | None:
        kv = self._kv
        assert kv is not None
        now = asyncio.get_running_loop().time
        match effect:
            case TellRegistry(view=view):
                try:
                    self._registry.tell(view, lane=Lane.URGENT)
                except ActorDeadError:
                    return RegistryGone()
                except MailboxFullError:
                    pass  # the registry hears the next one; its validity only shortens
            case ReadKey():
                try:
                    entry = await kv.get(_KEY)
                except KeyNotFoundError:
                    return KeyRead(None)
                except _FAILED as error:
                    return KeyUnreadable(repr(error))
                return KeyRead(entry.revision, ours=entry.value == self._value)
            case CreateKey() | TakeKey():
                sent = now()
                try:
                    if isinstance(effect, TakeKey):
                        term = await kv.update(_KEY, self._value, last=effect.last)
                    else:
                        term = await kv.create(_KEY, self._value)
                except KeyWrongLastSequenceError:
                    return CampaignLost()
                except NoStreamResponseError:
                    return CampaignFailed("the leadership bucket is gone", bucket_missing=True)
                except _FAILED as error:
                    return CampaignFailed(repr(error))
                return Won(term, sent)
            case RenewKey(last=last):
                sent = now()
                try:
                    revision = await kv.update(_KEY, self._value, last=last)
                except KeyWrongLastSequenceError:
                    return RenewRefused()
                except NoStreamResponseError:
                    return RenewFailed("the leadership bucket is gone", bucket_missing=True)
                except _FAILED as error:
                    return RenewFailed(repr(error))
                return Renewed(revision, sent)
            case DeleteKey(last=last):
                with contextlib.suppress(KeyWrongLastSequenceError, *_FAILED):
                    await kv.delete(_KEY, last=last)
            case EnsureBucket():
                log.warning("leadership_bucket_missing", bucket=self._bucket,
                            effect="creating it again", replicas=self._replicas)  # fmt: skip
                try:
                    await self._open_bucket(self.timers.bucket_timeout)
                except _FAILED as error:
                    log.warning("leadership_bucket_not_created", error=repr(error))
                    return None
                return BucketEnsured()
        return None

    def _log_phase(self, before: Campaign, election: ElectionState) -> None:
        if election.phase is Campaign.LEADING:
            log.info("leadership_won", term=election.term, router=self.router_id)
        elif before is Campaign.LEADING:
            log.warning("leadership_lost", reason=election.reason, router=self.router_id)
        else:
            log.info("election_changed", phase=election.phase, was=before, reason=election.reason)

    def _schedule(self) -> None:
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.timers.tick, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        with contextlib.suppress(ActorDeadError, MailboxFullError):
            self.tell(_TICK, lane=Lane.URGENT)
