"""The CLI's output as a shell sees it: a reader that stops early (`ipc-router services
| head -3`), `--version`, and the temporary directories of embedded nats-servers,
which no router, however it ends, leaves behind."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from actors.cli import EXIT_BROKEN_PIPE, main
from actors.embedded_nats import RUN_DIR_PREFIX, NatsServerProcess
from sdk import ServiceClient
from tests.support.network import free_port, occupied_port
from tests.support.processes import RouterLauncher, RouterProcess, router_command, wait_gone

pytestmark = pytest.mark.timeout(60)


def run_with_stdout_closed(*args: str, buffered: bool = True) -> subprocess.CompletedProcess[str]:
    """`ipc-router *args` whose stdout is a pipe nobody reads any more (its read end
    is closed before the command starts), as after `| head` has exited."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = dict(os.environ)
    if buffered:
        env.pop("PYTHONUNBUFFERED", None)  # as in a user's shell
    else:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        return subprocess.run(
            [*router_command(), *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.fixture
async def admin_url(started_router: tuple[RouterProcess, int, int]) -> str:
    """A running router (embedded NATS) holding two services, three instances."""
    _, nats_port, http_port = started_router
    async with ServiceClient(f"nats://127.0.0.1:{nats_port}") as client:
        for service, instance in (("orders", "orders-1"), ("orders", "orders-2"), ("billing", "b-1")):
            await client.register(service, instance, {"zone": "a"})
    return f"http://127.0.0.1:{http_port}"


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize(
    "args",
    [["services"], ["services", "--json"], ["services", "orders"], ["services", "orders", "--json"]],
    ids=["table", "json", "instances", "instances-json"],
)
async def test_services_into_a_closed_pipe_exits_141_without_a_traceback(
    admin_url: str, args: list[str], buffered: bool
) -> None:
    done = await asyncio.to_thread(
        run_with_stdout_closed, *args, "--admin-url", admin_url, buffered=buffered
    )
    assert done.returncode == EXIT_BROKEN_PIPE == 141
    assert done.stderr == ""


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["--version"]])
def test_help_and_version_into_a_closed_pipe_exit_141_without_a_traceback(
    args: list[str], buffered: bool
) -> None:
    done = run_with_stdout_closed(*args, buffered=buffered)
    assert done.returncode == 141
    assert done.stderr == ""


