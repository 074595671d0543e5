"""How an actor connects to NATS when it starts."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NatsClient

from actors.errors import StartupError
from sdk.connection import NatsAuth, NatsConnectError, connect

__all__ = ["connect_at_start", "refusal"]


async def connect_at_start(
    nc: NatsClient, url: str, *, auth: NatsAuth, timeout: float, **options: Any
) -> None:
    """`sdk.connection.connect`, for an actor's `on_start`: a connection that fails is
    a `StartupError` saying what to check (the router then exits with one line)."""
    try:
        await connect(nc, url, auth=auth, timeout=timeout, **options)
    except NatsConnectError as error:
        raise StartupError(f"{error}; check --nats-url and the NATS credentials") from None


def refusal(error: Exception, subject: str) -> str | None:
    """The server's words when `error` (from a connection's error callback) is a
    permissions violation about `subject` (or a subject starting with it); else None."""
    text = str(error)
    lowered = text.lower()
    return text if "permissions violation" in lowered and subject.lower() in lowered else None
