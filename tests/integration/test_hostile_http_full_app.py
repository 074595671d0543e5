"""schemathesis over the OpenAPI document of a whole router, with the endpoints that only
a router's app serves (`/metrics`, the event stream); `test_hostile_http.py` covers the
app without them.

The event stream is left out of the generated requests: its 200 is an endless stream,
which schemathesis's synchronous client would wait on for ever. Its error answers (400,
401, 405, 503) and the stream itself are tested by hand in `test_event_stream.py`; the
document's description of it is checked here."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from actors.app import Router, RouterConfig
from actors.openapi import EVENTS_PATH, METRICS_PATH, openapi_document
from protocol import LeasePolicy
from sdk import ServiceClient
from tests.integration.test_hostile_http import (
    OPENAPI_PATH,
    load_admin_schema,
    non_2xx_responses_carry_the_json_error_body,
)
from tests.support.threaded import ServerThread, server_thread

pytestmark = pytest.mark.timeout(120)

POLICY = LeasePolicy(heartbeat_interval=30.0, lease_ttl=600.0, offline_after=600.0, offline_retention=600.0)


@asynccontextmanager
async def _serve_router() -> AsyncIterator[int]:
    """A whole router (its own bundled nats-server, memory registry) with one service
    registered."""
    router = Router(RouterConfig(http_port=0, embedded_nats_port=0, lease_policy=POLICY))
    await router.start()
    client = ServiceClient(router.nats_url)
    try:
        await client.connect()
        await client.register("orders", "orders-1", {"zone": "a"})
        yield router.http_port
    finally:
        await client.close()
        await router.stop()


LiveRouter = ServerThread


@pytest.fixture(scope="module")
def live_router() -> Iterator[LiveRouter]:
    with server_thread(_serve_router, "full-admin-http") as server:
        yield server


@pytest.fixture(scope="module")
def full_schema(live_router: LiveRouter) -> Any:
    return load_admin_schema(live_router.base_url).exclude(
        operation_id="streamEvents"  # an endless 200: see the module's docstring
    )


@pytest.fixture
def _schemathesis_sees_a_pytest_8_node(request: pytest.FixtureRequest) -> None:
    """As in test_hostile_http.py: schemathesis 4.32 reads `request.node._nodeid`."""
    node: Any = request.node
    if not hasattr(node, "_nodeid"):
        node._nodeid = node.nodeid


full_app = schemathesis.pytest.from_fixture("full_schema").include(path=[METRICS_PATH])


@full_app.parametrize()
@pytest.mark.usefixtures("_schemathesis_sees_a_pytest_8_node")
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_to_metrics_match_the_document(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(additional_checks=[non_2xx_responses_carry_the_json_error_body])


def test_the_router_document_lists_metrics_and_the_event_stream(live_router: LiveRouter) -> None:
    with urllib.request.urlopen(f"{live_router.base_url}{OPENAPI_PATH}", timeout=10) as answer:
        document = json.loads(answer.read())
    assert document == json.loads(
        json.dumps(openapi_document(document["info"]["version"], events=True, metrics=True))
    )
    stream = document["paths"][EVENTS_PATH]["get"]
    assert stream["operationId"] == "streamEvents"
    assert set(stream["responses"]["200"]["content"]) == {"text/event-stream"}
    assert {p["name"] for p in stream["parameters"]} == {"service", "Last-Event-ID"}
    assert "event: resync" in stream["description"]
    assert "RegistryEvent" in document["components"]["schemas"]
    metrics = document["paths"][METRICS_PATH]["get"]
    assert set(metrics["responses"]["200"]["content"]) == {"text/plain", "application/openmetrics-text"}
    # The app without a feed or metrics (test_hostile_http.py's) documents neither.
    assert EVENTS_PATH not in openapi_document("0")["paths"]
    assert METRICS_PATH not in openapi_document("0")["paths"]
