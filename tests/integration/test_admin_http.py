"""The admin HTTP API of a running router, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from actors.registry import RegistryActor
from sdk import ServiceClient
from tests.support.actors import incarnation

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def http(router: Router) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{router.http_port}") as session:
        yield session


async def get_json(http: aiohttp.ClientSession, path: str, method: str = "GET") -> tuple[int, Any]:
    async with http.request(method, path) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


def assert_error_body(body: Any, status: int, code: str) -> None:
    assert body["status"] == status
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)


@contextmanager
def registry_down(router: Router) -> Iterator[None]:
    """No registry behind the router's ref while the block runs, as between a crash
    and its restart."""
    registry = incarnation(router.registry.ref)
    router.registry.ref.bind(None)
    try:
        yield
    finally:
        router.registry.ref.bind(registry)


async def test_registered_services_are_listed_with_counts(
    router: Router, nats_server: NatsServerProcess, http: aiohttp.ClientSession
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1", {"zone": "a"})
        await client.register("orders", "orders-2")
        await client.register("payments", "payments-1")
        status, body = await get_json(http, "/api/v1/admin/services")
    assert status == 200
    assert body["total"] == 2
    by_name = {s["service_name"]: s for s in body["services"]}
    assert by_name["orders"]["instance_count"] == 2
    assert by_name["orders"]["status_counts"] == {"ONLINE": 2}
    assert by_name["payments"]["instance_count"] == 1


async def test_one_service_shows_its_instances(
    router: Router, nats_server: NatsServerProcess, http: aiohttp.ClientSession
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1", {"zone": "a"})
        status, body = await get_json(http, "/api/v1/admin/services/orders")
    assert status == 200
    assert body["service_name"] == "orders"
    [instance] = body["instances"]
    assert instance["instance_id"] == "orders-1"
    assert instance["status"] == "ONLINE"
    assert instance["metadata"] == {"zone": "a"}
    assert instance["registered_at"].endswith("Z")
    assert instance["last_heartbeat"] >= instance["registered_at"]
    assert instance["lease_expires_at"] > instance["last_heartbeat"]


async def test_admin_output_never_contains_a_session_id(
    router: Router, nats_server: NatsServerProcess, http: aiohttp.ClientSession
) -> None:
    client = ServiceClient(nats_server.url)
    async with client:
        await client.register("orders", "orders-1")
    secret = client._session_id
    async with http.get("/api/v1/admin/services") as response:
        assert response.status == 200
        listing = await response.text()
    async with http.get("/api/v1/admin/services/orders") as response:
        assert response.status == 200
        detail = await response.text()
    services = json.loads(listing)["services"]
    assert [(s["service_name"], s["instance_count"]) for s in services] == [("orders", 1)]
    assert [i["instance_id"] for i in json.loads(detail)["instances"]] == ["orders-1"]
    for body in (listing, detail):
        assert secret not in body
        assert "session" not in body


async def test_empty_registry_lists_no_services(http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, "/api/v1/admin/services")
    assert status == 200
    assert (body["services"], body["total"], body["revision"]) == ([], 0, 0)
    assert len(body["epoch"]) == 16


@pytest.mark.parametrize(
    ("path", "method", "status", "code"),
    [
        ("/api/v1/admin/services/unknown", "GET", 404, "service_not_found"),
        ("/api/v1/admin/services/a%2Fb", "GET", 404, "service_not_found"),
        ("/api/v1/admin/nothing-here", "GET", 404, "route_not_found"),
        ("/nope", "GET", 404, "route_not_found"),
        ("/api/v1/admin/services", "POST", 405, "method_not_allowed"),
        ("/api/v1/admin/services/orders", "DELETE", 405, "method_not_allowed"),
    ],
)
async def test_every_error_has_the_json_error_body(
    http: aiohttp.ClientSession, path: str, method: str, status: int, code: str
) -> None:
    got_status, body = await get_json(http, path, method)
    assert got_status == status
    assert_error_body(body, status, code)


async def test_very_long_service_name_is_a_clean_404(http: aiohttp.ClientSession) -> None:
    status, body = await get_json(http, "/api/v1/admin/services/" + "x" * 2000)
    assert status == 404
    assert_error_body(body, 404, "service_not_found")


async def test_healthz_is_200_when_nats_is_connected_and_registry_runs(
    http: aiohttp.ClientSession,
) -> None:
    status, body = await get_json(http, "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    assert body["nats_connected"] is True and body["registry_running"] is True
    assert body["lease_policy"] == {
        "heartbeat_interval": 1.0,
        "lease_ttl": 3.0,
        "offline_after": 30.0,
        "offline_retention": 60.0,
    }


async def test_healthz_is_503_while_the_registry_is_down(
    router: Router, http: aiohttp.ClientSession
) -> None:
    with registry_down(router):
        status, body = await get_json(http, "/healthz")
    assert status == 503
    assert body["registry_running"] is False


async def test_registry_down_turns_queries_into_503(router: Router, http: aiohttp.ClientSession) -> None:
    with registry_down(router):
        status, body = await get_json(http, "/api/v1/admin/services")
    assert_error_body(body, 503, "router_unavailable")
    assert status == 503


async def test_unexpected_error_is_a_500_json_body_without_traceback(
    router: Router, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = incarnation(router.registry.ref)
    assert isinstance(registry, RegistryActor)

    def broken() -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(registry.state, "list_services", broken)
    status, body = await get_json(http, "/api/v1/admin/services")
    assert status in (500, 503)
    assert_error_body(body, status, body["error"]["code"])
    assert "Traceback" not in str(body) and "boom" not in str(body)


async def test_openapi_document_is_served_with_schemas_from_the_structs(
    http: aiohttp.ClientSession,
) -> None:
    status, body = await get_json(http, "/api/v1/admin/openapi.json")
    assert status == 200
    assert body["openapi"] == "3.1.0"
    assert "/api/v1/admin/services/{service_name}" in body["paths"]
    schemas = body["components"]["schemas"]
    for name in ("ServiceList", "ServiceDetail", "ErrorReply", "Instance", "Health"):
        assert name in schemas
    assert schemas["Instance"]["properties"]["status"]["$ref"].endswith("InstanceStatus")


async def test_admin_pagination_status_and_metadata_filters(
    router: Router, nats_server: NatsServerProcess, http: aiohttp.ClientSession
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "a", {"zone": "a", "replicas": 3})
        await client.register("orders", "b", {"zone": "b"})
        await client.register("payments", "p")
        await client.deregister("orders", "b")
        status, page = await get_json(http, "/api/v1/admin/services?limit=1")
        assert status == 200 and [s["service_name"] for s in page["services"]] == ["orders"]
        status, rest = await get_json(http, f"/api/v1/admin/services?limit=1&cursor={page['next_cursor']}")
        assert [s["service_name"] for s in rest["services"]] == ["payments"]
        assert rest["next_cursor"] is None
        base = "/api/v1/admin/services/orders"
        for query, expected in [
            ("", ["a", "b"]),
            ("?status=any", ["a", "b"]),
            ("?status=offline", ["b"]),
            ("?meta.zone=a", ["a"]),
            ("?meta.replicas=3", ["a"]),
            ("?meta.zone=a&status=OFFLINE", []),
        ]:
            status, body = await get_json(http, base + query)
            assert status == 200, query
            assert [i["instance_id"] for i in body["instances"]] == expected, query


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/admin/services?limit=abc", "query.limit"),
        ("/api/v1/admin/services?limit=0", "query.limit"),
        ("/api/v1/admin/services?limit=5000", "query.limit"),
        ("/api/v1/admin/services?status=sleepy", "query.status"),
        ("/api/v1/admin/services?cursor=%00%01", "query.cursor"),
        ("/api/v1/admin/services?bogus=1", "query.bogus"),
        ("/api/v1/admin/services?meta.zone=a", "query.meta"),
    ],
)
async def test_bad_query_parameters_are_400_with_the_parameter(
    router: Router, http: aiohttp.ClientSession, path: str, field: str
) -> None:
    status, body = await get_json(http, path)
    assert status == 400
    assert_error_body(body, 400, "invalid_field")
    assert body["error"]["details"]["field"] == field
