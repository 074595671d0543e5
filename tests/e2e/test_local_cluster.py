"""`make cluster` (`python -m actors.local_cluster`): three nats-servers and three
routers on loopback, their URLs printed, one leader; Ctrl-C stops every process it
started and removes its directory (issue 17)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from actors.local_cluster import run_cluster
from tests.support.http import healthz
from tests.support.network import occupied_port
from tests.support.processes import REPO, process_exists, wait_gone
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

COMMAND = [sys.executable, "-m", "actors.local_cluster"]
NATS_LINE = re.compile(r"  (nats-\d)  (nats://127\.0\.0\.1:\d+)  pid (\d+)")
ROUTER_LINE = re.compile(r"  (router-\d)  http://127\.0\.0\.1:(\d+)/  pid (\d+)  (leader|standby)")
WORKDIR_LINE = re.compile(r"Logs and data: (\S+) \(removed at the end\)")


@dataclass
class Printed:
    """What the program printed before "Ctrl-C stops everything."."""

    lines: list[str] = field(default_factory=list)

    def matches(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return [m for line in self.lines if (m := pattern.fullmatch(line))]


@pytest.fixture
async def cluster_process() -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "--http-port-base", "0",
        cwd=REPO, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:  # (its children die with it: parent-death signal)
            process.kill()
            await process.communicate()


async def read_until_ready(process: asyncio.subprocess.Process, timeout: float = 90) -> Printed:
    assert process.stdout is not None
    printed = Printed()

    async def read() -> None:
        assert process.stdout is not None
        while (line := (await process.stdout.readline()).decode()) != "Ctrl-C stops everything.\n":
            assert line, f"the program ended before it was ready: {printed.lines}"
            printed.lines.append(line.rstrip("\n"))

    await asyncio.wait_for(read(), timeout)
    return printed


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            pending.append(child)
    return found


async def test_three_servers_and_three_routers_one_leader_and_nothing_left_after_ctrl_c(
    cluster_process: asyncio.subprocess.Process,
) -> None:
    printed = await read_until_ready(cluster_process)
    servers = printed.matches(NATS_LINE)
    routers = printed.matches(ROUTER_LINE)
    [workdir_line] = printed.matches(WORKDIR_LINE)
    workdir = Path(workdir_line.group(1))
    assert len(servers) == 3 and len(routers) == 3, printed.lines
    assert [m.group(4) for m in routers].count("leader") == 1
    cluster_url = ",".join(m.group(2) for m in servers)
    assert f"Services connect to: {cluster_url}" in printed.lines
    assert await asyncio.to_thread(workdir.is_dir)

    ports = [int(m.group(2)) for m in routers]
    answers = await asyncio.gather(*(healthz(port) for port in ports))
    assert [answer.status for answer in answers] == [200, 200, 200]

    async def one_leader() -> bool:
        bodies = [(await healthz(port)).json() for port in ports]
        return [body["role"] for body in bodies].count("leader") == 1

    await eventually(one_leader, timeout=10, what="exactly one router to lead")

    started = {int(m.group(3)) for m in [*servers, *routers]}
    children = descendants(cluster_process.pid)
    assert started <= children, (started, children)

    cluster_process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(cluster_process.communicate(), 40)
    assert cluster_process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    assert out.decode().splitlines()[-1] == f"Stopped; {workdir} removed."
    for pid in children:
        await wait_gone(pid)
    assert not any(process_exists(pid) for pid in children)
    assert not await asyncio.to_thread(workdir.exists)


def test_an_admin_port_in_use_is_one_line_and_exit_1() -> None:
    with occupied_port() as taken:
        done = subprocess.run(
            [*COMMAND, "--http-port-base", str(taken)],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        (
            f"local cluster: error: port {taken} is in use: choose other admin ports with "
            "--http-port-base (0: any free ports)"
        )
    ]


async def test_in_process_a_killed_leader_is_reported_and_another_router_takes_over(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same program in this process (its coverage counts): kill the leader as
    docs/cluster.md says, and watch what it prints."""
    stop = asyncio.Event()
    running = asyncio.create_task(run_cluster(0, stop))
    out: list[str] = []

    def printed(text: str) -> bool:
        out.extend(capsys.readouterr().out.splitlines())
        assert not running.done(), out
        return any(text in line for line in out)

    try:
        await eventually(lambda: printed("Ctrl-C stops everything."), timeout=90,
                         what="the cluster to be ready")  # fmt: skip
        ready = Printed(list(out))
        [leader] = [m for m in ready.matches(ROUTER_LINE) if m.group(4) == "leader"]
        os.kill(int(leader.group(3)), signal.SIGKILL)
        killed = f"{leader.group(1)} (pid {leader.group(3)}) exited: killed by SIGKILL"
        await eventually(lambda: printed(killed), what="the exit to be reported")
        await eventually(lambda: printed(f"{leader.group(1)} is down (was leader)"),
                         what="the leader to be reported down")  # fmt: skip
        await eventually(lambda: printed("is leader (was standby)"), timeout=20,
                         what="another router to lead")  # fmt: skip
        children = {int(m.group(3)) for m in [*ready.matches(NATS_LINE), *ready.matches(ROUTER_LINE)]}
    finally:
        stop.set()
        code = await asyncio.wait_for(running, 40)
    assert code == 0
    for pid in children:
        await wait_gone(pid)
