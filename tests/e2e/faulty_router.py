"""`ipc-router serve` exactly as the CLI runs it, plus two fault switches for the tests
that crash one actor of a running router: SIGUSR1 crashes its registry actor, SIGUSR2
its leader elector (each then restarted by the supervisor, as after a bug).

Usage: python -m tests.e2e.faulty_router serve [serve options...]
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from actors import app, cli

_started: list[app.Router] = []
_start = app.Router.start


class InjectedFault(RuntimeError):
    """What the switches crash an actor with."""


async def _start_with_switches(self: app.Router) -> None:
    _started.append(self)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, _crash, self, "registry")
    loop.add_signal_handler(signal.SIGUSR2, _crash, self, "leader-elector")
    await _start(self)


def _crash(router: app.Router, child: str) -> None:
    actor: Any = router.supervisor.ref(child)._actor
    if actor is not None:
        actor.crash(InjectedFault(f"{child} crashed by the test"))


if __name__ == "__main__":
    app.Router.start = _start_with_switches  # type: ignore[method-assign]
    sys.exit(cli.main(sys.argv[1:]))
