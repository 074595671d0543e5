"""`RoleState`, the registry's phase as a pure state machine: each transition, driven
event by event with a fake clock (no I/O, no event loop)."""

from __future__ import annotations

import pytest

from actors.role_state import (
    CaughtUp,
    Checked,
    CheckFailed,
    CheckStream,
    Effect,
    Follow,
    FollowFailed,
    Following,
    GiveUp,
    GrantLeases,
    LeaseView,
    MarkerFailed,
    MarkerFenced,
    MarkerStored,
    NewEpoch,
    Opened,
    OpenFailed,
    OpenStream,
    Phase,
    Report,
    ResetView,
    Resign,
    Role,
    RoleState,
    RoleTimers,
    SkipTo,
    StopFollowing,
    StoreFailed,
    StreamHead,
    TakeWrites,
    Tick,
    WriteMarker,
)

TIMERS = RoleTimers(failover_after=0.5, load_patience=30.0)
EPOCH = "e1"


class Machine:
    """A `RoleState` and a clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0
        self.role = RoleState(TIMERS, self.now)
        self.serial = 0

    def phase(self) -> Phase:
        """(A call, so that type checkers do not narrow it between steps.)"""
        return self.role.phase

    def step(self, event: object) -> list[Effect]:
        return self.role.step(event, self.now)  # type: ignore[arg-type]

    def view(self, term: int | None, valid_for: float = 0.4) -> list[Effect]:
        self.serial += 1
        return self.step(LeaseView(term, self.now + valid_for, self.serial))

    def head(self, last: int, *, unapplied: int | None = None, messages: int = 5,
             first: int = 1, epoch: str | None = EPOCH) -> StreamHead:  # fmt: skip
        return StreamHead(epoch, last, first, messages, unapplied)

    def checked(self, head: StreamHead, revision: int = 10, records: int = 3,
                marker: int = 0) -> list[Effect]:  # fmt: skip
        return self.step(Checked(self.role._load, head, revision, records, marker))

    def standby(self, last: int = 10) -> None:
        assert self.role.start() == [OpenStream(0)]
        self.step(Opened(0, EPOCH, last, 0))
        assert self.phase() is Phase.STANDBY

    def leading(self, term: int = 7, last: int = 10) -> None:
        self.standby(last)
        self.view(term)
        self.checked(self.head(last), revision=last)
        self.step(MarkerStored(term, last + 1))
        assert self.phase() is Phase.LEADING


@pytest.fixture
def m() -> Machine:
    return Machine()


# -- loading --------------------------------------------------------------------------


def test_an_empty_stream_is_loaded_at_its_last_sequence_at_once(m: Machine) -> None:
    assert m.role.start() == [OpenStream(0)]
    effects = m.step(Opened(0, EPOCH, 42, 0))
    assert effects == [ResetView(), SkipTo(42), Follow(0)]
    assert m.phase() is Phase.STANDBY and m.role.ready and m.role.eligible


def test_a_stream_is_read_whole_then_loaded_at_its_last_sequence_not_its_last_message(
    m: Machine,
) -> None:
    """Fault 1 of issue 15: the last messages (tombstones past their TTL) are gone; the
    view must stand at the stream's last sequence, or its term marker is fenced for ever."""
    m.role.start()
    assert m.step(Opened(0, EPOCH, 50, 3)) == [ResetView(), Follow(0)]
    assert m.phase() is Phase.LOADING and not m.role.ready
    assert m.step(CaughtUp()) == [CheckStream(0)]
    effects = m.checked(m.head(50, unapplied=None, messages=3), revision=47, records=3)
    assert effects == [SkipTo(50)]
    assert m.phase() is Phase.STANDBY


def test_loading_waits_while_the_stream_holds_messages_not_read_yet(m: Machine) -> None:
    m.role.start()
    m.step(Opened(0, EPOCH, 50, 3))
    m.step(CaughtUp())
    assert m.checked(m.head(51, unapplied=51), revision=47) == []
    assert m.phase() is Phase.LOADING
    assert m.step(CaughtUp()) == [CheckStream(0)]


def test_a_load_that_makes_no_progress_gives_up_after_its_patience(m: Machine) -> None:
    m.role.start()
    m.step(OpenFailed(0, "JetStream did not answer"))
    m.now += 1
    assert m.step(Tick(0)) == [OpenStream(0)]  # tried again
    m.step(OpenFailed(0, "again"))
    m.now += TIMERS.load_patience
    (give_up,) = m.step(Tick(0))
    assert isinstance(give_up, GiveUp)


def test_a_load_that_moves_is_patient(m: Machine) -> None:
    m.role.start()
    m.step(Opened(0, EPOCH, 100_000, 100_000))
    for revision in range(1, 5):
        m.now += TIMERS.load_patience / 2
        assert not any(isinstance(e, GiveUp) for e in m.step(Tick(revision * 10_000)))


