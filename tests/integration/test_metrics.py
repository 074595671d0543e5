"""`GET /metrics` of real routers on a real nats-server: the Prometheus text format,
read from what the actors count, behind the admin token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from actors.app import Router
from actors.embedded_nats import NatsServerProcess
from protocol import LeasePolicy
from sdk import ServiceClient
from tests.support.actors import bound_actor
from tests.support.routers import InProcessRouters
from tests.support.sse import open_stream
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

TOKEN = "metrics-admin-token-0123456789"
POLICY = LeasePolicy(heartbeat_interval=0.1, lease_ttl=0.4, offline_after=30, offline_retention=60)


@pytest.fixture
def lease_policy() -> LeasePolicy:
    return POLICY


@pytest.fixture
async def http(router: Router) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{router.http_port}") as session:
        yield session


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of the exposition, by (name, sorted labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[_key(sample)] = sample.value
    return found


def _key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {key}; have {sorted(k for k in samples if k[0] == name)}"
    return samples[key]


async def scrape(http: aiohttp.ClientSession, headers: dict[str, str] | None = None) -> Samples:
    async with http.get("/metrics", headers=headers or {}) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())


async def test_metrics_report_instances_services_revision_role_and_mailboxes(
    router: Router, nats_server: NatsServerProcess, http: aiohttp.ClientSession
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        await client.register("orders", "orders-2")
        await client.register("payments", "payments-1")
        # One instance stops renewing: UNHEALTHY after the TTL (no deregistration).
        stopped = ServiceClient(nats_server.url, heartbeat=False)
        async with stopped:
            await stopped.register("billing", "billing-1")
            status = await router.registry.status()
            assert status is not None

            async def one_unhealthy() -> bool:
                samples = await scrape(http)
                return value(samples, "ipc_router_instances", status="UNHEALTHY") == 1

            await eventually(one_unhealthy, what="billing-1 to be counted UNHEALTHY")
            samples = await scrape(http)
            await stopped.deregister("billing", "billing-1")
    assert value(samples, "ipc_router_instances", status="ONLINE") == 3
    assert value(samples, "ipc_router_instances", status="OFFLINE") == 0
    assert value(samples, "ipc_router_instances_live") == 4
    assert value(samples, "ipc_router_services") == 3
    assert value(samples, "ipc_router_registry_revision") >= 5
    assert value(samples, "ipc_router_role", role="memory") == 1
    assert value(samples, "ipc_router_role", role="leader") == 0
    assert value(samples, "ipc_router_registry_ready") == 1
    assert value(samples, "ipc_router_nats_connected") == 1
    assert value(samples, "ipc_router_events_published_total") >= 5
    assert value(samples, "ipc_router_events_dropped_total") == 0
    register = {"subject": "ipc.service.register"}
    assert value(samples, "ipc_router_requests_total", status="201", **register) == 4
    assert value(samples, "ipc_router_request_duration_seconds_count", **register) == 4
    assert value(samples, "ipc_router_request_duration_seconds_bucket", le="+Inf", **register) == 4
    assert value(samples, "ipc_router_requests_total", subject="ipc.service.heartbeat", status="200") >= 1
    assert ("ipc_router_stream_append_duration_seconds_count", ()) not in samples  # memory
    for reason in ("no_reply_subject", "slow_consumer", "malformed"):
        assert value(samples, "ipc_router_requests_dropped_total", reason=reason) == 0
    for actor in ("registry", "nats-gateway", "event-feed", "http-gateway"):
        assert value(samples, "ipc_router_actor_running", actor=actor) == 1
        assert value(samples, "ipc_router_mailbox_rejected_total", actor=actor) == 0
        assert value(samples, "ipc_router_replies_dropped_total", actor=actor) == 0
        for lane in ("urgent", "normal", "low"):
            assert value(samples, "ipc_router_mailbox_depth", actor=actor, lane=lane) >= 0
    assert value(samples, "ipc_router_admin_connections") >= 1
    assert value(samples, "ipc_router_admin_connections_closed_total", reason="refused") == 0
    assert value(samples, "ipc_router_event_feed_listening") == 0  # nobody watches
    assert value(samples, "ipc_router_build_info", version=_version(samples)) == 1


def _version(samples: Samples) -> str:
    return next(dict(labels)["version"] for name, labels in samples if name == "ipc_router_build_info")


async def test_event_stream_clients_are_counted(
    router: Router, http: aiohttp.ClientSession
) -> None:
    async with open_stream(f"http://127.0.0.1:{router.http_port}") as stream:
        await stream.next()
        samples = await scrape(http)
        assert value(samples, "ipc_router_event_stream_clients") == 1
        assert value(samples, "ipc_router_event_feed_listening") == 1
        assert value(samples, "ipc_router_event_feed_resyncs_total") == 1


async def test_openmetrics_is_served_when_asked_for(http: aiohttp.ClientSession) -> None:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with http.get("/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = await response.text()
    assert text.rstrip().endswith("# EOF")
    assert "ipc_router_registry_revision" in text


async def test_a_registry_that_does_not_answer_is_reported_not_a_failed_scrape(
    router: Router, http: aiohttp.ClientSession
) -> None:
    registry = bound_actor(router.registry.ref)
    router.registry.ref.bind(None)
    try:
        samples = await scrape(http)
    finally:
        router.registry.ref.bind(registry)
    assert value(samples, "ipc_router_registry_up") == 0
    assert value(samples, "ipc_router_actor_running", actor="registry") == 0
    assert ("ipc_router_registry_revision", ()) not in samples
    assert value(samples, "ipc_router_nats_connected") == 1


async def test_metrics_want_the_admin_token(routers: InProcessRouters) -> None:
    router = await routers.start(admin_token=TOKEN)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{router.http_port}") as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.get("/metrics", headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await response.json())["error"]["code"] == "unauthorized"
        samples = await scrape(http, {"Authorization": f"Bearer {TOKEN}"})
    assert value(samples, "ipc_router_registry_ready") == 1


async def test_leader_and_standby_say_their_role(
    routers: InProcessRouters,
) -> None:
    started = [
        await routers.start(store="stream", lease_policy=POLICY, presence_wait=0.05) for _ in range(2)
    ]

    async def roles() -> list[tuple[float, float]]:
        found: list[tuple[float, float]] = []
        for router in started:
            async with (
                aiohttp.ClientSession(f"http://127.0.0.1:{router.http_port}") as http,
                http.get("/metrics") as response,
            ):
                samples = parse(await response.text())
            found.append(
                (value(samples, "ipc_router_role", role="leader"), value(samples, "ipc_router_role", role="standby"))
            )
        return sorted(found)

    async def one_of_each() -> bool:
        return await roles() == [(0.0, 1.0), (1.0, 0.0)]

    await eventually(one_of_each, what="one leader and one standby in the metrics")
    async with ServiceClient(routers.nats_url) as client:
        await client.register("orders", "orders-1")
    statuses = [await router.registry.status() for router in started]
    leader = next(r for r, status in zip(started, statuses, strict=True) if status and status.role == "leader")
    async with (
        aiohttp.ClientSession(f"http://127.0.0.1:{leader.http_port}") as http,
        http.get("/metrics") as response,
    ):
        samples = parse(await response.text())
    assert value(samples, "ipc_router_stream_append_duration_seconds_count") >= 1


async def test_per_service_metrics_count_by_status_and_fold_the_services_past_the_cap(
    routers: InProcessRouters, nats_server: NatsServerProcess
) -> None:
    """Three services, a cap of two: alpha and beta get series of their own, gamma is
    summed into service="(other)", and the folded gauge says one service was."""
    router = await routers.start(lease_policy=POLICY, metrics_max_services=2)
    async with (
        aiohttp.ClientSession(f"http://127.0.0.1:{router.http_port}") as http,
        ServiceClient(nats_server.url) as client,
    ):
        for service, count in (("alpha", 2), ("beta", 1), ("gamma", 3)):
            for n in range(count):
                await client.register(service, f"{service}-{n}")
        await client.set_maintenance("alpha", "alpha-0", True, reason="deploy")
        await client.set_maintenance("gamma", "gamma-0", True, reason="deploy")
        await client.deregister("beta", "beta-0")
        samples = await scrape(http)
    assert value(samples, "ipc_router_service_instances", service="alpha", status="ONLINE") == 2
    assert value(samples, "ipc_router_service_instances_in_maintenance", service="alpha") == 1
    assert value(samples, "ipc_router_service_usable_instances", service="alpha") == 1
    assert value(samples, "ipc_router_service_instances", service="beta", status="OFFLINE") == 1
    assert value(samples, "ipc_router_service_usable_instances", service="beta") == 0  # alert!
    assert value(samples, "ipc_router_service_instances", service="(other)", status="ONLINE") == 3
    assert value(samples, "ipc_router_service_usable_instances", service="(other)") == 2
    assert value(samples, "ipc_router_metrics_services_folded") == 1
    assert not [key for key in samples if ("service", "gamma") in key[1]]
