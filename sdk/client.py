"""`ServiceClient`: what a service embeds to register with the router."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar

import nats.errors
from nats.aio.client import Client as NatsClient

from protocol import (
    REGISTER_SUBJECT,
    ErrorCode,
    ErrorInfo,
    InstanceStatus,
    ProtocolError,
    RegisterRequest,
    Status,
    decode_register_reply,
    decode_register_request,
    encode_msgpack,
)
from sdk.errors import (
    InvalidRequestError,
    RegistryError,
    RouterTimeoutError,
    RouterUnavailableError,
    error_from_reply,
)
from sdk.retry import Backoff

__all__ = ["Registration", "ServiceClient"]


class _Reply(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def error(self) -> ErrorInfo | None: ...


R = TypeVar("R", bound=_Reply)

# Failures after which the same request may well succeed: worth a retry.
_TRANSIENT_NATS_ERRORS = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.FlushTimeoutError,
    ConnectionError,
)


@dataclass(frozen=True, slots=True)
class Registration:
    """A successful registration, as the router recorded it."""

    service_name: str
    instance_id: str
    status: InstanceStatus
    metadata: dict[str, Any]
    registered_at: datetime
    created: bool
    """True when this call created the record (201); False for a repeat (200)."""


class ServiceClient:
    """Registers service instances with the router over NATS.

    Use it as an async context manager::

        async with ServiceClient("nats://127.0.0.1:4222") as client:
            await client.register("orders", "orders-1", {"zone": "a"})

    Each client has its own random session id, sent with every registration, so that
    its retries are idempotent and only it can claim its instances again. Pass `nc`
    to reuse a connected nats-py client (it is then left open on exit).
    """

    def __init__(
        self,
        nats_url: str = "nats://127.0.0.1:4222",
        *,
        nc: NatsClient | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must be zero or more")
        self._nats_url = nats_url
        self._nc = nc
        self._owns_connection = nc is None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout
        self._session_id = secrets.token_urlsafe(24)

    async def __aenter__(self) -> ServiceClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect to NATS (no-op when already connected or given a client).

        Raises:
            RouterUnavailableError: NATS cannot be reached within `connect_timeout`.
        """
        if self._nc is not None:
            return
        nc = NatsClient()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[self._nats_url],
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=_ignore_error,
                ),
                self._connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as error:
            await nc.close()
            raise RouterUnavailableError(
                f"cannot connect to NATS at {self._nats_url}: {error!r}",
                code=ErrorCode.ROUTER_UNAVAILABLE,
            ) from None
        self._nc = nc

    async def close(self) -> None:
        """Close the NATS connection if this client opened it. Idempotent."""
        if self._nc is not None and self._owns_connection:
            nc, self._nc = self._nc, None
            await nc.close()

    async def register(
        self,
        service_name: str,
        instance_id: str,
        metadata: dict[str, Any] | None = None,
    ) -> Registration:
        """Register one instance of `service_name`.

        Raises:
            InvalidRequestError: 400, bad name or metadata (checked before sending too).
            ConflictError: 409, the instance id is held by another client.
            RouterUnavailableError: 503, no router answered after the retries.
            RouterTimeoutError: 504, the router did not reply in time after the retries.
            RouterError: 500, the router failed.
        """
        request = RegisterRequest(
            service_name=service_name,
            instance_id=instance_id,
            metadata=metadata or {},
            timestamp=time.time(),
            session_id=self._session_id,
        )
        payload = encode_msgpack(request)
        try:
            decode_register_request(payload)
        except ProtocolError as error:
            raise InvalidRequestError(error.message, code=error.code, details=error.details) from None
        reply = await self._request(REGISTER_SUBJECT, payload, decode_register_reply)
        if reply.status in (Status.OK, Status.CREATED) and reply.instance is not None:
            instance = reply.instance
            return Registration(
                service_name=instance.service_name,
                instance_id=instance.instance_id,
                status=instance.status,
                metadata=instance.metadata,
                registered_at=instance.registered_at,
                created=reply.status == Status.CREATED,
            )
        raise error_from_reply(reply.status, reply.error)

    async def _request(self, subject: str, payload: bytes, decode: Callable[[bytes], R]) -> R:
        """One request with retries where a retry can help; returns the decoded reply.

        Retried: timeouts, no responders, a lost connection, and a 503 reply (the router
        is overloaded or restarting). Never retried: any other reply."""
        if self._nc is None:
            await self.connect()
        assert self._nc is not None
        last: RegistryError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff.delay(attempt - 1))
            try:
                msg = await self._nc.request(subject, payload, timeout=self.timeout)
            except nats.errors.NoRespondersError:
                last = RouterUnavailableError(
                    f"no router is listening on {subject}; is ipc-router running?",
                    code=ErrorCode.ROUTER_UNAVAILABLE,
                )
                continue
            except nats.errors.TimeoutError:
                last = RouterTimeoutError(
                    f"the router did not reply within {self.timeout} s",
                    code=ErrorCode.ROUTER_TIMEOUT,
                )
                continue
            except _TRANSIENT_NATS_ERRORS as error:
                last = RouterUnavailableError(
                    f"the NATS connection failed: {error!r}", code=ErrorCode.ROUTER_UNAVAILABLE
                )
                continue
            reply = decode(msg.data)
            if reply.status == Status.SERVICE_UNAVAILABLE:
                last = error_from_reply(reply.status, reply.error)
                continue
            return reply
        assert last is not None
        last.details.setdefault("attempts", self.retries + 1)
        raise last


async def _ignore_error(error: Exception) -> None:
    """nats-py reports reconnect attempts here; the request path reports what matters."""