def test_a_loading_registry_says_it_holds_no_term(m: Machine) -> None:
    """Fault 2 of issue 15: a registry restarted under a leading elector answers the
    elector's view with "not held", so that the elector resigns."""
    m.role.start()
    effects = m.view(7)
    assert effects == [Report(1, None, False)]


def test_answers_for_a_load_given_up_are_ignored(m: Machine) -> None:
    m.standby()
    m.step(StoreFailed("an append failed"))  # load 1
    assert m.phase() is Phase.LOADING
    assert m.step(Opened(0, EPOCH, 99, 0)) == []  # (of load 0)
    assert m.step(Checked(0, m.head(99), 10, 3)) == []
    assert m.phase() is Phase.LOADING
    assert m.step(Opened(1, EPOCH, 12, 0)) == [ResetView(), SkipTo(12), Follow(1)]


# -- taking up --------------------------------------------------------------------------


def test_an_elected_standby_checks_that_nothing_is_left_then_writes_its_term_marker(
    m: Machine,
) -> None:
    m.standby(10)
    assert m.view(7) == [CheckStream(0), Report(1, 7, False)]
    assert m.phase() is Phase.TAKING_UP and m.role.taking_up(7)
    assert m.checked(m.head(12), revision=10) == [SkipTo(12), WriteMarker(7, 12)]
    effects = m.step(MarkerStored(7, 13))
    assert effects == [SkipTo(13), GrantLeases(), StopFollowing(), TakeWrites(True)]
    assert m.phase() is Phase.LEADING and m.role.may_write(m.now) and m.role.role is Role.LEADER


def test_a_take_up_waits_for_entries_still_on_their_way(m: Machine) -> None:
    m.standby(10)
    m.view(7)
    assert m.checked(m.head(12, unapplied=11), revision=10) == []
    assert m.step(CaughtUp()) == [CheckStream(0)]
    assert m.step(MarkerFenced(7)) == []  # the stream moved on meanwhile: read on
    assert m.phase() is Phase.TAKING_UP


def test_a_marker_without_acknowledgement_resigns(m: Machine) -> None:
    m.standby()
    m.view(7)
    effects = m.step(MarkerFailed(7, "no acknowledgement"))
    assert effects == [Resign(7, "the term marker was not stored: no acknowledgement")]
    assert m.phase() is Phase.STANDBY


def test_a_term_not_taken_up_in_time_is_resigned(m: Machine) -> None:
    m.standby()
    m.view(7, valid_for=5)
    m.now += TIMERS.take_up_within
    (resign,) = m.step(Tick(10))
    assert isinstance(resign, Resign) and resign.term == 7
    assert m.phase() is Phase.STANDBY


def test_a_view_of_a_resigned_term_still_on_its_way_is_not_taken_up_again(m: Machine) -> None:
    m.standby()
    m.view(7)
    m.checked(m.head(10))
    m.step(MarkerFailed(7, "timeout"))
    assert m.view(7) == [Report(2, None, True)]  # told before the elector had it
    assert m.phase() is Phase.STANDBY
    m.view(None)
    assert m.view(7) == [CheckStream(0), Report(4, 7, False)]  # won again later: taken up


def test_a_lapsed_view_or_an_unreachable_stream_takes_nothing_up(m: Machine) -> None:
    m.standby()
    assert m.view(7, valid_for=-0.1) == [Report(1, None, True)]
    m.now += TIMERS.check_every
    m.step(Tick(10))
    m.step(CheckFailed(0, "timeout"))
    assert not m.role.eligible
    assert m.view(8) == [Report(2, None, False)]


def test_a_marker_decided_before_the_take_up_ended_is_not_for_now(m: Machine) -> None:
    m.standby()
    m.view(7)
    m.view(None)  # the elector gave up
    assert not m.role.taking_up(7)
    assert m.step(MarkerStored(7, 11)) == []
    assert m.phase() is Phase.STANDBY


# -- leading, lapsing, standing down ----------------------------------------------------


def test_a_leader_without_a_renewal_in_time_goes_silent_then_comes_back_when_renewed(
    m: Machine,
) -> None:
    m.leading()
    m.now += 0.5
    assert m.step(Tick(11)) == [TakeWrites(False)]
    assert m.phase() is Phase.LAPSED and not m.role.may_write(m.now)
    assert m.role.role is Role.STANDBY
    assert m.view(7) == [TakeWrites(True), Report(2, 7, False)]
    assert m.role.may_write(m.now)


