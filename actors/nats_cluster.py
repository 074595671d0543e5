"""A local NATS cluster with JetStream: nats-server processes on loopback ports,
routed to each other. What `make cluster` runs routers on, and what the tests and the
failover benchmark use for routers that share one replicated registry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
import nats.errors

from actors.embedded_nats import ClusterSpec, NatsServerError, NatsServerProcess, free_port
from sdk.connection import servers

__all__ = ["NatsCluster"]


class NatsCluster:
    """`size` nats-servers in one cluster on 127.0.0.1; each can be stopped and started
    again on the same ports and store. With `store_root`, server N keeps JetStream's
    data in `store_root/<name>-N` (else in its temporary run directory)."""

    def __init__(self, size: int = 3, name: str = "ipc-test", store_root: Path | None = None):
        client_ports = [free_port() for _ in range(size)]
        route_ports = [free_port() for _ in range(size)]
        self.servers = [
            NatsServerProcess(
                port=client_ports[n],
                server_name=f"{name}-{n}",
                store_dir=store_root / f"{name}-{n}" if store_root is not None else None,
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
        """Start every server; return once JetStream answers in the cluster.

        Raises:
            NatsServerError: a server did not start, or JetStream was not ready within
                `timeout` seconds (every server is stopped again then).
        """
        try:
            await asyncio.gather(*(server.start() for server in self.servers))
            await self.wait_for_jetstream(timeout)
        except BaseException:
            await self.stop()
            raise

    async def wait_for_jetstream(self, timeout: float = 30.0) -> None:
        """Until the cluster has elected its JetStream meta leader.

        Raises:
            NatsServerError: not within `timeout` seconds.
        """
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
                    raise NatsServerError(f"JetStream not ready in the cluster within {timeout} s")
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    async def stop(self) -> None:
        """Stop every server (each removes its run directory)."""
        await asyncio.gather(*(server.stop() for server in self.servers))
