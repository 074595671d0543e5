"""`RegistryStream`, the role machine wired to the gateway and the elector: what they
are told when a drain's effects are carried out. No NATS: the stream is stubbed out,
and the gateway and the elector record what they are told."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.actor import ActorRef, Lane, Reply
from actors.journal import Journal, JournalConfig, JournalError, StreamFacts
from actors.registry_api import ServeWrites
from actors.registry_log import RegistryLog
from actors.registry_state import RegistryState
from actors.registry_stream import RegistryStream, StreamStore
from actors.role_state import (
    Checked,
    LeaseView,
    MarkerStored,
    Opened,
    Phase,
    Resign,
    RoleState,
    RoleTimers,
    StoreFailed,
    StreamHead,
    Tick,
)
from protocol import LeasePolicy
from sdk.connection import GuardedClient
from tests.support.clock import FakeClock

TIMERS = RoleTimers(failover_after=0.5, load_patience=30.0)
POLICY = LeasePolicy(heartbeat_interval=1.0, lease_ttl=3.0, offline_after=30.0, offline_retention=60.0)
EPOCH = "e1"


class Recorder(ActorRef):
    """An actor's address that keeps what it is told."""

    def __init__(self, actor_id: str) -> None:
        super().__init__(actor_id)
        self.told: list[Any] = []

    def tell(self, message: Any, reply: Reply | None = None, *, lane: Lane = Lane.NORMAL) -> None:
        self.told.append(message)


class NoStream(Journal):
    """A journal whose stream cannot be reached (its link is cut): each request fails,
    as it would after the journal's timeout."""

    requests: list[str]

    async def open(self, *, patient: bool = False) -> StreamFacts:
        self.requests.append("open")
        raise JournalError("no answer in this test")

    async def head(self, revision: int) -> StreamHead:
        self.requests.append("head")
        raise JournalError("no answer in this test")


async def test_what_a_drain_decided_before_its_append_failed_does_not_delay_the_resignation() -> None:
    """A lapsed leader's drain holds the renewal that makes it lead again (take the write
    subjects), a tick (look at the stream), and changes whose append then fails (stop
    leading, resign, read the stream again). The drain's effects are carried out after
    its append, when it no longer leads:
    - the gateway must not take the write subjects even for a moment: the router would
      answer them with silence, and a write sent there waits a whole client timeout;
    - the look at the stream, of the view given up, is not made: on a cut link it waits
      a whole timeout before the resignation is told.
    Seen together in CI beside two busy loops: writes unavailable 2.27 s after the
    leader's stream connection was cut."""
    loop = asyncio.get_running_loop()
    gateway, elector = Recorder("gateway"), Recorder("elector")
    store = StreamStore("nats://127.0.0.1:1", timers=TIMERS, gateway=gateway, elector=elector)
    clock = FakeClock()
    state = RegistryState(POLICY, clock=clock.monotonic, wall_clock=clock.wall)
    stream = RegistryStream(store, RegistryLog(), lambda: state, lambda facts: state)
    journal = stream.journal = NoStream(GuardedClient(), JournalConfig(), timeout=0.5)
    journal.requests = []
    # Leading term 7 since a second ago, its validity run out since.
    started = loop.time() - 1.0
    role = stream.role = RoleState(TIMERS, started)
    role.start()
    role.step(Opened(0, EPOCH, 10, 0), started)
    role.step(LeaseView(7, started + 0.4, 1), started)
    role.step(Checked(0, StreamHead(EPOCH, 10, 1, 5, None), 10, 3, 0), started)
    role.step(MarkerStored(7, 11), started)
    assert role.phase is Phase.LEADING

    stream.step(Tick(11))  # lapsed: leave the write subjects
    stream.step(LeaseView(7, loop.time() + 10, 2))  # renewed: take them again
    stream.step(Tick(11))  # time to look at the stream
    stream.step(StoreFailed("1 writes not acknowledged within 0.5 s"))  # read the stream again
    assert stream.role.phase is Phase.LOADING
    await stream.carry_out()
    assert journal.requests == ["open"]  # (the new load's opening only)

    told = [message.serve for message in gateway.told if isinstance(message, ServeWrites)]
    assert True not in told, told
    assert told[-1] is False
    assert Resign(7, "changes were not stored: 1 writes not acknowledged within 0.5 s") in elector.told
