"""A local NATS cluster with JetStream: three real nats-server processes on loopback
ports, routed to each other, for the tests (and the failover benchmark) of routers
that share one replicated registry."""

from __future__ import annotations

import asyncio
import json

import nats
import nats.errors

from actors.embedded_nats import ClusterSpec, NatsServerProcess
from sdk.connection import servers
from tests.support.network import free_port


class NatsCluster:
    """`size` nats-servers in one cluster; each can be stopped and started again on
    the same ports and store."""

    def __init__(self, size: int = 3, name: str = "ipc-test") -> None:
        client_ports = [free_port() for _ in range(size)]
        route_ports = [free_port() for _ in range(size)]
        self.servers = [
            NatsServerProcess(
                port=client_ports[n],
                server_name=f"{name}-{n}",
                cluster=ClusterSpec(
                    name=name,
                    port=route_ports[n],
                    routes=tuple(p for i, p in enumerate(route_ports) if i != n),
                ),
            )
            for n in range(size)
        ]

    @property
    def url(self) -> str:
        """Every server, comma-separated: what routers and clients are given."""
        return ",".join(server.url for server in self.servers)

    async def start(self, timeout: float = 30.0) -> None:
        """Start every server; return once JetStream answers in the cluster."""
        await asyncio.gather(*(server.start() for server in self.servers))
        await self.wait_for_jetstream(timeout)

    async def wait_for_jetstream(self, timeout: float = 30.0) -> None:
        """Until the cluster has elected its JetStream meta leader."""
        nc = await nats.connect(servers(self.url))
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                try:
                    reply = await nc.request("$JS.API.INFO", b"", timeout=1)
                    if "error" not in json.loads(reply.data):
                        return
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                    pass
                if loop.time() > deadline:
                    raise AssertionError(f"JetStream not ready in the cluster within {timeout} s")
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers))
