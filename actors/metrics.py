"""Prometheus metrics (`GET /metrics`), read at scrape time from what the actors count
anyway, so that the hot path pays nothing for them.

prometheus-client's collectors are synchronous while the actors answer asks, so a
scrape first gathers a `MetricsSnapshot` (a handful of asks, each on the urgent or low
lane of the actor asked), then renders it through a `SnapshotCollector` made for that
scrape alone: no process-wide registry, no metric objects updated on the hot path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from actors.actor import ActorRef, MailboxStats
from actors.event_feed import EventFeedClient, EventFeedStats
from actors.latency import HistogramSnapshot
from actors.leadership import GetElection
from actors.nats_gateway import NatsGatewayClient, NatsGatewayStats
from actors.registry_api import RegistryClient, RegistryStatus, ServiceCounts
from actors.role_state import Phase, Role
from protocol import InstanceStatus

__all__ = [
    "ConnectionStats",
    "MetricsSnapshot",
    "MetricsSources",
    "SnapshotCollector",
    "gather",
    "render",
]

_PREFIX = "ipc_router"
_LANES = ("urgent", "normal", "low")
OTHER_SERVICES = "(other)"
"""The `service` label of the series that sums the services past the cap (no service
can be called that: parentheses are not allowed in names)."""
DEFAULT_MAX_SERVICES = 200


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """The admin port's connections (see `ConnectionGuard`)."""

    open: int
    max_connections: int
    evicted: int
    refused: int
    timed_out: int


@dataclass(frozen=True, slots=True)
class MetricsSources:
    """Where a scrape asks."""

    registry: RegistryClient
    nats_gateway: NatsGatewayClient
    actors: Mapping[str, ActorRef] = field(default_factory=dict)
    """Every actor whose mailbox is reported, by name."""
    event_feed: EventFeedClient | None = None
    connections: Callable[[], Awaitable[ConnectionStats | None]] | None = None
    version: str = ""
    """Reported in `ipc_router_build_info` (the admin app fills in the package's)."""
    elector: ActorRef | None = None
    """Stream mode: the leader elector, asked for its own leadership events."""
    max_services: int = DEFAULT_MAX_SERVICES
    """Services with series of their own in the per-service metrics (the first, by
    name); the others are summed into `service="(other)"`."""


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything one scrape reports, gathered before rendering."""

    registry: RegistryStatus | None = None
    gateway: NatsGatewayStats | None = None
    mailboxes: dict[str, tuple[bool, MailboxStats]] = field(default_factory=dict)
    """Per actor: (running, mailbox stats)."""
    feed: EventFeedStats | None = None
    connections: ConnectionStats | None = None
    version: str = ""
    gather_seconds: float = 0.0
    election: tuple[str, dict[str, int]] | None = None
    """Stream mode: the elector's phase and its events by kind."""
    services: ServiceCounts | None = None


async def gather(sources: MetricsSources) -> MetricsSnapshot:
    """Ask every source, at once; a source that does not answer is left out."""
    started = time.perf_counter()
    registry_status, gateway, feed, connections, election, services = await asyncio.gather(
        sources.registry.status(),
        sources.nats_gateway.stats(),
        sources.event_feed.stats() if sources.event_feed is not None else _none(),
        sources.connections() if sources.connections is not None else _none(),
        sources.elector.ask_or_none(GetElection()) if sources.elector is not None else _none(),
        sources.registry.service_counts(sources.max_services),
    )
    mailboxes = {name: (ref.alive, ref.mailbox_stats()) for name, ref in sources.actors.items()}
    return MetricsSnapshot(
        registry=registry_status,
        gateway=gateway,
        mailboxes=mailboxes,
        feed=feed,
        connections=connections,
        version=sources.version,
        gather_seconds=time.perf_counter() - started,
        election=election,
        services=services,
    )


async def render(sources: MetricsSources, accept: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of one scrape, in the format `accept` asks for (the
    Prometheus text format by default, OpenMetrics on request)."""
    snapshot = await gather(sources)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(SnapshotCollector(snapshot)), content_type


async def _none() -> None:
    return None


class SnapshotCollector(Collector):
    """A prometheus-client collector over one `MetricsSnapshot`."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Metric]:
        """Nothing up front: the collector is made for one scrape and never registered
        where names could clash."""
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        info = GaugeMetricFamily(
            f"{_PREFIX}_build_info", "The router's version (always 1).", labels=["version"]
        )
        info.add_metric([snapshot.version or "unknown"], 1)
        yield info
        yield _gauge(
            "metrics_gather_seconds",
            "Seconds this scrape took to ask the actors.",
            snapshot.gather_seconds,
        )
        yield from _registry_metrics(snapshot)
        yield from _service_metrics(snapshot.services)
        yield from _gateway_metrics(snapshot.gateway)
        yield from _mailbox_metrics(snapshot.mailboxes)
        yield from _feed_metrics(snapshot.feed)
        yield from _connection_metrics(snapshot.connections)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{_PREFIX}_{name}", documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{_PREFIX}_{name}", documentation, value=value)


