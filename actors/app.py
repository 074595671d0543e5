"""Wiring: the supervision tree of one router process, and how it runs until stopped."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from aiohttp import web

from actors.actor import ActorRef
from actors.data_dir import DataDirLock
from actors.embedded_nats import EmbeddedNats, free_port
from actors.event_feed import EventFeed, EventFeedClient, EventFeedLimits
from actors.http_gateway import (
    AdminLimits,
    GetAddress,
    GetConnectionStats,
    HealthProbe,
    HttpGateway,
    build_admin_app,
)
from actors.journal import JournalConfig
from actors.leadership import LeaderElector
from actors.metrics import DEFAULT_MAX_SERVICES, ConnectionStats, MetricsSources
from actors.nats_gateway import NatsGateway, NatsGatewayClient, Presence
from actors.registry import RegistryActor, StreamStore
from actors.registry_api import RegistryClient
from actors.role_state import RoleTimers
from actors.supervisor import ChildSpec, RestartIntensityError, Supervisor
from protocol import LeasePolicy, RegistryLimits
from sdk.connection import DEAD_LINK_AFTER, NatsAuth, redact

__all__ = ["Router", "RouterConfig", "run_until_stopped"]

log = structlog.get_logger(component="router")


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Everything `ipc-router serve` can be told."""

    nats_url: str | None = None
    """NATS servers (comma-separated, as NATS tools take them); None starts the bundled
    one on loopback."""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    embedded_nats_port: int = 4222
    """Port of the bundled nats-server (0: any free one)."""
    store: Literal["memory", "stream"] = "memory"
    """Where the registry lives: in this process only, or in a JetStream stream shared
    (and replicated) by every router on the NATS system. (`ipc-router serve` defaults
    to "stream".)"""
    data_dir: Path | None = None
    """Stream mode with the bundled nats-server: where it keeps its JetStream data (None:
    a temporary directory, removed when the router stops)."""
    journal: JournalConfig = field(default_factory=JournalConfig)
    failover_after: float = 0.5
    """Seconds without a leader's renewal before a standby takes over."""
    registry_mailbox_size: int = 10_000
    """Requests queued for the registry before new ones are answered 503."""
    max_restarts: int = 3
    restart_window_seconds: float = 5.0
    lease_policy: LeasePolicy = field(default_factory=LeasePolicy)
    limits: RegistryLimits = field(default_factory=RegistryLimits)
    nats_auth: NatsAuth = field(default_factory=NatsAuth)
    """How the router's request-answering connections authenticate (the gateway's, the
    event feed's)."""
    store_auth: NatsAuth | None = None
    """How the connections to the stream and the leadership key authenticate (the
    registry's, the elector's); None: as `nats_auth`. A deployment gives them another
    NATS user than the one that answers requests, so that no reply can write the stream
    or the key (deploy/nats-server.conf)."""
    reply_prefixes: tuple[str, ...] = ()
    """Inbox prefixes (besides `_INBOX` and the router's own) whose subjects the router
    answers requests on: the per-user prefixes of a deployment's clients."""
    admin_token: str | None = field(default=None, repr=False)
    """When set, the admin API (all but /healthz) wants `Authorization: Bearer <token>`."""
    admin_limits: AdminLimits = field(default_factory=AdminLimits)
    admin_cache_bytes: int = 32 * 2**20
    """What the admin API's cache of encoded pages may hold, entries' overhead included."""
    cursor_secret: bytes | None = field(default=None, repr=False)
    """Memory mode: signs the cursors of query pages (random when None); in stream
    mode the stream holds the secret every router uses."""
    presence_wait: float = 0.3
    """Seconds a starting router listens for other routers on the NATS system."""
    event_feed: EventFeedLimits = field(default_factory=EventFeedLimits)
    """Bounds of the admin event stream (`GET /api/v1/admin/events`) and its replay buffer."""
    metrics_max_services: int = DEFAULT_MAX_SERVICES
    """Services with per-service metric series of their own; the rest are summed."""
    dead_link_after: float = DEAD_LINK_AFTER
    """Seconds after which each of the router's NATS connections that answers none of
    its pings is taken for dead and dialled again (a half-open link sends no FIN)."""


