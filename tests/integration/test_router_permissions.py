"""A router the NATS server refuses what it needs says so at start, in one line,
instead of running without the check that keeps a second router from splitting the
registry, or waiting for a JetStream that is there but forbidden to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.app import Router, RouterConfig
from actors.embedded_nats import NatsServerProcess
from actors.errors import StartupError
from sdk import NatsAuth
from tests.support.network import free_port

pytestmark = pytest.mark.timeout(60)

NO_PRESENCE = """
authorization {
  users: [
    {
      user: router
      password: router-secret
      permissions: {
        publish: { allow: ["ipc.registry.events.>", "_INBOX.>"] }
        subscribe: { allow: ["ipc.service.>", "_INBOX.>"] }
      }
    }
  ]
}
"""


@pytest.fixture
async def strict_nats(tmp_path: Path) -> AsyncIterator[NatsServerProcess]:
    config = tmp_path / "nats.conf"
    config.write_text(NO_PRESENCE)
    server = NatsServerProcess(port=free_port(), config_file=config, store_dir=tmp_path / "js")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_router_refused_the_presence_subject_does_not_start(
    strict_nats: NatsServerProcess,
) -> None:
    auth = NatsAuth(user="router", password="router-secret")
    router = Router(RouterConfig(nats_url=strict_nats.url, http_port=0, nats_auth=auth))
    with pytest.raises(StartupError, match="ipc.router.presence"):
        await router.start()


async def test_a_router_refused_jetstream_says_so(strict_nats: NatsServerProcess) -> None:
    auth = NatsAuth(user="router", password="router-secret")
    router = Router(
        RouterConfig(nats_url=strict_nats.url, http_port=0, nats_auth=auth, store="stream")
    )
    with pytest.raises(StartupError, match="refused this router JetStream"):
        await router.start()
