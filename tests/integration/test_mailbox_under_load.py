"""The mailbox under load: no lost request, no reply to the wrong caller, and a full
bounded mailbox answers 503 instead of growing."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from actors.app import Router
from protocol import REGISTER_SUBJECT
from tests.support.nats_requests import nats_request
from tests.support.routers import InProcessRouters

pytestmark = pytest.mark.timeout(60)


async def burst(nc: NatsClient, count: int, in_flight: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` registrations, `in_flight` at a time; (instance asked for, reply)."""
    gate = asyncio.Semaphore(in_flight)

    async def one(n: int) -> tuple[str, dict[str, Any]]:
        instance = f"i-{n}"
        request = {"service_name": f"svc-{n % 7}", "instance_id": instance}
        async with gate:
            return instance, await nats_request(nc, REGISTER_SUBJECT, request, timeout=10)

    return await asyncio.gather(*(one(n) for n in range(count)))


async def test_every_request_gets_its_own_reply_under_load(router: Router, nc: NatsClient) -> None:
    results = await burst(nc, 3000, 256)
    assert Counter(reply["status"] for _, reply in results) == {201: 3000}
    for instance, reply in results:
        assert reply["instance"]["instance_id"] == instance
    assert router.registry.alive


@pytest.fixture
async def tiny_mailbox_router(routers: InProcessRouters) -> Router:
    return await routers.start(registry_mailbox_size=4)


async def test_a_full_mailbox_answers_503_and_the_rest_are_served(
    tiny_mailbox_router: Router, nc: NatsClient
) -> None:
    results = await burst(nc, 2000, 512)
    statuses = Counter(reply["status"] for _, reply in results)
    assert set(statuses) <= {201, 503}
    assert statuses[503] > 0, "a 4-slot mailbox under 512 in flight never filled"
    assert statuses[201] > 0
    overloaded = next(reply for _, reply in results if reply["status"] == 503)
    assert overloaded["error"]["code"] == "router_unavailable"
    assert "retry" in overloaded["error"]["message"]
    for instance, reply in results:
        if reply["status"] == 201:
            assert reply["instance"]["instance_id"] == instance
