"""Campaigning for and holding the leadership key, as a pure state machine.

`ElectionState` decides, for one registry (one partition, when there are several),
when this router reads, takes, renews or gives up the leadership key of a JetStream
KV bucket; `LeaderElector` (leadership.py) does the KV I/O and feeds what came of it
back in. No I/O and no asyncio inside: time is an input.

The key: the leader rewrites it every tick, each time conditional on the revision it
wrote last. A watching router reads it every tick; when it has not changed for
`failover_after`, it takes it with a write conditional on the revision it saw (of
several, one wins; a leader that still renews makes the takeover fail). The KV
revision that won is the term.

The leader counts itself leader only until `validity` after the *send* time of its
last successful renewal: by then no other router can have taken over, since each waits
`failover_after` from when it *saw* that renewal. The fence is the registry stream
itself (role_state.py): a new leader's first write is a term marker and every write is
conditional, so an old leader cannot write after its successor has.

With the registry: every tick the elector tells it its view (`LeaseView`), and the
registry answers with a `Report` of what it holds and whether it could lead. The
elector campaigns only for a registry that could lead, and gives the term up at once
when the registry does not hold it (it restarted, it is loading, it stood down), says
it resigns, is gone, or stops answering.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import msgspec

from actors.role_state import LeaseView, Report, Resign

__all__ = [
    "Campaign",
    "CampaignFailed",
    "CampaignLost",
    "CreateKey",
    "DeleteKey",
    "ElectionEffect",
    "ElectionEvent",
    "ElectionState",
    "ElectionTimers",
    "EnsureBucket",
    "KeyRead",
    "KeyUnreadable",
    "ReadKey",
    "RegistryGone",
    "RenewFailed",
    "RenewKey",
    "RenewRefused",
    "Renewed",
    "TakeKey",
    "TellRegistry",
    "Won",
]


class Campaign(StrEnum):
    """What the elector does."""

    IDLE = "idle"
    """The registry could not lead now (loading, restarting): no campaign."""
    WATCHING = "watching"
    """Reads the key every tick; takes it when it is absent or stale."""
    LEADING = "leading"
    """Holds the key and renews it every tick."""


@dataclass(frozen=True, slots=True)
class ElectionTimers:
    """The election's time limits, in seconds (all derived from `failover_after`)."""

    failover_after: float = 0.5

    @property
    def tick(self) -> float:
        """How often the key is read or renewed."""
        return self.failover_after / 5

    @property
    def validity(self) -> float:
        """How long after a renewal's send time the leader trusts it (a margin for
        clocks that run at slightly different rates on two machines)."""
        return self.failover_after * 0.8

    @property
    def quiet(self) -> float:
        """After giving a term up, no campaign for this long: another router, watching
        every tick, takes the key first."""
        return 2 * self.tick

    @property
    def registry_silence(self) -> float:
        """A leader whose registry has not answered for this long gives the term up
        (a registry's drain, an append included, takes at most `failover_after`)."""
        return self.failover_after * 2

    @property
    def bucket_timeout(self) -> float:
        """How long creating the bucket again may take (the elector waits meanwhile; a
        creation not answered in time goes on in the server, and is tried again)."""
        return max(1.0, 2 * self.failover_after)

    @property
    def io_timeout(self) -> float:
        """How long one KV request may take (two ticks: a renewal that times out still
        leaves room for the next one within the validity)."""
        return self.failover_after * 0.4


# -- events ----------------------------------------------------------------------------


class ElectionEvent(msgspec.Struct, frozen=True):
    """Something the election machine is told (besides the registry's `Report` and
    `Resign`)."""


class Tick(ElectionEvent, frozen=True):
    pass


class KeyRead(ElectionEvent, frozen=True):
    revision: int | None
    """None: there is no leadership key."""
    ours: bool = False
    """It names this router (an earlier incarnation of its elector wrote it)."""


class KeyUnreadable(ElectionEvent, frozen=True):
    reason: str