class Router:
    """One router: [embedded nats-server], registry, NATS gateway, [leader elector],
    HTTP gateway.

    The actors reach each other only through the supervisor's refs."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.router_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        """Names this router in term markers, presence answers and the leadership key
        (unique even for several routers in one process, as tests run them)."""
        embedded_port = config.embedded_nats_port or free_port()
        self.embedded_nats_url = f"nats://127.0.0.1:{embedded_port}"
        self.nats_url = config.nats_url or self.embedded_nats_url
        streamed = config.store == "stream"
        refs = {name: ActorRef(name) for name in ("registry", "nats-gateway", "leader-elector")}
        specs: list[ChildSpec] = []
        self._data_lock: DataDirLock | None = None
        """The bundled nats-server's data directory is this router's alone."""
        if config.nats_url is None:
            store_dir = config.data_dir / "nats" if streamed and config.data_dir else None
            if store_dir is not None and config.data_dir is not None:
                self._data_lock = DataDirLock(config.data_dir)
            specs.append(
                ChildSpec(
                    "embedded-nats", lambda: EmbeddedNats(port=embedded_port, store_dir=store_dir)
                )
            )
        store = (
            StreamStore(
                nats_url=self.nats_url,
                auth=config.store_auth or config.nats_auth,
                journal=config.journal,
                timers=RoleTimers(
                    failover_after=config.failover_after,
                    tombstone_ttl=config.journal.tombstone_ttl,
                ),
                router_id=self.router_id,
                dead_link_after=config.dead_link_after,
                gateway=refs["nats-gateway"],
                elector=refs["leader-elector"],
            )
            if streamed
            else None
        )
        presence = Presence(
            mode=config.store,
            stream=config.journal.stream if streamed else None,
            router=self.router_id,
        )
        specs += [
            ChildSpec(
                "registry",
                lambda: RegistryActor(
                    policy=config.lease_policy,
                    mailbox_size=config.registry_mailbox_size,
                    events=refs["nats-gateway"],
                    limits=config.limits,
                    cursor_secret=config.cursor_secret,
                    store=store,
                ),
            ),
            ChildSpec(
                "nats-gateway",
                lambda: NatsGateway(
                    refs["registry"],
                    self.nats_url,
                    limits=config.limits,
                    auth=config.nats_auth,
                    presence=presence,
                    presence_wait=config.presence_wait,
                    reply_prefixes=config.reply_prefixes,
                    dead_link_after=config.dead_link_after,
                ),
            ),
        ]
        if streamed:
            specs.append(
                ChildSpec(
                    "leader-elector",
                    lambda: LeaderElector(
                        refs["registry"],
                        self.nats_url,
                        auth=config.store_auth or config.nats_auth,
                        replicas=config.journal.replicas,
                        failover_after=config.failover_after,
                        router_id=self.router_id,
                        dead_link_after=config.dead_link_after,
                    ),
                )
            )
        specs.append(
            ChildSpec(
                "event-feed",
                lambda: EventFeed(
                    self.nats_url,
                    auth=config.nats_auth,
                    limits=config.event_feed,
                    dead_link_after=config.dead_link_after,
                ),
            )
        )
        specs.append(
            ChildSpec(
                "http-gateway",
                lambda: HttpGateway(
                    self._admin_app, config.http_host, self.http_port, limits=config.admin_limits
                ),
            )
        )
        self.http_port = config.http_port
        """The admin port (port 0 is resolved when the router starts)."""
        self.supervisor = Supervisor(
            specs,
            max_restarts=config.max_restarts,
            within_seconds=config.restart_window_seconds,
            refs=refs,
        )
        self.registry = RegistryClient(self.supervisor.ref("registry"))
        """Typed calls to the registry actor, across its restarts."""
        self.nats_gateway = NatsGatewayClient(self.supervisor.ref("nats-gateway"))
        self.event_feed = EventFeedClient(
            self.supervisor.ref("event-feed"), keepalive=config.event_feed.keepalive
        )
        """Subscriptions to the admin event stream, across the feed's restarts."""

    def _admin_app(self) -> web.Application:
        return build_admin_app(
            self.registry,
            HealthProbe(
                nats_connected=self.nats_gateway.connected,
                registry_running=lambda: self.registry.alive,
                registry=self.registry.status,
                lease_policy=self.config.lease_policy,
                limits=self.config.limits,
            ),
            admin_token=self.config.admin_token,
            cache_bytes=self.config.admin_cache_bytes,
            events=self.event_feed,
            metrics=MetricsSources(
                registry=self.registry,
                nats_gateway=self.nats_gateway,
                actors=self.supervisor.refs,
                event_feed=self.event_feed,
                connections=self._admin_connections,
                elector=self.supervisor.refs.get("leader-elector"),
                max_services=self.config.metrics_max_services,
            ),
            forward=self.nats_gateway.forward_admin,
        )

    async def _admin_connections(self) -> ConnectionStats | None:
        stats: ConnectionStats | None = await self.supervisor.ref("http-gateway").ask_or_none(
            GetConnectionStats()
        )
        return stats

    async def start(self) -> None:
        """Start every actor in order; returns once the router serves requests.

        Raises:
            StartupError: the router cannot start as configured (its data directory
                is another router's, a port is taken, NATS cannot be reached ...).
        """
        if self._data_lock is not None:
            self._data_lock.acquire()
        try:
            await self.supervisor.start()
        except BaseException:
            if self._data_lock is not None:
                self._data_lock.release()
            raise
        # A restarted HTTP gateway binds the same port again.
        _, self.http_port = await self.supervisor.ref("http-gateway").ask(GetAddress())
        log.info(
            "router_started",
            nats_url=redact(self.nats_url),
            embedded_nats=self.config.nats_url is None,
            admin_url=f"http://{self.config.http_host}:{self.http_port}/api/v1/admin",
        )

    async def stop(self) -> None:
        """Stop every actor in reverse order."""
        await self.supervisor.stop()
        if self._data_lock is not None:
            self._data_lock.release()
        log.info("router_stopped")


async def run_until_stopped(router: Router, stop: asyncio.Event) -> int:
    """Run a started router until `stop` is set (exit 0) or its supervisor gives up
    (exit 1)."""
    done = router.supervisor.done
    assert done is not None
    stop_wait = asyncio.create_task(stop.wait())
    either: set[asyncio.Future[Any]] = {stop_wait, done}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
    if done.done() and done.exception() is not None:
        error = done.exception()
        assert isinstance(error, RestartIntensityError)
        log.critical("router_failed", reason=str(error))
        return 1
    await router.stop()
    return 0
