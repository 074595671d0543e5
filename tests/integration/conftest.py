"""A router running in-process against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from protocol import LeasePolicy
from tests.support.routers import InProcessRouters


@pytest.fixture
def lease_policy() -> LeasePolicy:
    """The router's lease policy; a module overrides this fixture for short leases."""
    return LeasePolicy()


@pytest.fixture
async def routers(nats_server: NatsServerProcess) -> AsyncIterator[InProcessRouters]:
    """Starts routers on the test's nats-server; stops them at teardown."""
    started = InProcessRouters(nats_server.url)
    try:
        yield started
    finally:
        await started.stop_all()


@pytest.fixture
async def router(routers: InProcessRouters, lease_policy: LeasePolicy) -> Router:
    """A started router (registry, NATS gateway, HTTP gateway on a free port)."""
    return await routers.start(lease_policy=lease_policy)


@pytest.fixture
async def nc(nats_server: NatsServerProcess) -> AsyncIterator[NatsClient]:
    """A plain nats-py client, as a foreign client would use."""
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()