class Won(ElectionEvent, frozen=True):
    term: int
    sent_at: float


class CampaignLost(ElectionEvent, frozen=True):
    """Another router wrote the key first."""


class CampaignFailed(ElectionEvent, frozen=True):
    reason: str
    bucket_missing: bool = False


class Renewed(ElectionEvent, frozen=True):
    revision: int
    sent_at: float


class RenewRefused(ElectionEvent, frozen=True):
    """The key is not at our revision any more: another router took it."""


class RenewFailed(ElectionEvent, frozen=True):
    reason: str
    bucket_missing: bool = False


class RegistryGone(ElectionEvent, frozen=True):
    """The registry could not be told (it is not running)."""


class BucketEnsured(ElectionEvent, frozen=True):
    pass


# -- effects ---------------------------------------------------------------------------


class ElectionEffect(msgspec.Struct, frozen=True):
    """Something the elector must do."""


class ReadKey(ElectionEffect, frozen=True):
    """-> `KeyRead` or `KeyUnreadable`."""


class CreateKey(ElectionEffect, frozen=True):
    """Create the absent key -> `Won`, `CampaignLost` or `CampaignFailed`."""


class TakeKey(ElectionEffect, frozen=True):
    """Replace the stale key at `last` -> `Won`, `CampaignLost` or `CampaignFailed`."""

    last: int


class RenewKey(ElectionEffect, frozen=True):
    """-> `Renewed`, `RenewRefused` or `RenewFailed`."""

    last: int


class DeleteKey(ElectionEffect, frozen=True):
    """Delete the key if it is still at `last` (outcome ignored)."""

    last: int


class EnsureBucket(ElectionEffect, frozen=True):
    """Create the bucket again (it was deleted) -> `BucketEnsured` or nothing."""


class TellRegistry(ElectionEffect, frozen=True):
    """Tell the registry the elector's view (-> `RegistryGone` if it is not running)."""

    view: LeaseView


