"""Shared fixtures: a real nats-server on loopback, and logging reset between tests.
Helpers shared by the tests live in `tests.support`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import structlog

from actors.embedded_nats import NatsServerProcess
from actors.logs import configure_logging
from tests.support.nats_logs import LogEntries
from tests.support.network import free_port
from tests.support.processes import ServiceLauncher


@pytest.fixture
def nats_server_options() -> dict[str, Any]:
    """Options of the test's nats-server; a module overrides this fixture for others."""
    return {}


@pytest.fixture
async def nats_server(nats_server_options: dict[str, Any]) -> AsyncIterator[NatsServerProcess]:
    """A real nats-server (the bundled binary) on a free loopback port."""
    options = {"jetstream": True, **nats_server_options}
    server = NatsServerProcess(port=free_port(), **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def server_log() -> Iterator[LogEntries]:
    """Every log entry of the test, the nats-server's own lines (`nats_server_log`)
    among them: request it before the servers to see all of what they said."""
    with structlog.testing.capture_logs() as entries:
        yield entries


@pytest.fixture(autouse=True)
def _default_structlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that configures logging (the CLI does) must not leak it to the next:
    loggers are not cached in tests, so that a reset (and capture_logs) reaches them."""
    structlog.reset_defaults()
    monkeypatch.setattr("actors.cli.configure_logging", partial(configure_logging, cache=False))


@pytest.fixture(autouse=True)
def _data_dir_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Routers started by a test keep their data under its tmp_path, never in $HOME."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


@pytest.fixture
async def service_processes() -> AsyncIterator[ServiceLauncher]:
    """Starts service-instance subprocesses; kills what is left of them at teardown."""
    launcher = ServiceLauncher()
    try:
        yield launcher
    finally:
        await launcher.kill_all()