async def test_services_piped_into_head_prints_the_first_lines_only(admin_url: str) -> None:
    command = " ".join([*router_command(), "services", "--admin-url", admin_url, "--json"])
    done = await asyncio.to_thread(
        subprocess.run,
        ["sh", "-c", f"{command} | head -3"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["{", '  "services": [', "    {"]
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_bench_report_into_a_closed_stdout_exits_141(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every output path: the bench's report too (its run replaced by a canned one)."""
    import benchmarks.loadgen

    async def finished_run(config: Any) -> dict[str, Any]:
        return {"ok": True, "config": {"instances": config.instances}}

    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(benchmarks.loadgen, "run_bench", finished_run)
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    try:
        assert main(["bench", "-n", "1", "--json", "--no-progress"]) == 141
        assert not isinstance(sys.stdout, ClosedPipe)  # what is left goes nowhere
    finally:
        if not isinstance(sys.stdout, ClosedPipe):
            sys.stdout.close()


def test_a_broken_pipe_elsewhere_is_not_taken_for_a_closed_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import actors.cli

    def broken(argv: Any) -> int:
        raise BrokenPipeError(32, "a socket, not stdout")

    monkeypatch.setattr(actors.cli, "_run", broken)
    with (tmp_path / "out").open("w") as out:
        monkeypatch.setattr(sys, "stdout", out)  # a file that can still be written
        with pytest.raises(BrokenPipeError, match="a socket"):
            main(["services"])


def test_version_is_the_installed_distributions() -> None:
    done = subprocess.run(
        [*router_command(), "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout == f"ipc-router {importlib.metadata.version('ipc-router')}\n"


async def test_an_unknown_service_is_named_in_cli_words(admin_url: str) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [*router_command(), "services", "nosuch", "--admin-url", admin_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "ipc-router: error: no service named 'nosuch' (see `ipc-router services` for the list)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["serve", "--nats-url", "foo"],
            ("ipc-router serve: error: --nats-url must be a NATS URL, nats://host:port (or tls://, "
            "ws://, wss://), several comma-separated for a cluster (got foo)"),
        ),
        (
            ["serve", "--heartbeat-interval", "0"],
            ("ipc-router serve: error: --heartbeat-interval must be more than 0 and at most 86400 "
            "seconds (got 0)"),
        ),
        (
            ["serve", "--bogus"],
            ("ipc-router serve: error: --bogus is not an option of ipc-router serve "
            "(see ipc-router serve --help)"),
        ),
        (
            ["services", "--admin-url", "localhost"],
            ("ipc-router services: error: --admin-url must be an http:// or https:// URL such as "
            "http://127.0.0.1:8080 (got localhost)"),
        ),
    ],
    ids=["nats-url", "heartbeat-interval", "unknown-option", "admin-url"],
)
def test_a_usage_error_is_one_line_after_the_commands_usage_and_exits_2(
    args: list[str], message: str
) -> None:
    """Before anything starts: `--nats-url foo` is refused, not retried as a host name."""
    done = subprocess.run(
        [*router_command(), *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    *usage, last = done.stderr.splitlines()
    assert usage[0].startswith(f"usage: ipc-router {args[0]} ")
    assert last == message
    assert "Traceback" not in done.stderr and "nats_server" not in done.stderr


# -- run directories of embedded nats-servers ------------------------------------------


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory of this test's own for run directories (of servers in
    this process, and of routers started with TMPDIR set to it): nothing the other
    tests (or other test runs on the machine) start reaps them, or adds to them."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    yield private


def run_dirs(where: Path) -> list[Path]:
    return sorted(where.glob(f"{RUN_DIR_PREFIX}*"))


async def test_a_sigkilled_routers_run_dir_is_removed_by_the_next_server_start(
    routers: RouterLauncher, own_tmp: Path
) -> None:
    router = await routers.start(
        "--embedded-nats-port", "0", "--http-port", str(free_port()), env={"TMPDIR": str(own_tmp)}
    )
    nats_pid = (await router.wait_for_event("nats_server_ready"))["pid"]
    [left] = run_dirs(own_tmp)
    assert router.process is not None
    assert (left / "owner.pid").read_text() == str(router.process.pid)
    router.send(signal.SIGKILL)
    await router.wait_exit()
    await wait_gone(nats_pid)
    assert run_dirs(own_tmp) == [left], "a SIGKILLed router cannot clean up after itself"

    server = NatsServerProcess(port=0)
    await server.start()
    try:
        assert run_dirs(own_tmp) == [server.run_dir]  # the leftover is gone
    finally:
        await server.stop()
    assert run_dirs(own_tmp) == []


async def test_servers_and_routers_remove_their_run_dirs_however_they_stop(
    routers: RouterLauncher, own_tmp: Path
) -> None:
    # In this process: started and stopped; and a start that fails.
    server = NatsServerProcess(port=0)
    await server.start()
    assert server.port != 0  # the port it chose, read from its log
    nc = await nats.connect(server.url)
    await nc.close()
    assert server.run_dir is not None and (server.run_dir / "jetstream").is_dir()
    await server.stop()
    with occupied_port() as taken:
        refused = NatsServerProcess(port=taken)
        with pytest.raises(Exception, match="already in use"):
            await refused.start()
    assert run_dirs(own_tmp) == []

    # Routers with an embedded server: stopped by SIGTERM and SIGINT, and one whose
    # embedded server was killed (and restarted by the supervisor) on the way.
    env = {"TMPDIR": str(own_tmp)}
    for sig in (signal.SIGTERM, signal.SIGINT):
        router = await routers.start(
            "--embedded-nats-port", "0", "--http-port", str(free_port()), env=env
        )
        first = await router.wait_for_event("nats_server_ready")
        if sig is signal.SIGINT:
            mark = len(router.events)
            os.kill(first["pid"], signal.SIGKILL)
            await router.wait_for_event("child_restarted", after=mark)
        assert len(run_dirs(own_tmp)) == 1
        router.send(sig)
        assert await router.wait_exit() == 0
        assert run_dirs(own_tmp) == [], f"left behind after {sig.name}"