class ElectionState:
    """One registry's leadership election (see the module)."""

    def __init__(self, timers: ElectionTimers, now: float) -> None:
        self.timers = timers
        self.phase = Campaign.IDLE
        self.reason = "starting"
        self.term = 0
        """The term led (LEADING)."""
        self.valid_until = -math.inf
        self.counts: dict[str, int] = {}
        """Election events so far, by kind (for metrics)."""
        self._revision = 0
        """LEADING: the revision of our last write. Otherwise: the last revision seen."""
        self._seen_at = now
        self._quiet_until = -math.inf
        """After giving up, no campaign before this (let another router take over)."""
        self._serial = 0
        self._first_serial = 0
        """The serial of the first view told in the current term."""
        self._heard_at = now
        self._own_key_checked = False

    def step(self, event: ElectionEvent | Report | Resign, now: float) -> list[ElectionEffect]:
        """Apply one event; returns what the elector must do, in order."""
        match self.phase, event:
            case _, Tick():
                return self._on_tick(now)

            case _, KeyRead(revision=revision, ours=True) if revision is not None:
                self._own_key_checked = True
                if self.phase is not Campaign.LEADING:
                    # Left by an earlier incarnation of this elector: let it go now
                    # rather than after failover_after.
                    self._seen(None, now)
                    return [DeleteKey(revision)]
                return []
            case Campaign.WATCHING, KeyRead(revision=None):
                self._own_key_checked = True
                return [CreateKey()]
            case Campaign.WATCHING, KeyRead(revision=revision) if revision != self._revision:
                self._seen(revision, now)
                return []
            case Campaign.WATCHING, KeyRead(revision=revision):
                assert revision is not None
                if now - self._seen_at >= self.timers.failover_after:
                    return [TakeKey(revision)]
                return []
            case _, KeyRead(revision=revision):
                self._own_key_checked = True
                self._seen(revision, now)
                return []
            case _, KeyUnreadable():
                return []

            case Campaign.WATCHING, Won(term=term, sent_at=sent_at):
                self._count("terms_won")
                self.phase, self.reason = Campaign.LEADING, f"won term {term}"
                self.term = self._revision = term
                self.valid_until = sent_at + self.timers.validity
                self._heard_at = now  # the registry has a full silence window to answer
                self._first_serial = self._serial + 1
                return [self._tell(now)]
            case _, Won(term=term):
                return [DeleteKey(term)]  # (no longer wanted: the registry cannot lead)
            case _, CampaignLost():
                self._seen_at = now  # somebody moved: watch again from now
                return []
            case _, CampaignFailed(bucket_missing=missing):
                self._seen_at = now
                return self._ensure_bucket() if missing else []

            case Campaign.LEADING, Renewed(revision=revision, sent_at=sent_at):
                if sent_at > self.valid_until:
                    # Paused (or cut off) past the validity: a standby may have taken
                    # over meanwhile, and the registry has already stopped writing.
                    return self._give_up("the leadership lapsed before it was renewed", now)
                self._revision = revision
                self.valid_until = sent_at + self.timers.validity
                return [self._tell(now)]
            case Campaign.LEADING, RenewRefused():
                return self._give_up("another router took the leadership", now)
            case Campaign.LEADING, RenewFailed(reason=reason, bucket_missing=missing):
                if missing:
                    effects = self._give_up("the leadership bucket was deleted", now)
                    return effects + self._ensure_bucket()
                if now >= self.valid_until:
                    return self._give_up(f"could not renew the leadership in time: {reason}", now)
                return [self._tell(now)]

            # The registry's side.
            case _, Report(serial=serial, holding=holding, eligible=eligible):
                self._heard_at = now
                if self.phase is Campaign.LEADING:
                    if serial >= self._first_serial and holding != self.term:
                        return self._give_up("the registry does not hold the term", now)
                elif eligible and self.phase is Campaign.IDLE:
                    self.phase, self.reason = Campaign.WATCHING, "the registry can lead"
                    self._seen_at = now
                elif not eligible and self.phase is Campaign.WATCHING:
                    self.phase, self.reason = Campaign.IDLE, "the registry cannot lead now"
                return []
            case Campaign.LEADING, Resign(term=term, reason=reason) if term == self.term:
                return self._give_up(f"the registry resigned: {reason}", now)
            case Campaign.LEADING, RegistryGone():
                return self._give_up("the registry is not running", now)
            case _, RegistryGone():
                self.phase, self.reason = Campaign.IDLE, "the registry is not running"
                return []

            case _:
                return []  # (a resignation of a term given up already, a late renewal)

    def _on_tick(self, now: float) -> list[ElectionEffect]:
        if self.phase is Campaign.LEADING:
            if now - self._heard_at > self.timers.registry_silence:
                return self._give_up("the registry has not answered in time", now)
            if now >= self.valid_until:
                return self._give_up("could not renew the leadership in time", now)
            return [RenewKey(self._revision)]
        effects: list[ElectionEffect] = [self._tell(now)]
        if now < self._quiet_until:
            return effects
        if self.phase is Campaign.WATCHING or not self._own_key_checked:
            effects.append(ReadKey())
        return effects

    def _give_up(self, reason: str, now: float) -> list[ElectionEffect]:
        self._count("terms_given_up")
        last = self._revision
        self.phase, self.reason = Campaign.IDLE, reason
        self.valid_until = -math.inf
        self._seen(None, now)
        self._quiet_until = now + self.timers.quiet
        return [self._tell(now), DeleteKey(last)]

    def _ensure_bucket(self) -> list[ElectionEffect]:
        self._count("buckets_recreated")
        return [EnsureBucket()]

    def _tell(self, now: float) -> TellRegistry:
        self._serial += 1
        leading = self.phase is Campaign.LEADING
        return TellRegistry(
            LeaseView(self.term if leading else None, self.valid_until, self._serial)
        )

    def _seen(self, revision: int | None, now: float) -> None:
        self._revision, self._seen_at = revision or 0, now

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
