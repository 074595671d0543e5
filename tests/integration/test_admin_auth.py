"""--admin-token: every admin endpoint but /healthz wants the bearer token."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import TypeAlias

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from actors.admin_cli import AdminApiError, run_services
from actors.http_gateway import HealthProbe, build_admin_app
from actors.registry import RegistryActor
from actors.registry_api import RegistryClient
from protocol import LeasePolicy, RegisterRequest

pytestmark = pytest.mark.timeout(30)

TOKEN = "s3cret-admin-token-0123456789"

AdminClient: TypeAlias = TestClient[web.Request, web.Application]


@pytest.fixture
async def client() -> AsyncIterator[AdminClient]:
    actor = RegistryActor()
    await actor.start()
    ref = RegistryClient(actor.ref)
    await ref.register(RegisterRequest(service_name="orders", instance_id="orders-1"))

    async def connected() -> bool:
        return True

    probe = HealthProbe(connected, lambda: True, LeasePolicy())
    async with TestClient(TestServer(build_admin_app(ref, probe, admin_token=TOKEN))) as client:
        yield client
    await actor.stop()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
)
@pytest.mark.parametrize(
    "path", ["/api/v1/admin/services", "/api/v1/admin/services/orders", "/api/v1/admin/openapi.json", "/nope"]
)
async def test_requests_without_the_right_token_get_401(
    client: AdminClient, path: str, headers: dict[str, str]
) -> None:
    with structlog.testing.capture_logs() as logs:
        response = await client.get(path, headers=headers)
        body = await response.json()
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["status"] == 401 and body["error"]["code"] == "unauthorized"
    assert TOKEN not in repr(logs)


async def test_the_right_token_opens_every_endpoint(client: AdminClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/api/v1/admin/services", "/api/v1/admin/services/orders", "/api/v1/admin/openapi.json"):
        response = await client.get(path, headers=headers)
        assert response.status == 200, path


async def test_healthz_needs_no_token(client: AdminClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200


async def test_the_admin_cli_sends_the_token(client: AdminClient) -> None:
    base = str(client.make_url("")).rstrip("/")
    out = io.StringIO()
    await run_services(base, None, None, False, TOKEN, out=out)
    assert "orders" in out.getvalue()
    with pytest.raises(AdminApiError, match="Bearer"):
        await run_services(base, None, None, False, "wrong", out=io.StringIO())


async def test_a_token_that_is_not_utf8_is_a_401_not_a_500(client: AdminClient) -> None:
    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"GET /api/v1/admin/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
    assert b'"code":"unauthorized"' in answer
