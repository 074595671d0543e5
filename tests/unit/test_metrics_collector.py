"""The metrics collector over a snapshot (no actors): what it makes of the registry's
status, the NATS gateway's stats (request counts by subject and status, latency
histograms), the mailboxes and the connections; and the latency histogram itself."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from actors.actor import MailboxStats
from actors.event_feed import EventFeedStats
from actors.latency import DEFAULT_BOUNDS, HistogramSnapshot, LatencyHistogram
from actors.leadership import Role
from actors.metrics import ConnectionStats, MetricsSnapshot, SnapshotCollector
from actors.nats_gateway import NatsGatewayStats
from actors.registry_api import RegistryStatus, ServiceCounts
from protocol import InstanceStatus

REPO = Path(__file__).resolve().parents[2]


def render(snapshot: MetricsSnapshot) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = generate_latest(SnapshotCollector(snapshot)).decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def histogram(*observations: float) -> HistogramSnapshot:
    kept = LatencyHistogram()
    for seconds in observations:
        kept.observe(seconds)
    return kept.snapshot()


def test_the_stats_are_rendered_and_absent_sources_left_out() -> None:
    snapshot = MetricsSnapshot(
        registry=RegistryStatus(
            role=Role.STANDBY, ready=True, revision=42, epoch="e", instances=3, offline=2, events_dropped=1
        ),
        gateway=NatsGatewayStats(
            connected=True, events_published=7, dropped_without_reply=1, dropped_slow=2, dropped_malformed=3
        ),
        mailboxes={"registry": (True, MailboxStats((1, 2, 3), 4, 5))},
        version="1.2.3",
    )
    metrics = render(snapshot)
    assert metrics["ipc_router_role"] == {
        (("role", "leader"),): 0,
        (("role", "standby"),): 1,
        (("role", "memory"),): 0,
    }
    assert metrics["ipc_router_registry_revision"] == {(): 42}
    assert metrics["ipc_router_instances"] == {
        (("status", "ONLINE"),): 0,
        (("status", "UNHEALTHY"),): 0,
        (("status", "OFFLINE"),): 0,
    }
    assert metrics["ipc_router_instances_live"] == {(): 3}
    assert metrics["ipc_router_events_dropped_total"] == {(): 1}
    assert metrics["ipc_router_events_published_total"] == {(): 7}
    assert metrics["ipc_router_requests_dropped_total"][(("reason", "slow_consumer"),)] == 2
    assert metrics["ipc_router_mailbox_depth"] == {
        (("actor", "registry"), ("lane", "urgent")): 1,
        (("actor", "registry"), ("lane", "normal")): 2,
        (("actor", "registry"), ("lane", "low")): 3,
    }
    assert metrics["ipc_router_mailbox_rejected_total"] == {(("actor", "registry"),): 4}
    assert metrics["ipc_router_replies_dropped_total"] == {(("actor", "registry"),): 5}
    assert metrics["ipc_router_build_info"] == {(("version", "1.2.3"),): 1}
    assert "ipc_router_requests_total" not in metrics  # nothing answered yet
    for absent in (
        "ipc_router_stream_append_duration_seconds_bucket",  # not a leader
        "ipc_router_event_stream_clients",
        "ipc_router_admin_connections",
    ):
        assert absent not in metrics


def test_nothing_answered_still_renders() -> None:
    metrics = render(MetricsSnapshot())
    assert metrics["ipc_router_registry_up"] == {(): 0}
    assert metrics["ipc_router_nats_connected"] == {(): 0}


def test_counts_by_status_and_latency_histograms_are_rendered() -> None:
    status = RegistryStatus(
        role=Role.LEADER,
        ready=True,
        revision=9,
        epoch="e",
        instances=5,
        offline=1,
        events_dropped=0,
        status_counts={InstanceStatus.ONLINE: 4, InstanceStatus.UNHEALTHY: 1, InstanceStatus.OFFLINE: 1},
        services=2,
        append_latency=histogram(0.0008, 0.002, 0.003),
    )
    gateway = NatsGatewayStats(
        connected=True,
        events_published=0,
        dropped_without_reply=0,
        dropped_slow=0,
        dropped_malformed=0,
        requests={("ipc.service.register", 201): 3, ("ipc.service.register", 409): 1},
        latency={"ipc.service.register": histogram(0.0004, 0.0004, 0.02, 9.0)},
    )
    snapshot = MetricsSnapshot(registry=status, gateway=gateway)
    metrics = render(snapshot)
    assert metrics["ipc_router_requests_total"] == {
        (("status", "201"), ("subject", "ipc.service.register")): 3,
        (("status", "409"), ("subject", "ipc.service.register")): 1,
    }
    buckets = metrics["ipc_router_request_duration_seconds_bucket"]
    subject = ("subject", "ipc.service.register")
    assert buckets[(("le", "0.0005"), subject)] == 2
    assert buckets[(("le", "0.025"), subject)] == 3
    assert buckets[(("le", "5.0"), subject)] == 3
    assert buckets[(("le", "+Inf"), subject)] == 4
    assert metrics["ipc_router_request_duration_seconds_count"] == {(subject,): 4}
    assert math.isclose(metrics["ipc_router_request_duration_seconds_sum"][(subject,)], 9.0208)
    assert metrics["ipc_router_stream_append_duration_seconds_count"] == {(): 3}
    assert metrics["ipc_router_stream_append_duration_seconds_bucket"][(("le", "0.001"),)] == 1
    assert metrics["ipc_router_instances"] == {
        (("status", "ONLINE"),): 4,
        (("status", "UNHEALTHY"),): 1,
        (("status", "OFFLINE"),): 1,
    }
    assert metrics["ipc_router_services"] == {(): 2}


def test_a_latency_histogram_counts_each_observation_once_in_its_bucket() -> None:
    kept = LatencyHistogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.01, 0.5):
        kept.observe(seconds)
    snapshot = kept.snapshot()
    assert snapshot.counts == (2, 2, 1)  # a bound belongs to its own bucket (le)
    assert snapshot.count == 5
    assert snapshot.cumulative() == [(0.001, 2), (0.01, 4), (math.inf, 5)]
    assert math.isclose(snapshot.sum, 0.5135)
    assert len(LatencyHistogram().snapshot().counts) == len(DEFAULT_BOUNDS) + 1


@pytest.mark.parametrize("bounds", [(), (0.1, 0.1), (0.2, 0.1)])
def test_histogram_bounds_must_ascend(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="ascending"):
        LatencyHistogram(bounds)


def test_every_metric_of_the_grafana_dashboard_and_alert_rules_is_one_the_router_exports() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    rules = yaml.safe_load((REPO / "deploy" / "prometheus-alerts.yaml").read_text())
    expressions = [
        *(target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])),
        *(rule["expr"] for group in rules["groups"] for rule in group["rules"]),
    ]
    wanted = {name for expr in expressions for name in re.findall(r"\bipc_router_[a-z_]+", expr)}
    assert "ipc_router_service_usable_instances" in wanted
    snapshot = MetricsSnapshot(
        registry=RegistryStatus(
            role=Role.LEADER,
            ready=True,
            revision=1,
            epoch="e",
            instances=0,
            offline=0,
            events_dropped=0,
            append_latency=histogram(0.001),
        ),
        gateway=NatsGatewayStats(
            connected=True,
            events_published=0,
            dropped_without_reply=0,
            dropped_slow=0,
            dropped_malformed=0,
            requests={("ipc.service.register", 201): 1},
            latency={"ipc.service.register": histogram(0.001)},
        ),
        mailboxes={"registry": (True, MailboxStats((0, 0, 0), 0, 0))},
        feed=EventFeedStats(
            connected=True,
            listening=True,
            clients=0,
            clients_dropped_slow=0,
            clients_refused=0,
            events_received=0,
            events_malformed=0,
            events_duplicate=0,
            gaps=0,
            resyncs=0,
            replayed=0,
            buffered_events=0,
            buffered_bytes=0,
        ),
        connections=ConnectionStats(open=1, max_connections=512, evicted=0, refused=0, timed_out=0),
        services=ServiceCounts([("orders", {InstanceStatus.ONLINE: 1}, {})]),
    )
    exported = set(render(snapshot))
    assert wanted, "no metric found in the dashboard"
    assert wanted <= exported, sorted(wanted - exported)


def test_per_service_series_and_the_folded_rest() -> None:
    counts = ServiceCounts(
        [("orders", {InstanceStatus.ONLINE: 3, InstanceStatus.UNHEALTHY: 1}, {InstanceStatus.ONLINE: 1})],
        other=({InstanceStatus.ONLINE: 5}, {}),
        folded=4,
    )
    metrics = render(MetricsSnapshot(services=counts))
    instances = metrics["ipc_router_service_instances"]
    assert instances[(("service", "orders"), ("status", "ONLINE"))] == 3
    assert instances[(("service", "orders"), ("status", "UNHEALTHY"))] == 1
    assert instances[(("service", "orders"), ("status", "OFFLINE"))] == 0
    assert instances[(("service", "(other)"), ("status", "ONLINE"))] == 5
    usable = metrics["ipc_router_service_usable_instances"]
    assert usable == {(("service", "orders"),): 2, (("service", "(other)"),): 5}
    assert metrics["ipc_router_service_instances_in_maintenance"][(("service", "orders"),)] == 1
    assert metrics["ipc_router_metrics_services_folded"] == {(): 4}
    assert "ipc_router_service_instances" not in render(MetricsSnapshot())
