"""Routers and services as real subprocesses, killed when the test is done."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.network import free_port
from tests.support.processes import RouterLauncher, RouterProcess


@pytest.fixture
async def routers() -> AsyncIterator[RouterLauncher]:
    """Starts `ipc-router serve` subprocesses; kills what is left of them at teardown."""
    launcher = RouterLauncher()
    try:
        yield launcher
    finally:
        await launcher.kill_all()


@pytest.fixture
async def started_router(routers: RouterLauncher) -> tuple[RouterProcess, int, int]:
    """A router with its embedded NATS; (process, nats_port, http_port)."""
    nats_port, http_port = free_port(), free_port()
    router = await routers.start(
        "--embedded-nats-port", str(nats_port), "--http-port", str(http_port)
    )
    return router, nats_port, http_port