def test_a_lapsed_leader_that_hears_nothing_stands_down_and_resigns(m: Machine) -> None:
    m.leading()
    m.now += 0.5
    m.step(Tick(11))
    m.now += TIMERS.lapse_grace
    effects = m.step(Tick(11))
    assert effects[0] == TakeWrites(False) and isinstance(effects[1], Resign)
    assert effects[-1] == Follow(0)
    assert m.phase() is Phase.STANDING_DOWN
    assert m.step(Following(0)) == []
    assert m.phase() is Phase.STANDBY


def test_a_leader_whose_elector_gave_up_stands_down_at_once(m: Machine) -> None:
    """Fault 3 of issue 15: an elector restarted (or one that lost the key) says "no
    term" on its next tick; the registry leaves the write subjects right then."""
    m.leading()
    assert m.view(None) == [TakeWrites(False), Follow(0), Report(2, None, False)]
    assert m.phase() is Phase.STANDING_DOWN


def test_a_store_that_failed_reloads_and_resigns(m: Machine) -> None:
    m.leading()
    effects = m.step(StoreFailed("fenced"))
    assert effects == [
        TakeWrites(False),
        Resign(7, "changes were not stored: fenced"),
        StopFollowing(),
        OpenStream(1),
    ]
    assert m.phase() is Phase.LOADING


def test_stream_requests_of_a_load_given_up_are_answered_without_io_and_ignored(m: Machine) -> None:
    """Decided in a drain whose append then failed: the host need not make them (on a
    cut link each would wait a whole timeout before the resignation after them)."""
    m.leading()
    m.view(7, valid_for=10)
    m.now += TIMERS.check_every
    assert m.step(Tick(11)) == [CheckStream(0)]
    m.step(StoreFailed("not acknowledged"))
    for effect in (CheckStream(0), OpenStream(0), Follow(0)):
        answer = m.role.outdated(effect)
        assert answer is not None
        assert m.step(answer) == []
    for current in (OpenStream(1), CheckStream(1), Follow(1), Resign(7, "x"), TakeWrites(False)):
        assert m.role.outdated(current) is None
    assert m.phase() is Phase.LOADING
    # The look that was left out does not block the next one.
    assert m.step(Opened(1, EPOCH, 10, 3)) == [ResetView(), Follow(1)]
    assert m.step(CaughtUp()) == [CheckStream(1)]


@pytest.mark.parametrize(
    ("head", "revision", "records", "marker", "reason"),
    [
        (StreamHead(None), 11, 3, 11, "the stream was deleted"),
        (StreamHead("e2", 11, 1, 5), 11, 3, 11, "the stream was replaced (new epoch)"),
        (StreamHead(EPOCH, 4, 1, 4), 11, 3, 11, "the stream went back (recreated or restored)"),
        (StreamHead(EPOCH, 11, 12, 0), 11, 3, 11, "the stream's content was removed"),
        (StreamHead(EPOCH, 14, 12, 3), 11, 3, 11, "the stream's content was removed"),
        (StreamHead(EPOCH, 12, 1, 5, 12), 11, 3, 11, "another router wrote to the stream (sequence 12)"),
    ],
)  # fmt: skip
def test_a_leader_that_finds_the_stream_changed_reads_it_again(
    m: Machine, head: StreamHead, revision: int, records: int, marker: int, reason: str
) -> None:
    m.leading()
    effects = m.checked(head, revision, records, marker)
    assert m.phase() is Phase.LOADING and m.role.reason == reason
    assert Resign(7, reason) in effects and effects[-1] == OpenStream(1)
    assert (NewEpoch() in effects) == ("removed" in reason)


def test_a_standby_that_finds_a_purge_gives_the_stream_a_new_epoch_too(m: Machine) -> None:
    m.standby()
    effects = m.checked(StreamHead(EPOCH, 10, 11, 0), revision=10, records=3, marker=4)
    assert effects == [NewEpoch(), StopFollowing(), OpenStream(1)]


def test_a_lagging_standby_whose_marker_was_replaced_is_no_purge(m: Machine) -> None:
    m.standby()
    assert m.checked(StreamHead(EPOCH, 20, 12, 6, 12), revision=10, records=3, marker=4) == []
    assert m.phase() is Phase.STANDBY


def test_one_check_at_a_time(m: Machine) -> None:
    m.standby()
    m.now += TIMERS.check_every
    assert m.step(Tick(10)) == [CheckStream(0)]
    m.now += TIMERS.check_every
    assert m.step(Tick(10)) == []  # the first is still out
    m.checked(m.head(10))
    m.now += TIMERS.check_every
    assert m.step(Tick(10)) == [CheckStream(0)]


def test_a_follower_that_fails_reloads(m: Machine) -> None:
    m.standby()
    effects = m.step(FollowFailed(0, "no stream"))
    assert effects == [StopFollowing(), OpenStream(1)]
    assert not m.role.eligible
