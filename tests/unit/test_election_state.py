"""`ElectionState`, the leadership key's campaign as a pure state machine: each
transition, driven event by event with a fake clock (no I/O, no event loop)."""

from __future__ import annotations

import pytest

from actors.election_state import (
    BucketEnsured,
    Campaign,
    CampaignFailed,
    CampaignLost,
    CreateKey,
    DeleteKey,
    ElectionEffect,
    ElectionState,
    ElectionTimers,
    EnsureBucket,
    KeyRead,
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
from actors.role_state import LeaseView, Report, Resign

TIMERS = ElectionTimers(failover_after=0.5)


class Machine:
    def __init__(self) -> None:
        self.now = 100.0
        self.election = ElectionState(TIMERS, self.now)

    def step(self, event: object) -> list[ElectionEffect]:
        return self.election.step(event, self.now)  # type: ignore[arg-type]

    def tick(self) -> list[ElectionEffect]:
        self.now += TIMERS.tick
        return self.step(Tick())

    def report(self, holding: int | None = None, eligible: bool = True, serial: int = 10**6) -> list[ElectionEffect]:
        return self.step(Report(serial, holding, eligible))

    def watching(self) -> None:
        self.tick()
        self.step(KeyRead(None))  # (its own key checked: none)
        self.report()
        assert self.election.phase is Campaign.WATCHING

    def leading(self, term: int = 5) -> None:
        self.watching()
        self.tick()
        assert self.step(KeyRead(None)) == [CreateKey()]
        self.step(Won(term, self.now))
        assert self.election.phase is Campaign.LEADING


def views(effects: list[ElectionEffect]) -> list[LeaseView]:
    return [effect.view for effect in effects if isinstance(effect, TellRegistry)]


@pytest.fixture
def m() -> Machine:
    return Machine()


def test_an_idle_elector_tells_its_view_and_checks_once_for_a_key_of_its_own(m: Machine) -> None:
    effects = m.tick()
    assert [v.term for v in views(effects)] == [None] and ReadKey() in effects
    m.step(KeyRead(None))
    assert ReadKey() not in m.tick()  # idle: no campaign, no more reading


def test_a_restarted_elector_lets_its_predecessors_key_go_at_once(m: Machine) -> None:
    m.tick()
    assert m.step(KeyRead(3, ours=True)) == [DeleteKey(3)]


def test_it_campaigns_only_for_a_registry_that_could_lead(m: Machine) -> None:
    m.watching()
    assert ReadKey() in m.tick()
    m.report(eligible=False)
    assert m.election.phase is Campaign.IDLE
    assert ReadKey() not in m.tick()


def test_an_absent_key_is_created_and_the_win_told_to_the_registry(m: Machine) -> None:
    m.watching()
    m.tick()
    assert m.step(KeyRead(None)) == [CreateKey()]
    sent = m.now
    m.now += 0.01
    (tell,) = m.step(Won(5, sent))
    assert isinstance(tell, TellRegistry)
    assert tell.view.term == 5 and tell.view.valid_until == sent + TIMERS.validity


def test_a_key_unchanged_for_failover_after_is_taken_over(m: Machine) -> None:
    m.watching()
    m.tick()
    assert m.step(KeyRead(9)) == []  # seen now
    seen = m.now
    while (effects := m.step(KeyRead(9))) == []:
        m.tick()
    assert effects == [TakeKey(9)]
    assert TIMERS.failover_after <= m.now - seen < TIMERS.failover_after + TIMERS.tick
    assert m.step(CampaignLost()) == []  # another was quicker: watch again from now
    assert m.election.phase is Campaign.WATCHING


def test_a_leader_renews_every_tick_and_tells_the_registry_each_renewal(m: Machine) -> None:
    m.leading()
    assert m.tick() == [RenewKey(5)]
    sent = m.now
    (tell,) = m.step(Renewed(6, sent))
    assert isinstance(tell, TellRegistry) and tell.view.valid_until == sent + TIMERS.validity
    assert m.tick() == [RenewKey(6)]


def test_a_renewal_sent_after_the_validity_ran_out_gives_the_term_up(m: Machine) -> None:
    m.leading()
    m.now += TIMERS.validity + 0.01
    effects = m.step(Renewed(6, m.now))
    assert m.election.phase is Campaign.IDLE
    assert [v.term for v in views(effects)] == [None] and DeleteKey(6) not in effects


@pytest.mark.parametrize(
    "event",
    [RenewRefused(), RegistryGone(), Resign(5, "its append was fenced")],
    ids=["taken", "registry gone", "registry resigned"],
)
def test_a_leader_gives_up_at_once_when_told_or_taken_over(m: Machine, event: object) -> None:
    m.leading()
    effects = m.step(event)
    assert m.election.phase is Campaign.IDLE
    assert [v.term for v in views(effects)] == [None] and DeleteKey(5) in effects


def test_a_resignation_of_another_term_keeps_the_current_one(m: Machine) -> None:
    m.leading()
    assert m.step(Resign(4, "an old term")) == []
    assert m.election.phase is Campaign.LEADING


def test_a_failed_renewal_is_tried_again_until_the_validity_runs_out(m: Machine) -> None:
    m.leading()
    m.tick()
    assert [v.term for v in views(m.step(RenewFailed("timeout")))] == [5]
    m.now += TIMERS.validity
    m.step(RenewFailed("timeout"))
    assert m.election.phase is Campaign.IDLE


def test_a_registry_that_does_not_hold_the_term_makes_the_elector_resign(m: Machine) -> None:
    """Fault 2 of issue 15: the registry restarted (loading, it holds nothing) under a
    leading elector: the elector must not go on renewing a leadership nobody uses."""
    m.watching()
    m.tick()
    m.step(KeyRead(None))
    (won,) = views(m.step(Won(5, m.now)))
    assert m.step(Report(won.serial - 1, None, True)) == []  # answers a view before the win
    effects = m.step(Report(won.serial, None, False))
    assert m.election.phase is Campaign.IDLE and DeleteKey(5) in effects


def test_a_registry_that_stops_answering_makes_the_elector_resign(m: Machine) -> None:
    m.leading()
    for _ in range(int(TIMERS.registry_silence / TIMERS.tick)):
        assert m.tick() == [RenewKey(m.election._revision)]
        m.step(Renewed(m.election._revision + 1, m.now))
    m.tick()
    assert m.election.phase is Campaign.IDLE


def test_after_giving_up_it_keeps_quiet_for_two_ticks(m: Machine) -> None:
    m.leading()
    m.step(RenewRefused())
    m.report()
    assert m.election.phase is Campaign.WATCHING
    assert ReadKey() not in m.tick()
    m.now += TIMERS.quiet
    assert ReadKey() in m.tick()


def test_a_lost_bucket_is_created_again(m: Machine) -> None:
    """Fault 5 of issue 15."""
    m.watching()
    m.tick()
    m.step(KeyRead(None))  # (nats-py reads a missing bucket as a missing key)
    assert m.step(CampaignFailed("no stream", bucket_missing=True)) == [EnsureBucket()]
    assert m.step(BucketEnsured()) == []
    m.tick()
    assert m.step(KeyRead(None)) == [CreateKey()]
    assert m.election.counts["buckets_recreated"] == 1


def test_a_leader_whose_bucket_was_lost_gives_up_and_creates_it_again(m: Machine) -> None:
    m.leading()
    m.tick()
    effects = m.step(RenewFailed("no stream", bucket_missing=True))
    assert effects[-1] == EnsureBucket() and m.election.phase is Campaign.IDLE
