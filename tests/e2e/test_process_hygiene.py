"""Issue 16, attacks 5 and 6, performed: two routers on one data directory, and a
router stopped (or killed) while its bundled nats-server is wedged."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from actors.embedded_nats import RUN_DIR_PREFIX
from tests.support.network import free_port
from tests.support.processes import RouterLauncher, process_exists, wait_gone

pytestmark = pytest.mark.timeout(60)


async def test_a_second_router_on_the_same_data_directory_exits_2_with_one_line(
    routers: RouterLauncher, tmp_path: Path
) -> None:
    """Two `make run` of two checkouts as one user: before, both bundled nats-servers
    wrote the same store files, both led, and records were lost after a restart."""
    data = tmp_path / "shared-data"

    def options() -> tuple[str, ...]:
        return ("--data-dir", str(data), "--embedded-nats-port", str(free_port()),
                "--http-port", str(free_port()))  # fmt: skip

    first = await routers.start(*options())
    second = await routers.start(*options(), ready=False)
    code = await second.wait_exit(timeout=20)
    assert code == 2
    errors = [line for line in second.raw_lines if line.startswith("ipc-router: error:")]
    assert len(errors) == 1, second.raw_lines
    assert str(data) in errors[0] and "--data-dir" in errors[0]
    assert str(first.process.pid if first.process else "") in errors[0]  # who holds it
    assert first.process is not None and first.process.returncode is None  # untouched
    # Once the first is gone (even by SIGKILL: the lock is the kernel's), a router may.
    await routers.restart(first)


async def test_stopping_the_router_stops_a_wedged_nats_server_within_the_budget(
    routers: RouterLauncher,
) -> None:
    """A nats-server that does not stop on SIGTERM (here: paused, SIGSTOP) is SIGKILLed
    within the router's stop budget. Before, the stop was cancelled at the very moment
    the server would have been killed, and it survived with parent pid 1."""
    router = await routers.start(
        "--embedded-nats-port", str(free_port()), "--http-port", str(free_port())
    )
    nats_pid = (await router.wait_for_event("nats_server_ready"))["pid"]
    os.kill(nats_pid, signal.SIGSTOP)
    started = time.monotonic()
    router.send(signal.SIGINT)
    code = await router.wait_exit(timeout=15)
    took = time.monotonic() - started
    await wait_gone(nats_pid, timeout=2)
    print(f"stopped with a wedged nats-server in {took:.2f} s (exit {code})")
    assert took < 10.0  # the nats-server's 5 s within the supervisor's stop of all


async def test_a_sigkilled_router_takes_its_nats_server_with_it_and_leaves_no_directory(
    routers: RouterLauncher,
) -> None:
    """Even a wedged (SIGSTOPped) one: the parent-death signal is SIGKILL now. And the
    next start removes the killed one's temporary directory."""
    options = ("--store", "memory", "--embedded-nats-port", str(free_port()),
               "--http-port", str(free_port()))  # fmt: skip
    router = await routers.start(*options)
    assert router.process is not None
    killed = str(router.process.pid)
    nats_pid = (await router.wait_for_event("nats_server_ready"))["pid"]
    os.kill(nats_pid, signal.SIGSTOP)
    router.send(signal.SIGKILL)
    await router.wait_exit()
    await wait_gone(nats_pid, timeout=5)
    assert not process_exists(nats_pid)
    again = await routers.start(*options)

    left = _run_dirs_of(killed)
    assert left == [], f"left behind: {left}"
    assert again.process is not None and again.process.returncode is None


def _run_dirs_of(owner: str) -> list[Path]:
    """The bundled nats-servers' temporary directories that `owner` (a pid) made."""

    def made_by(directory: Path) -> bool:
        try:
            return (directory / "owner.pid").read_text().strip() == owner
        except OSError:
            return False

    return [d for d in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*") if made_by(d)]
