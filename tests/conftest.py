"""Shared fixtures: free ports and a real nats-server on loopback."""

from __future__ import annotations

import socket
from functools import partial
from collections.abc import AsyncIterator

import pytest
import structlog

from actors.logs import configure_logging

from actors.actor import Actor, ActorRef
from actors.embedded_nats import NatsServerProcess


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def incarnation(ref: ActorRef) -> Actor:
    """The actor a ref points at now: tests reach behind the ref to inject faults."""
    actor = ref._actor
    assert actor is not None, f"{ref.id} is not running"
    return actor


@pytest.fixture
async def nats_server() -> AsyncIterator[NatsServerProcess]:
    """A real nats-server (the bundled binary) on a free loopback port."""
    server = NatsServerProcess(port=free_port(), jetstream=False)
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
