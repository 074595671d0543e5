"""The NATS gateway actor: translates NATS requests into registry messages.

The subscription callback decodes and validates the request and hands it to the
registry with a reply target; the registry's outcome comes back to this actor's
mailbox and is encoded and published here. No await on the registry in the
callback, so requests pipeline instead of queueing behind one another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from actors.actor import Actor, ActorDeadError, MailboxFullError
from actors.errors import StartupError
from actors.registry import Deregister, GetService, Heartbeat, ListServices, Register
from actors.supervisor import ActorRef
from sdk.connection import GuardedClient, NatsAuth, NatsConnectError, connect, redact
from protocol import (
    DEREGISTER_SUBJECT,
    GET_SUBJECT,
    HEARTBEAT_SUBJECT,
    LIST_SUBJECT,
    REGISTER_SUBJECT,
    ROUTER_QUEUE_GROUP,
    ErrorCode,
    GetServiceReply,
    ListServicesReply,
    ProtocolError,
    RegistryEvent,
    RegistryLimits,
    Status,
    decode_get_request,
    decode_lease_request,
    decode_list_request,
    decode_register_request,
    encode_msgpack,
    error_reply,
    events_subject,
)

__all__ = ["NatsGateway"]

log = structlog.get_logger(component="nats_gateway")


class _Flush:
    """Publish everything in the outbox."""


_FLUSH = _Flush()


@dataclass(frozen=True, slots=True)
class _Route:
    """How one request subject becomes a registry message, and its result a reply."""

    subject: str
    action: str
    decode: Callable[[bytes], Any]
    message: Callable[[Any, int], Any]
    """(request, the largest reply NATS will carry) -> registry message."""
    wrap: Callable[[Any], Any] | None = None
    """Turns the registry's result into the reply Struct (None: it already is one)."""


def _routes(limits: RegistryLimits) -> tuple[_Route, ...]:
    def decode_register(data: bytes) -> Any:
        return decode_register_request(data, limits.max_metadata_bytes)

    return (
        _Route(REGISTER_SUBJECT, "registration", decode_register, lambda r, _: Register(r)),
        _Route(HEARTBEAT_SUBJECT, "heartbeat", decode_lease_request, lambda r, _: Heartbeat(r)),
        _Route(
            DEREGISTER_SUBJECT, "deregistration", decode_lease_request, lambda r, _: Deregister(r)
        ),
        _Route(
            LIST_SUBJECT,
            "list",
            decode_list_request,
            lambda r, _: ListServices(r),
            lambda result: ListServicesReply(status=Status.OK, result=result),
        ),
        _Route(
            GET_SUBJECT,
            "get",
            decode_get_request,
            # Room for the reply's own fields around the instances.
            lambda r, max_reply: GetService(r, missing_ok=True, max_bytes=max_reply - 1024),
            lambda result: GetServiceReply(status=Status.OK, result=result),
        ),
    )


class _ReplyVia:
    """Reply target handed to the registry: sends the outcome back to the gateway."""

    __slots__ = ("gateway", "reply_to", "wrap")

    def __init__(
        self, gateway: NatsGateway, reply_to: str, wrap: Callable[[Any], Any] | None
    ) -> None:
        self.gateway = gateway
        self.reply_to = reply_to
        self.wrap = wrap

    def resolve(self, value: Any) -> None:
        self._send(value if self.wrap is None else self.wrap(value))

    def reject(self, error: BaseException) -> None:
        self._send(error)

    def _send(self, outcome: Any) -> None:
        try:
            self.gateway.send_reply(self.reply_to, outcome)
        except ActorDeadError:
            log.warning("reply_dropped", reason="gateway stopped")


def _unavailable(reason: str) -> ProtocolError:
    return ProtocolError(
        Status.SERVICE_UNAVAILABLE,
        ErrorCode.ROUTER_UNAVAILABLE,
        f"The router cannot take this request right now ({reason}); retry shortly.",
    )


