"""How an actor connects to NATS when it starts."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NatsClient

from actors.errors import StartupError
from sdk.connection import NatsAuth, NatsConnectError, connect

__all__ = ["connect_at_start"]


async def connect_at_start(
    nc: NatsClient, url: str, *, auth: NatsAuth, timeout: float, **options: Any
) -> None:
    """`sdk.connection.connect`, for an actor's `on_start`: a connection that fails is
    a `StartupError` saying what to check (the router then exits with one line)."""
    try:
        await connect(nc, url, auth=auth, timeout=timeout, **options)
    except NatsConnectError as error:
        raise StartupError(f"{error}; check --nats-url and the NATS credentials") from None
