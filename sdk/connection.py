"""NATS credentials, shared by the SDK and the router: one place that turns them
into nats-py connect options."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client as NatsClient

__all__ = ["GuardedClient", "NatsAuth", "NatsConnectError", "connect", "redact", "servers"]

log = logging.getLogger("ipc_router.nats")

_INBOX_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class GuardedClient(NatsClient):
    """A nats-py client that survives a malformed message.

    In nats-py 2.16 an exception while processing one incoming message (a reply
    subject or header that is not UTF-8, a header block that is a bare status line)
    escapes `_process_msg` and ends the connection's read loop for good: the client
    still looks connected but never reads again. Anyone allowed to publish can send
    such a message, so it is dropped here and counted instead.
    """

    dropped_malformed = 0

    async def _process_msg(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super()._process_msg(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - one bad message must not end the read loop
            self.dropped_malformed += 1
            log.warning("dropped a malformed NATS message: %r", error)

    async def _process_pong(self) -> None:
        # A flush that timed out leaves its cancelled future first in line; when its
        # PONG comes after all, nats-py sets a result on it, which raises in the read
        # loop and costs a reconnect. The PONG is that flush's: it is consumed here.
        pongs = self._pongs
        if pongs and pongs[0].done():
            pongs.pop(0)
            self._pongs_received += 1
            self._pings_outstanding = 0
            return
        await super()._process_pong()


@dataclass(frozen=True)
class NatsAuth:
    """How to authenticate to NATS. Any combination nats-py supports: user and
    password, a token, a `.creds` file (JWT + nkey), and TLS (a CA to verify the
    server, a client certificate and key for mutual TLS). Secrets never appear in
    `repr()` (and so in no log line).

    `inbox_prefix` is where this user's replies arrive (nats-py's `inbox_prefix`): a
    deployment gives each NATS user its own, readable by nobody else (see
    deploy/nats-server.conf), so that no other user can read its replies."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds: str | None = None
    """Path of a NATS `.creds` file."""
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    inbox_prefix: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a TLS client certificate needs its key, and the key its certificate")
        if self.password is not None and self.user is None:
            raise ValueError("a NATS password needs a user")
        if self.inbox_prefix is not None and not _INBOX_PREFIX.fullmatch(self.inbox_prefix):
            raise ValueError(
                f"a NATS inbox prefix is subject tokens without wildcards: {self.inbox_prefix!r}"
            )

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for `nats.aio.client.Client.connect`."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.token is not None:
            options["token"] = self.token
        if self.creds is not None:
            options["user_credentials"] = self.creds
        if self.tls_ca is not None or self.tls_cert is not None:
            context = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert is not None:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            options["tls"] = context
        if self.inbox_prefix is not None:
            options["inbox_prefix"] = self.inbox_prefix
        return options


DEAD_LINK_AFTER = 3.0
"""Seconds without an answer to the connection's pings after which it is replaced."""


class NatsConnectError(ConnectionError):
    """NATS could not be reached in time, or refused the credentials."""


async def connect(
    nc: NatsClient,
    url: str,
    *,
    auth: NatsAuth,
    timeout: float,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    dead_link_after: float = DEAD_LINK_AFTER,
    **options: Any,
) -> None:
    """Connect `nc` to `url`, reconnecting for ever afterwards (and replacing a link
    that answers none of its pings for `dead_link_after` seconds).

    nats-py keeps retrying the first connection too when reconnects are unbounded,
    so this bounds it by `timeout` and gives up at once when the server refuses
    the credentials, naming the last error either way.

    Raises:
        NatsConnectError: not connected within `timeout`, or authorization refused.
    """
    shown = redact(url)
    try:
        auth_options = auth.connect_options()
    except (OSError, ssl.SSLError, ValueError) as error:
        raise NatsConnectError(f"cannot use the NATS credentials for {shown}: {error}") from None
    rejected = asyncio.Event()
    last_error: list[Exception] = []

    async def on_error(error: Exception) -> None:
        last_error[:] = [error]
        if "authorization violation" in str(error).lower():
            rejected.set()
        if error_cb is not None:
            await error_cb(error)

    # nats-py annotates these as int, yet takes (and sleeps and waits for) float
    # seconds: passed through a dict[str, Any] so that the type checker accepts 0.5.
    # A ping a second, three unanswered: a dead link (half-open, no FIN) is noticed and
    # replaced within about three seconds, not nats-py's default of four minutes.
    timing: dict[str, Any] = {
        "reconnect_time_wait": 0.5,
        "connect_timeout": min(2.0, timeout),
        "ping_interval": dead_link_after / 3,
        "max_outstanding_pings": 3,
    }
    connecting = asyncio.ensure_future(
        nc.connect(
            servers=servers(url),
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            error_cb=on_error,
            **timing,
            **auth_options,
            **options,
        )
    )
    refused = asyncio.ensure_future(rejected.wait())
    connected = False
    try:
        done, _ = await asyncio.wait(
            {connecting, refused}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if connecting in done:
            try:
                connecting.result()
            except Exception as error:  # noqa: BLE001 - e.g. a creds file nats-py cannot read
                raise NatsConnectError(f"cannot connect to NATS at {shown}: {error!r}") from None
            connected = True
            return
    finally:
        refused.cancel()
        if not connected:  # timed out, refused, failed, or we were cancelled: leave nothing
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            with contextlib.suppress(Exception):
                await nc.close()
    reason = f" (last error: {last_error[0]!r})" if last_error else ""
    if rejected.is_set():
        raise NatsConnectError(f"NATS at {shown} rejected the credentials{reason}")
    raise NatsConnectError(f"cannot connect to NATS at {shown} within {timeout:g} s{reason}")


def servers(url: str) -> list[str]:
    """The servers of a NATS URL list: `nats://a:4222,nats://b:4222` (as NATS tools take
    them); the client fails over between them."""
    found = [part.strip() for part in url.split(",") if part.strip()]
    if not found:
        raise ValueError(f"no NATS server in {url!r}")
    return found


def redact(url: str) -> str:
    """The URL (or comma-separated URLs) without a password or token, for logs and
    messages."""
    if "," in url:
        return ",".join(redact(part) for part in servers(url))
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
