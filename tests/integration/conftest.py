"""A router running in-process against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from actors.app import Router, RouterConfig
from actors.embedded_nats import NatsServerProcess


@pytest.fixture
async def router(nats_server: NatsServerProcess) -> AsyncIterator[Router]:
    """A started router (registry, NATS gateway, HTTP gateway on a free port)."""
    router = Router(RouterConfig(nats_url=nats_server.url, http_port=0))
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


@pytest.fixture
async def nc(nats_server: NatsServerProcess) -> AsyncIterator[NatsClient]:
    """A plain nats-py client, as a foreign client would use."""
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()
