"""Routers running in the test's own process, against a real nats-server."""

from __future__ import annotations

from typing import Any

from actors.app import Router, RouterConfig


class InProcessRouters:
    """Starts routers on one nats-server, and stops every one of them at the end."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.started: list[Router] = []

    async def start(self, **config: Any) -> Router:
        """A started router; `config` is `RouterConfig`'s options (by default the
        HTTP gateway listens on a free port)."""
        router = Router(RouterConfig(**{"nats_url": self.nats_url, "http_port": 0, **config}))
        await router.start()
        self.started.append(router)
        return router

    async def stop_all(self) -> None:
        for router in reversed(self.started):
            await router.stop()
