"""Wiring: the supervision tree of one router process, and how it runs until stopped."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from actors.embedded_nats import EmbeddedNats
from actors.http_gateway import (
    AdminLimits,
    GetAddress,
    HealthProbe,
    HttpGateway,
    build_admin_app,
)
from actors.nats_gateway import NatsGateway, NatsGatewayClient
from actors.registry import RegistryActor, RegistryClient
from actors.supervisor import ChildSpec, RestartIntensityError, Supervisor
from protocol import LeasePolicy, RegistryLimits
from sdk.connection import NatsAuth, redact

__all__ = ["Router", "RouterConfig", "run_until_stopped"]

log = structlog.get_logger(component="router")


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Everything `ipc-router serve` can be told."""

    nats_url: str | None = None
    """A running NATS server; None starts the bundled one on loopback."""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    embedded_nats_port: int = 4222
    registry_mailbox_size: int = 10_000
    """Requests queued for the registry before new ones are answered 503."""
    max_restarts: int = 3
    restart_window_seconds: float = 5.0
    lease_policy: LeasePolicy = field(default_factory=LeasePolicy)
    limits: RegistryLimits = field(default_factory=RegistryLimits)
    nats_auth: NatsAuth = field(default_factory=NatsAuth)
    admin_token: str | None = field(default=None, repr=False)
    """When set, the admin API (all but /healthz) wants `Authorization: Bearer <token>`."""
    admin_limits: AdminLimits = field(default_factory=AdminLimits)
    admin_cache_bytes: int = 32 * 2**20
    """What the admin API's cache of encoded pages may hold, entries' overhead included."""
    cursor_secret: bytes | None = field(default=None, repr=False)
    """Signs the cursors of query pages; random per registry when None."""


class Router:
    """One router: [embedded nats-server], registry, NATS gateway, HTTP gateway.

    The actors reach each other only through the supervisor's refs."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.embedded_nats_url = f"nats://127.0.0.1:{config.embedded_nats_port}"
        self.nats_url = config.nats_url or self.embedded_nats_url
        specs: list[ChildSpec] = []
        if config.nats_url is None:
            specs.append(
                ChildSpec("embedded-nats", lambda: EmbeddedNats(port=config.embedded_nats_port))
            )
        specs += [
            ChildSpec(
                "registry",
                lambda: RegistryActor(
                    policy=config.lease_policy,
                    mailbox_size=config.registry_mailbox_size,
                    events=self.supervisor.ref("nats-gateway"),
                    limits=config.limits,
                    cursor_secret=config.cursor_secret,
                ),
            ),
            ChildSpec(
                "nats-gateway",
                lambda: NatsGateway(
                    self.supervisor.ref("registry"),
                    self.nats_url,
                    limits=config.limits,
                    auth=config.nats_auth,
                ),
            ),
            ChildSpec(
                "http-gateway",
                lambda: HttpGateway(
                    self._admin_app, config.http_host, self.http_port, limits=config.admin_limits
                ),
            ),
        ]
        self.http_port = config.http_port
        """The admin port (port 0 is resolved when the router starts)."""
        self.supervisor = Supervisor(
            specs,
            max_restarts=config.max_restarts,
            within_seconds=config.restart_window_seconds,
        )
        self.registry = RegistryClient(self.supervisor.ref("registry"))
        """Typed calls to the registry actor, across its restarts."""
        self.nats_gateway = NatsGatewayClient(self.supervisor.ref("nats-gateway"))

    def _admin_app(self) -> web.Application:
        return build_admin_app(
            self.registry,
            HealthProbe(
                nats_connected=self.nats_gateway.connected,
                registry_running=lambda: self.registry.alive,
                lease_policy=self.config.lease_policy,
                limits=self.config.limits,
            ),
            admin_token=self.config.admin_token,
            cache_bytes=self.config.admin_cache_bytes,
        )

    async def start(self) -> None:
        """Start every actor in order; returns once the router serves requests."""
        await self.supervisor.start()
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
