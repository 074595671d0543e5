"""Shared fixtures: a real nats-server on loopback, and logging reset between tests.
Helpers shared by the tests live in `tests.support`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
import structlog

from actors.embedded_nats import NatsServerProcess
from actors.logs import configure_logging
from tests.support.network import free_port


@pytest.fixture
def nats_server_options() -> dict[str, Any]:
    """Options of the test's nats-server; a module overrides this fixture for others."""
    return {}


@pytest.fixture
async def nats_server(nats_server_options: dict[str, Any]) -> AsyncIterator[NatsServerProcess]:
    """A real nats-server (the bundled binary) on a free loopback port."""
    server = NatsServerProcess(port=free_port(), jetstream=False, **nats_server_options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(autouse=True)
def _default_structlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that configures logging (the CLI does) must not leak it to the next:
    loggers are not cached in tests, so that a reset (and capture_logs) reaches them."""
    structlog.reset_defaults()
    monkeypatch.setattr("actors.cli.configure_logging", partial(configure_logging, cache=False))
