"""Loopback ports for servers the tests start."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from actors.embedded_nats import free_port

__all__ = ["free_port", "occupied_port"]


@contextmanager
def occupied_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that something is listening on while the block runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])
