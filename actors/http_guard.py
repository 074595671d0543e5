"""Connection limits for the admin port, in front of aiohttp.

A slowloris client opens many connections and trickles each request head a byte at
a time: without limits every one of them holds a file descriptor for as long as it
likes, the admin API stops answering, and once the process runs out of descriptors
the NATS connection cannot come back after a blip. `ConnectionGuard` wraps each
connection's protocol and

- closes a connection whose first request head is not complete within
  `head_timeout` seconds (aiohttp's keep-alive timeout covers the idle time between
  later requests), and
- holds at most `max_connections` at once: a new connection beyond that evicts the
  oldest one still waiting for its head (so `/healthz` gets through a flood of
  slow connections); only when none is waiting is the new one refused.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable

import structlog

__all__ = ["ConnectionGuard", "descriptor_budget"]

log = structlog.get_logger(component="http_guard")

_HEAD_END = b"\r\n\r\n"


def descriptor_budget(wanted: int, reserve: int) -> int:
    """How many admin connections fit under the process's descriptor limit while
    `reserve` descriptors stay free for everything else (NATS connections, files).

    Raises the soft limit to the hard limit first, as servers do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - reserve))


class ConnectionGuard:
    """Counts and bounds the connections of one listening socket (see the module)."""

    def __init__(self, *, max_connections: int, head_timeout: float) -> None:
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self._open: set[_GuardedProtocol] = set()
        self._waiting: dict[_GuardedProtocol, None] = {}
        """Connections whose first request head is not complete, oldest first."""
        self.evicted = 0
        """Connections closed to make room for a new one."""
        self.refused = 0
        """New connections closed because every open one was busy."""
        self.timed_out = 0
        """Connections closed because their first request head came too slowly."""

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._open)

    def wrap(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` that guards `make()`'s protocols."""
        return lambda: _GuardedProtocol(self, make())

    # -- called by the guarded protocols ---------------------------------------------

    def admit(self, connection: _GuardedProtocol) -> bool:
        """Count a new connection, evicting the oldest waiting one if full; False when
        it must be refused."""
        if len(self._open) >= self.max_connections:
            if not self._waiting:
                self.refused += 1
                log.warning("admin_connection_refused", open=len(self._open))
                return False
            oldest = next(iter(self._waiting))
            self.evicted += 1
            oldest.close()
        self._open.add(connection)
        self._waiting[connection] = None
        return True

    def head_complete(self, connection: _GuardedProtocol) -> None:
        """The connection sent its first request head: no longer evictable."""
        self._waiting.pop(connection, None)

    def forget(self, connection: _GuardedProtocol) -> None:
        """The connection closed."""
        self._open.discard(connection)
        self._waiting.pop(connection, None)


class _GuardedProtocol(asyncio.Protocol):
    """Passes every event on to aiohttp's protocol, watching for the end of the first
    request head."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._tail = b""
        self._waiting = True
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner.connection_made(transport)
        if not self._guard.admit(self):
            self._waiting = False
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._guard.head_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self._waiting:
            seen = self._tail + data
            if _HEAD_END in seen:
                self._head_done()
            else:
                self._tail = seen[-(len(_HEAD_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._guard.forget(self)
        self._inner.connection_lost(exc)

    def close(self) -> None:
        """Close the connection at once (no response: it never finished a request)."""
        if self._transport is not None:
            self._transport.abort()

    def _head_done(self) -> None:
        self._waiting = False
        self._tail = b""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._guard.head_complete(self)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._waiting:
            self._guard.timed_out += 1
            self.close()