class NatsGateway(Actor):
    """Owns the router's NATS connection and the request subscriptions."""

    def __init__(
        self,
        registry: ActorRef,
        nats_url: str,
        *,
        client_name: str = "ipc-router",
        startup_timeout: float = 10.0,
        limits: RegistryLimits | None = None,
        auth: NatsAuth | None = None,
    ) -> None:
        super().__init__("nats-gateway")
        self._routes = _routes(limits or RegistryLimits())
        self._auth = auth or NatsAuth()
        self._startup_timeout = startup_timeout
        self._registry = registry
        self._url = nats_url
        self._client_name = client_name
        self._nc: NatsClient | None = None
        self._stopping = False
        self.dropped_without_reply = 0
        """Requests that arrived without a reply subject (nothing to answer)."""
        self.events_published = 0
        self._max_reply = 1024 * 1024
        """The server's max payload (known once connected)."""
        self._outbox: list[tuple[str | None, Any]] = []
        """Replies (reply subject, outcome) and event batches (None, events) waiting to
        be published, in order. A batched mailbox: one `_FLUSH` message publishes
        whatever has gathered, instead of one message per reply."""

    @property
    def connected(self) -> bool:
        """True while the NATS connection is up."""
        return self._nc is not None and self._nc.is_connected

    async def on_start(self) -> None:
        self._nc = GuardedClient()
        try:
            await connect(
                self._nc,
                self._url,
                auth=self._auth,
                timeout=self._startup_timeout,
                error_cb=self._on_error,
                name=self._client_name,
                # Reply subjects come from the server's protocol parser and event
                # subjects from validated service names: nothing to re-check per publish.
                skip_subject_validation=True,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
            )
        except NatsConnectError as error:
            raise StartupError(f"{error}; check --nats-url and the NATS credentials") from None
        self._max_reply = self._nc.max_payload
        for route in self._routes:
            await self._nc.subscribe(
                route.subject, queue=ROUTER_QUEUE_GROUP, cb=self._callback(route)
            )
        await self._nc.flush()
        log.info("nats_gateway_ready", url=redact(self._url), subjects=[r.subject for r in self._routes])

    async def on_stop(self) -> None:
        self._stopping = True
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.drain(), 2.0)
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def handle(self, message: Any) -> None:
        if message is not _FLUSH:
            raise TypeError(f"nats gateway cannot handle {type(message).__name__}")
        batch, self._outbox = self._outbox, []
        for reply_to, outcome in batch:
            if reply_to is not None:
                await self._publish(reply_to, self._reply_body(outcome))
                continue
            for event in outcome:
                await self._publish(events_subject(event.instance.service_name), encode_msgpack(event))
            self.events_published += len(outcome)

    def send_reply(self, reply_to: str, outcome: Any) -> None:
        """Queue the outcome of a request for publishing (called by the registry)."""
        self._enqueue(reply_to, outcome)

    def publish_events(self, events: list[RegistryEvent]) -> None:
        """Queue change events for publishing, in order (called by the registry)."""
        self._enqueue(None, events)

    def _enqueue(self, reply_to: str | None, outcome: Any) -> None:
        if not self.alive:
            raise ActorDeadError(f"actor {self.name} is not running")
        self._outbox.append((reply_to, outcome))
        if len(self._outbox) == 1:
            self.tell(_FLUSH)

    @staticmethod
    def _reply_body(outcome: Any) -> bytes:
        if isinstance(outcome, msgspec.Struct):
            return encode_msgpack(outcome)
        if isinstance(outcome, ProtocolError):
            return encode_msgpack(error_reply(outcome))
        if isinstance(outcome, ActorDeadError):
            return encode_msgpack(error_reply(_unavailable("the registry is restarting")))
        log.error("request_failed", error=repr(outcome))
        return encode_msgpack(
            error_reply(
                ProtocolError(
                    Status.INTERNAL_ERROR,
                    ErrorCode.INTERNAL_ERROR,
                    "The router failed to handle this request; it has been logged. Retry, "
                    "and report it if it persists.",
                )
            )
        )

    async def _publish(self, reply_to: str, body: bytes) -> None:
        assert self._nc is not None
        try:
            await self._nc.publish(reply_to, body)
        except nats.errors.MaxPayloadError:
            log.error("reply_too_large", size=len(body), max_payload=self._max_reply)
            too_large = ProtocolError(
                Status.INTERNAL_ERROR,
                ErrorCode.INTERNAL_ERROR,
                f"The reply ({len(body)} bytes) exceeds the NATS max payload "
                f"({self._max_reply} bytes); ask for a smaller page (limit).",
            )
            await self._publish(reply_to, encode_msgpack(error_reply(too_large)))
        except Exception as error:  # noqa: BLE001 - one lost reply must not stop the gateway
            log.warning("reply_publish_failed", error=repr(error))

    def _callback(self, route: _Route) -> Callable[[Msg], Awaitable[None]]:
        decode, make_message, wrap = route.decode, route.message, route.wrap

        async def on_request(msg: Msg) -> None:
            reply_to = msg.reply
            if not reply_to:
                self.dropped_without_reply += 1
                log.warning("request_without_reply_subject", subject=msg.subject)
                return
            try:
                message = make_message(decode(msg.data), self._max_reply)
                self._registry.tell(message, _ReplyVia(self, reply_to, wrap))
            except ProtocolError as error:
                log.info(
                    route.action,
                    outcome="invalid",
                    status=int(error.status),
                    code=str(error.code),
                    field=error.details.get("field"),
                )
                await self._publish(reply_to, encode_msgpack(error_reply(error)))
            except MailboxFullError:
                await self._publish(reply_to, encode_msgpack(error_reply(_unavailable("overloaded"))))
            except ActorDeadError:
                await self._publish(
                    reply_to, encode_msgpack(error_reply(_unavailable("the registry is restarting")))
                )
            except Exception as error:  # noqa: BLE001 - every request gets an answer
                await self._publish(reply_to, self._reply_body(error))

        return on_request

    async def _on_error(self, error: Exception) -> None:
        log.warning("nats_error", error=repr(error))

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            log.warning("nats_disconnected", url=redact(self._url))

    async def _on_reconnected(self) -> None:
        log.info("nats_reconnected", url=redact(self._url))

    async def _on_closed(self) -> None:
        if not self._stopping:
            self.crash(ConnectionError("NATS connection closed"))