def _by_label(
    name: str, documentation: str, label: str, values: Mapping[str, float]
) -> CounterMetricFamily:
    """One counter with one label, a sample per (label value, count), in `values`'
    order."""
    family = CounterMetricFamily(f"{_PREFIX}_{name}", documentation, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family


def _histogram(
    name: str,
    documentation: str,
    labels: list[str],
    series: Mapping[tuple[str, ...], HistogramSnapshot],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(f"{_PREFIX}_{name}", documentation, labels=labels)
    for values, histogram in series.items():
        buckets = [(_le(bound), float(count)) for bound, count in histogram.cumulative()]
        family.add_metric(list(values), buckets, histogram.sum)
    return family


def _le(bound: float) -> str:
    """A bucket's `le` label, as Prometheus writes it."""
    return "+Inf" if bound == float("inf") else repr(bound)


def _registry_metrics(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    status = snapshot.registry
    yield _gauge(
        "registry_up", "1 while the registry actor answers.", 1 if status is not None else 0
    )
    if status is None:
        return
    role = GaugeMetricFamily(
        f"{_PREFIX}_role",
        "What this router does: 1 for its role (leader, standby or memory), 0 for the others.",
        labels=["role"],
    )
    for name in Role:
        role.add_metric([name.value], 1 if status.role == name else 0)
    yield role
    yield _gauge(
        "registry_ready",
        "1 once the registry has read its stream (always in memory).",
        1 if status.ready else 0,
    )
    yield _gauge(
        "registry_revision", "The registry revision this router's view reflects.", status.revision
    )
    yield _gauge(
        "instances_live", "Instances not OFFLINE (what --max-instances caps).", status.instances
    )
    instances = GaugeMetricFamily(
        f"{_PREFIX}_instances", "Registered instances by status.", labels=["status"]
    )
    for state in InstanceStatus:
        instances.add_metric([state.value], status.status_counts.get(state, 0))
    yield instances
    yield _gauge("services", "Services with at least one instance (any status).", status.services)
    yield _counter(
        "events_dropped",
        "Change events the registry could not hand to the NATS gateway (watchers resync).",
        status.events_dropped,
    )
    if status.phase is not None:
        phase = GaugeMetricFamily(
            f"{_PREFIX}_phase",
            "Where this router stands in the registry: 1 for its phase (loading, standby, "
            "taking_up, leading, lapsed, standing_down), 0 for the others.",
            labels=["phase"],
        )
        for stage in Phase:
            phase.add_metric([stage.value], 1 if status.phase == stage else 0)
        yield phase
        events = dict(status.leadership_events)
        if snapshot.election is not None:
            events |= {f"elector_{kind}": count for kind, count in snapshot.election[1].items()}
        yield _by_label(
            "leadership_events",
            "Leadership events so far, by kind: terms won, taken up and given up, lapses, "
            "stand-downs, reloads, stream changes (deleted, replaced, purged), failed stream "
            "checks, leadership buckets created again.",
            "event",
            events,
        )
        yield _counter(
            "stream_records_skipped",
            "Stored records left out of this router's view as invalid (see /healthz).",
            status.records_skipped,
        )
    if status.append_latency is not None:
        yield _histogram(
            "stream_append_duration_seconds",
            "Seconds to store one drain's changes in the JetStream stream (leader only).",
            [],
            {(): status.append_latency},
        )


def _service_metrics(counts: ServiceCounts | None) -> Iterator[Metric]:
    """Per service: instances by status, in maintenance, and usable (ONLINE, not in
    maintenance: what discovery hands out; alert when it is 0)."""
    if counts is None:
        return
    instances = GaugeMetricFamily(
        f"{_PREFIX}_service_instances",
        "Instances of a service by status (services past --metrics-max-services are summed "
        f'into service="{OTHER_SERVICES}").',
        labels=["service", "status"],
    )
    drained = GaugeMetricFamily(
        f"{_PREFIX}_service_instances_in_maintenance",
        "Instances of a service in maintenance (each also counted by its status).",
        labels=["service"],
    )
    usable = GaugeMetricFamily(
        f"{_PREFIX}_service_usable_instances",
        "Instances of a service that discovery hands out: ONLINE and not in maintenance.",
        labels=["service"],
    )
    rows = list(counts.services)
    if counts.other is not None:
        rows.append((OTHER_SERVICES, *counts.other))
    for service, by_status, in_maintenance in rows:
        for state in InstanceStatus:
            instances.add_metric([service, state.value], by_status.get(state, 0))
        drained.add_metric([service], sum(in_maintenance.values()))
        online = by_status.get(InstanceStatus.ONLINE, 0)
        usable.add_metric([service], online - in_maintenance.get(InstanceStatus.ONLINE, 0))
    yield from (instances, drained, usable)
    yield _gauge(
        "metrics_services_folded",
        f'Services summed into service="{OTHER_SERVICES}" because there are more than '
        "--metrics-max-services of them (raise it to see each).",
        counts.folded,
    )


def _gateway_metrics(stats: NatsGatewayStats | None) -> Iterator[Metric]:
    yield _gauge(
        "nats_connected",
        "1 while the NATS gateway runs and its connection is up.",
        1 if stats is not None and stats.connected else 0,
    )
    if stats is None:
        return
    yield _counter(
        "events_published",
        "Change events published on ipc.registry.events.*.",
        stats.events_published,
    )
    yield _by_label(
        "requests_dropped",
        "NATS requests the gateway could not answer, by reason.",
        "reason",
        {
            "no_reply_subject": stats.dropped_without_reply,
            "slow_consumer": stats.dropped_slow,
            "malformed": stats.dropped_malformed,
            "not_leading": stats.unanswered_writes,
            "reply_subject": stats.dropped_reply_subject,
        },
    )
    requests = CounterMetricFamily(
        f"{_PREFIX}_requests",
        "Replies published on NATS, by request subject and reply status.",
        labels=["subject", "status"],
    )
    for (subject, status), count in sorted(stats.requests.items()):
        requests.add_metric([subject, str(status)], count)
    yield requests
    yield _histogram(
        "request_duration_seconds",
        "Seconds from a NATS request's arrival to its reply's publication, by subject.",
        ["subject"],
        {(subject,): histogram for subject, histogram in sorted(stats.latency.items())},
    )


def _mailbox_metrics(mailboxes: Mapping[str, tuple[bool, MailboxStats]]) -> Iterator[Metric]:
    running = GaugeMetricFamily(
        f"{_PREFIX}_actor_running", "1 while the actor accepts messages.", labels=["actor"]
    )
    depth = GaugeMetricFamily(
        f"{_PREFIX}_mailbox_depth",
        "Messages waiting in an actor's mailbox lane.",
        labels=["actor", "lane"],
    )
    rejected = CounterMetricFamily(
        f"{_PREFIX}_mailbox_rejected",
        "Messages refused because an actor's mailbox lane was full (answered 503).",
        labels=["actor"],
    )
    replies = CounterMetricFamily(
        f"{_PREFIX}_replies_dropped",
        "Outcomes an actor could not deliver (their destination actor was gone).",
        labels=["actor"],
    )
    for actor, (alive, stats) in sorted(mailboxes.items()):
        running.add_metric([actor], 1 if alive else 0)
        for lane, count in zip(_LANES, stats.depths, strict=True):
            depth.add_metric([actor, lane], count)
        rejected.add_metric([actor], stats.rejected_full)
        replies.add_metric([actor], stats.replies_dropped)
    yield from (running, depth, rejected, replies)


def _feed_metrics(stats: EventFeedStats | None) -> Iterator[Metric]:
    if stats is None:
        return
    yield _gauge("event_stream_clients", "Clients of the admin event stream now.", stats.clients)
    yield _by_label(
        "event_stream_clients_closed",
        "Event stream clients dropped (too slow) or refused (too many).",
        "reason",
        {"slow": stats.clients_dropped_slow, "refused": stats.clients_refused},
    )
    yield _gauge(
        "event_feed_listening",
        "1 while the event feed listens to NATS (somebody watches).",
        1 if stats.listening else 0,
    )
    yield _gauge(
        "event_feed_connected",
        "1 while the event feed's NATS connection is up.",
        1 if stats.connected else 0,
    )
    yield _by_label(
        "event_feed_messages",
        "Messages the event feed received, by outcome.",
        "outcome",
        {
            "event": stats.events_received - stats.events_malformed - stats.events_duplicate,
            "malformed": stats.events_malformed,
            "duplicate": stats.events_duplicate,
        },
    )
    yield _counter("event_feed_gaps", "Times the event feed may have missed events.", stats.gaps)
    yield _counter(
        "event_feed_resyncs", "event: resync frames sent to stream clients.", stats.resyncs
    )
    yield _counter(
        "event_feed_replayed", "Buffered events sent again after a Last-Event-ID.", stats.replayed
    )
    yield _gauge(
        "event_feed_buffered_events", "Recent events kept for replay.", stats.buffered_events
    )
    yield _gauge(
        "event_feed_buffered_bytes", "Bytes of recent events kept for replay.", stats.buffered_bytes
    )


def _connection_metrics(stats: ConnectionStats | None) -> Iterator[Metric]:
    if stats is None:
        return
    yield _gauge("admin_connections", "Connections open on the admin port.", stats.open)
    yield _gauge(
        "admin_connections_max", "Connections the admin port holds at most.", stats.max_connections
    )
    yield _by_label(
        "admin_connections_closed",
        "Admin connections closed by the connection guard, by reason.",
        "reason",
        {"evicted": stats.evicted, "refused": stats.refused, "head_timeout": stats.timed_out},
    )
