"""A router running in-process against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from actors.app import Router, RouterConfig
from actors.embedded_nats import NatsServerProcess
from protocol import LeasePolicy


@pytest.fixture
def lease_policy() -> LeasePolicy:
    """The router's lease policy; a module overrides this fixture for short leases."""
    return LeasePolicy()


@pytest.fixture
async def router(nats_server: NatsServerProcess, lease_policy: LeasePolicy) -> AsyncIterator[Router]:
    """A started router (registry, NATS gateway, HTTP gateway on a free port)."""
    router = Router(RouterConfig(nats_url=nats_server.url, http_port=0, lease_policy=lease_policy))
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
