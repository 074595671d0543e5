"""The README's register and discover snippets, run as written (only the NATS URL
changed) against a real router: the first stops on Ctrl-C (or SIGTERM) without a
traceback and deregisters on the way out (issue 17)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from actors.admin_cli import get_json
from tests.support.doc_snippets import ROOT, python_blocks
from tests.support.processes import RouterProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

README_URL = "nats://127.0.0.1:4222"


def readme_snippet(calls: str) -> str:
    """The README's one ```python block that calls `calls`."""
    [code] = [code for _, code in python_blocks(ROOT / "README.md") if calls in code]
    assert README_URL in code
    return code


async def start_snippet(code: str, nats_url: str, tmp_path: Path) -> asyncio.subprocess.Process:
    """The snippet as a script of its own, pointed at `nats_url`."""
    script = tmp_path / "snippet.py"
    script.write_text(code.replace(README_URL, nats_url))
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,  # the installed sdk, not the source tree's by accident
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def instance_status(http_port: int, service: str, instance: str) -> str | None:
    """The instance's status as the router's admin API shows it (None: not listed)."""
    url = f"http://127.0.0.1:{http_port}/api/v1/admin/services/{service}?status=any"
    status, body = await asyncio.to_thread(get_json, url)
    if status != 200:
        return None
    found: dict[str, Any] = {i["instance_id"]: i["status"] for i in body["instances"]}
    return found.get(instance)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_the_register_snippet_stops_on_a_signal_quietly_and_deregisters(
    started_router: tuple[RouterProcess, int, int], tmp_path: Path, stop: signal.Signals
) -> None:
    _, nats_port, http_port = started_router
    nats_url = f"nats://127.0.0.1:{nats_port}"
    snippet = await start_snippet(readme_snippet(".register("), nats_url, tmp_path)
    assert snippet.stdout is not None and snippet.stderr is not None
    try:
        printed = await asyncio.wait_for(snippet.stdout.readline(), 20)
        assert printed.startswith(b"Registration("), printed
        assert await instance_status(http_port, "orders", "orders-1") == "ONLINE"

        # Another README snippet discovers it meanwhile.
        (tmp_path / "discover").mkdir()
        discover = await start_snippet(
            readme_snippet(".discover("), nats_url, tmp_path / "discover"
        )
        found, errors = await asyncio.wait_for(discover.communicate(), 20)
        assert (discover.returncode, errors) == (0, b"")
        assert json.loads(found.decode().replace("'", '"')) == ["orders-1"]

        snippet.send_signal(stop)
        _, stderr = await asyncio.wait_for(snippet.communicate(), 15)
    finally:
        if snippet.returncode is None:
            snippet.kill()
            await snippet.wait()
    assert b"Traceback" not in stderr, stderr.decode()
    assert stderr == b""
    assert snippet.returncode == 0
    await eventually(
        lambda: _is_offline(http_port), timeout=5, what="orders-1 to be OFFLINE (deregistered)"
    )


async def _is_offline(http_port: int) -> bool:
    return await instance_status(http_port, "orders", "orders-1") == "OFFLINE"
