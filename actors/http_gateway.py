"""The HTTP gateway actor: the admin API (aiohttp), translated into registry asks."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, TypeVar

import msgspec
import structlog
from aiohttp import web

from actors.actor import Actor, ActorDeadError, AskTimeoutError, MailboxFullError, Message
from actors.admin_commands import AdminAction, AdminCommand
from actors.errors import PortInUseError
from actors.event_feed import (
    KEEPALIVE_FRAME,
    EventFeedClient,
    FeedSubscriber,
    TooManyClientsError,
)
from actors.http_guard import ConnectionGuard, descriptor_budget
from actors.metrics import ConnectionStats, MetricsSources, render
from actors.openapi import ADMIN_BASE, EVENTS_PATH, METRICS_PATH, openapi_document
from actors.registry_api import (
    UNCHANGED,
    ForwardAdmin,
    GetService,
    ListServices,
    RegistryClient,
    RegistryStatus,
)
from actors.version import package_version
from protocol import (
    INSTANCE_ID_MAX_LENGTH,
    NAME_PATTERN,
    SERVICE_NAME_MAX_LENGTH,
    ErrorCode,
    GetServiceRequest,
    Health,
    InstanceReply,
    InstanceStatus,
    LeasePolicy,
    ListServicesRequest,
    MaintenanceReason,
    ProtocolError,
    RegistryLimits,
    Status,
    encode_json,
    encode_msgpack,
    error_reply,
    top_field,
    validation_path,
)

__all__ = [
    "CONSOLE_FILES",
    "CONTENT_SECURITY_POLICY",
    "RUNNER_OPTIONS",
    "AdminLimits",
    "GetAddress",
    "GetConnectionStats",
    "HealthProbe",
    "HttpGateway",
    "build_admin_app",
]

log = structlog.get_logger(component="http_gateway")

T = TypeVar("T")
_SERVICE_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class AdminLimits:
    """How the admin port defends itself (see `actors/http_guard.py`)."""

    max_connections: int = 512
    """Connections at once (fewer if the descriptor limit leaves less room)."""
    head_timeout: float = 10.0
    """Seconds a new connection has to send its first request head."""
    idle_timeout: float = 15.0
    """Seconds a keep-alive connection may sit idle between requests."""
    descriptor_reserve: int = 64
    """Descriptors kept free for NATS connections and files, whatever the admin load."""


@dataclass(frozen=True, slots=True)
class HealthProbe:
    """What `/healthz` looks at and reports."""

    nats_connected: Callable[[], Awaitable[bool]]
    registry_running: Callable[[], bool]
    lease_policy: LeasePolicy
    limits: RegistryLimits | None = None
    registry: Callable[[], Awaitable[RegistryStatus | None]] | None = None
    """The registry's status (role, readiness, revision), when there is one to ask."""


REGISTRY = web.AppKey("registry", RegistryClient)
ADMIN_TOKEN = web.AppKey("admin_token", bytes)
HEALTH = web.AppKey("health", HealthProbe)
OPENAPI = web.AppKey("openapi", bytes)
EVENTS = web.AppKey("events", EventFeedClient)
STREAMS = web.AppKey("streams", set[FeedSubscriber])
"""The event streams this app serves now (their `FeedSubscriber`s), ended at shutdown."""
METRICS = web.AppKey("metrics", MetricsSources)
CONSOLE = web.AppKey("console", dict)
"""Path -> (body, content type) of the console's static files."""
Forwarder = Callable[[bytes], Awaitable[InstanceReply]]
FORWARD: web.AppKey[Forwarder] = web.AppKey("forward")
"""Sends a sealed operator write to the leader (a router that does not lead has one)."""
OPERATOR = "admin"
"""Who an operator's write is logged and recorded as (the admin token has no name)."""


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=encode_json(body), status=status, content_type="application/json")


def _error_response(error: ProtocolError) -> web.Response:
    return _json_response(error_reply(error), status=int(error.status))


_HTTP_CODES = {
    404: (
        ErrorCode.ROUTE_NOT_FOUND,
        (
            "No such endpoint: {path}. The admin API lives under "
            f"{ADMIN_BASE}; see {ADMIN_BASE}/openapi.json."
        ),
    ),
    405: (
        ErrorCode.METHOD_NOT_ALLOWED,
        (
            "Method {method} is not allowed on {path} (see the Allow header, and "
            f"{ADMIN_BASE}/openapi.json)."
        ),
    ),
}


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every error into `{"status", "error": {"code", "message", "details"}}`."""
    try:
        return await handler(request)
    except ProtocolError as error:
        return _error_response(error)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        code, template = _HTTP_CODES.get(
            http_error.status, (ErrorCode.INVALID_PAYLOAD, "{reason}")
        )
        message = template.format(path=request.path, method=request.method, reason=http_error.reason)
        details: dict[str, Any] = {"path": request.path}
        allowed = sorted(getattr(http_error, "allowed_methods", ()))
        if allowed:
            details["allowed"] = allowed
        response = _error_response(ProtocolError(http_error.status, code, message, details))
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        return response
    except (ActorDeadError, MailboxFullError, AskTimeoutError) as error:
        log.warning("admin_registry_unavailable", path=request.path, error=repr(error))
        return _error_response(
            ProtocolError(
                Status.SERVICE_UNAVAILABLE,
                ErrorCode.ROUTER_UNAVAILABLE,
                "The registry is busy or restarting; retry shortly.",
            )
        )
    except Exception:
        log.exception("admin_request_failed", path=request.path)
        return _error_response(
            ProtocolError(
                Status.INTERNAL_ERROR,
                ErrorCode.INTERNAL_ERROR,
                "The router failed to handle this request; it has been logged.",
            )
        )


_QUERY_KEYS = {"status", "limit", "cursor"}
_BOOLEANS = {"true": True, "false": False}
_STATUS_VALUES = ", ".join(s.value for s in InstanceStatus)


def _whole_number(key: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise ProtocolError(
            Status.BAD_REQUEST,
            ErrorCode.INVALID_FIELD,
            f"Query parameter {key}={value[:64]!r} is not a whole number from 1 to 1000.",
            {"field": f"query.{key}"},
        )
    return int(value)


def _status(value: str) -> InstanceStatus | None:
    """`?status=` in any letter case; `any` means every status."""
    if value.lower() == "any":
        return None
    try:
        return InstanceStatus(value.upper())
    except ValueError:
        raise ProtocolError(
            Status.BAD_REQUEST,
            ErrorCode.INVALID_FIELD,
            f"Query parameter status={value[:64]!r} is not one of {_STATUS_VALUES} or any.",
            {"field": "query.status"},
        ) from None


def _query(request: web.Request, target: type[T], **fixed: Any) -> T:
    """Build a query Struct from URL parameters (`status`, `limit`, `cursor`,
    `meta.<key>`), validated like the same request over NATS."""
    fields: dict[str, Any] = dict(fixed)
    metadata: dict[str, str] = {}
    for key in request.query:
        if len(request.query.getall(key)) > 1:
            raise ProtocolError(
                Status.BAD_REQUEST,
                ErrorCode.INVALID_FIELD,
                f"Query parameter {key[:64]!r} is given more than once; give it once.",
                {"field": f"query.{key[:64]}"},
            )
    for key, value in request.query.items():
        if key.startswith("meta.") and len(key) > 5:
            metadata[key[5:]] = value
        elif key == "status":
            fields["status"] = _status(value)
        elif key == "limit":
            fields["limit"] = _whole_number(key, value)
        elif key in _QUERY_KEYS:
            fields[key] = value
        elif key == "include_maintenance" and target is GetServiceRequest:
            if value.lower() not in _BOOLEANS:
                raise ProtocolError(
                    Status.BAD_REQUEST,
                    ErrorCode.INVALID_FIELD,
                    f"Query parameter include_maintenance={value[:64]!r} is not true or false.",
                    {"field": "query.include_maintenance"},
                )
            fields[key] = _BOOLEANS[value.lower()]
        else:
            extra = ", include_maintenance" if target is GetServiceRequest else ""
            raise ProtocolError(
                Status.BAD_REQUEST,
                ErrorCode.INVALID_FIELD,
                f"Unknown query parameter {key[:64]!r}; use status, limit, cursor{extra} or "
                "meta.<key>.",
                {"field": f"query.{key[:64]}"},
            )
    if metadata:
        if target is not GetServiceRequest:
            raise ProtocolError(
                Status.BAD_REQUEST,
                ErrorCode.INVALID_FIELD,
                "meta.<key> filters apply to one service's instances only.",
                {"field": "query.meta"},
            )
        fields["metadata"] = metadata
    try:
        return msgspec.convert(fields, target)
    except msgspec.ValidationError as error:
        reason = str(error)
        field = top_field(validation_path(error)) or "query"
        raise ProtocolError(
            Status.BAD_REQUEST,
            ErrorCode.INVALID_FIELD,
            f"Invalid query parameter {field}: {reason}.",
            {"field": f"query.{field}"},
        ) from None


def _as_query_error(error: ProtocolError) -> ProtocolError:
    """A 400 about request field `$.x` is, over HTTP, about query parameter `x`."""
    field = error.details.get("field")
    if error.status == Status.BAD_REQUEST and isinstance(field, str) and field.startswith("$."):
        details = {**error.details, "field": "query." + field[2:]}
        return ProtocolError(error.status, error.code, error.message.replace(field, details["field"]), details)
    return error


_ENTRY_OVERHEAD = 512
"""Bytes an entry of the response cache costs beyond its key and body (the dict slot,
the tuples, the stamp and the object headers), rounded up."""


class _ResponseCache:
    """Encoded admin responses, reused while the registry says nothing they show has
    changed (asking costs a mailbox hop; building and encoding a page costs far more).

    Keyed by the parsed query, so spellings of one request share an entry, and bounded
    by what entries really cost (key, body and overhead): at most `max_bytes` in all,
    no single body over `max_body`."""

    def __init__(self, max_bytes: int = 32 * 2**20, max_body: int = 2**20) -> None:
        self._max_bytes = max_bytes
        self._max_body = max_body
        self.bytes = 0
        """What the entries cost now."""
        self._entries: OrderedDict[bytes, tuple[Any, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def read(self, request: web.Request, query: ListServices | GetService) -> web.Response:
        key = cache_key(query)
        cached = self._entries.get(key)
        try:
            known = msgspec.structs.replace(query, known=cached[0] if cached else ())
            answer = await request.app[REGISTRY].read_if_changed(known)
        except ProtocolError as error:
            raise _as_query_error(error) from None
        if answer is UNCHANGED:
            assert cached is not None
            if key in self._entries:  # (another request may have evicted it meanwhile)
                self._entries.move_to_end(key)
            return web.Response(body=cached[1], content_type="application/json")
        body = encode_json(answer.result)
        self._store(key, answer.stamp, body)
        return web.Response(body=body, content_type="application/json")

    def _store(self, key: bytes, stamp: Any, body: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= _cost(key, old[1])
        if len(body) > self._max_body:
            return
        self._entries[key] = (stamp, body)
        self.bytes += _cost(key, body)
        while self.bytes > self._max_bytes:
            evicted_key, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= _cost(evicted_key, evicted)


def _cost(key: bytes, body: bytes) -> int:
    return len(key) + len(body) + _ENTRY_OVERHEAD


def cache_key(query: ListServices | GetService) -> bytes:
    """The response cache's key for a query: its parsed fields, encoded. (Cursors are
    signed by the registry, so a forged one is refused there and never cached.)"""
    request = query.request
    if isinstance(request, GetServiceRequest):
        return encode_msgpack(
            (
                "get",
                request.service_name,
                request.status,
                request.limit,
                request.cursor,
                sorted(request.metadata.items()),
                request.include_maintenance,
            )
        )
    return encode_msgpack(("list", request.status, request.limit, request.cursor))


CACHE = web.AppKey("cache", _ResponseCache)


async def _list_services(request: web.Request) -> web.Response:
    query = _query(request, ListServicesRequest)
    return await request.app[CACHE].read(request, ListServices(query))


def _is_service_name(name: str) -> bool:
    """`name` is a name a service could have registered under."""
    return len(name) <= SERVICE_NAME_MAX_LENGTH and _SERVICE_NAME.match(name) is not None


async def _get_service(request: web.Request) -> web.Response:
    name = request.match_info["service_name"]
    if not _is_service_name(name):
        # Not a name anything could have registered under: the same 404 as unknown.
        raise ProtocolError(
            Status.NOT_FOUND,
            ErrorCode.SERVICE_NOT_FOUND,
            f"No service named {name[:80]!r} is registered (service names are 1-64 "
            "characters from A-Z, a-z, 0-9, '_' and '-').",
            {"service_name": name[:80]},
        )
    query = _query(request, GetServiceRequest, service_name=name, status=None)
    return await request.app[CACHE].read(request, GetService(query))


# -- operator writes ----------------------------------------------------------------


class MaintenanceBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of `PUT .../maintenance` (optional)."""

    reason: MaintenanceReason = ""


_maintenance_body_decoder = msgspec.json.Decoder(MaintenanceBody)
_MAX_WRITE_BODY = 4096


async def _enter_maintenance(request: web.Request) -> web.Response:
    body = await _write_body(request)
    return await _operator_write(request, AdminAction.MAINTENANCE_ON, body.reason)


async def _leave_maintenance(request: web.Request) -> web.Response:
    return await _operator_write(request, AdminAction.MAINTENANCE_OFF)


async def _remove_instance(request: web.Request) -> web.Response:
    return await _operator_write(request, AdminAction.DEREGISTER)


async def _write_body(request: web.Request) -> MaintenanceBody:
    """The JSON body of an operator write: `{}` when there is none; anything but
    `application/json` is refused (a form posted from another site cannot be one)."""
    data = await request.content.read(_MAX_WRITE_BODY + 1)
    if len(data) > _MAX_WRITE_BODY:
        raise ProtocolError(
            Status.PAYLOAD_TOO_LARGE,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The body is larger than {_MAX_WRITE_BODY} bytes.",
            {"field": "body", "limit": _MAX_WRITE_BODY},
        )
    if not data.strip():
        return MaintenanceBody()
    if request.content_type != "application/json":
        raise ProtocolError(
            Status.BAD_REQUEST,
            ErrorCode.INVALID_PAYLOAD,
            "The body must be JSON, sent as Content-Type: application/json.",
            {"field": "body"},
        )
    try:
        return _maintenance_body_decoder.decode(data)
    except msgspec.ValidationError as error:
        path = validation_path(error)
        raise ProtocolError(
            Status.BAD_REQUEST,
            ErrorCode.INVALID_FIELD,
            f"Invalid field {path}: {error}.",
            {"field": path},
        ) from None
    except msgspec.DecodeError as error:
        raise ProtocolError(
            Status.BAD_REQUEST, ErrorCode.INVALID_PAYLOAD, f"The body is not JSON: {error}.",
            {"field": "body"},
        ) from None  # fmt: skip


async def _operator_write(request: web.Request, action: AdminAction, reason: str = "") -> web.Response:
    """Apply an operator's write (here if this router leads, else at the leader, through
    NATS) and answer the instance as it is after it; log who did it either way."""
    service, instance = request.match_info["service_name"], request.match_info["instance_id"]
    if not (_is_service_name(service) and _is_instance_id(instance)):
        raise ProtocolError(
            Status.NOT_FOUND,
            ErrorCode.INSTANCE_NOT_FOUND,
            "No such instance: service names are 1-64 and instance ids 1-128 characters "
            "from A-Z, a-z, 0-9, '_' and '-'.",
            {"service_name": service[:80], "instance_id": instance[:80]},
        )
    command = AdminCommand(
        action=action, service_name=service, instance_id=instance, reason=reason, by=OPERATOR
    )
    where = "here"
    try:
        answer = await request.app[REGISTRY].admin_write(command)
        if isinstance(answer, ForwardAdmin):
            where = "leader"
            forward = request.app.get(FORWARD)
            if forward is None:
                raise ProtocolError(
                    Status.SERVICE_UNAVAILABLE, ErrorCode.ROUTER_UNAVAILABLE,
                    "This router does not lead and cannot reach the leader; retry shortly.",
                )  # fmt: skip
            answer = await forward(answer.sealed)
    except ProtocolError as error:
        _log_write(request, command, int(error.status), where, error.message)
        raise
    except (ActorDeadError, MailboxFullError, AskTimeoutError) as error:
        _log_write(request, command, 503, where, repr(error))
        raise
    _log_write(request, command, answer.status, where, None)
    return _json_response(answer, status=answer.status)


def _log_write(
    request: web.Request, command: AdminCommand, status: int, where: str, error: str | None
) -> None:
    log.info("operator_write", action=str(command.action), service_name=command.service_name,
             instance_id=command.instance_id, reason=command.reason or None, by=command.by,
             remote=request.remote, applied=where, status=status, error=error)  # fmt: skip


def _is_instance_id(name: str) -> bool:
    return len(name) <= INSTANCE_ID_MAX_LENGTH and _SERVICE_NAME.match(name) is not None


async def _healthz(request: web.Request) -> web.Response:
    probe = request.app[HEALTH]
    nats_ok, registry_ok = await probe.nats_connected(), probe.registry_running()
    status = await probe.registry() if probe.registry is not None and registry_ok else None
    if status is not None:
        registry_ok = status.ready
    healthy = nats_ok and registry_ok and (status is None or status.not_serving_reads is None)
    body = Health(
        status="ok" if healthy else "unavailable",
        nats_connected=nats_ok,
        registry_running=registry_ok,
        role=status.role if status is not None else None,
        revision=status.revision if status is not None else None,
        phase=status.phase if status is not None else None,
        phase_reason=status.phase_reason if status is not None else None,
        not_serving_queries=status.not_serving_reads if status is not None else None,
        skipped_records=list(status.skipped_recent) if status and status.skipped_recent else None,
        lease_policy=probe.lease_policy,
        limits=probe.limits,
    )
    return _json_response(body, status=200 if healthy else 503)


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


@web.middleware
async def _bearer_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every endpoint but /healthz and the console's static files (which hold no data:
    the console asks for the token and sends it with its own requests) wants
    `Authorization: Bearer <token>` (compared in constant time) when the app has a token."""
    token = request.app.get(ADMIN_TOKEN)
    if (
        token is not None
        and request.path != "/healthz"
        and request.path not in request.app.get(CONSOLE, {})
    ):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
        # Digests of equal length: the comparison time tells nothing, not even the length.
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, token):
            log.warning("admin_unauthorized", path=request.path, remote=request.remote)
            response = _error_response(
                ProtocolError(
                    Status.UNAUTHORIZED,
                    ErrorCode.UNAUTHORIZED,
                    "The admin API needs the header 'Authorization: Bearer <token>' with the "
                    "router's admin token (--admin-token / IPC_ROUTER_ADMIN_TOKEN).",
                )
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="ipc-router"'
            return response
    return await handler(request)


# -- GET /metrics -------------------------------------------------------------------------


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = await render(request.app[METRICS], request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


# -- GET /api/v1/admin/events (Server-Sent Events) -----------------------------------------

_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
    "X-Content-Type-Options": "nosniff",
}
_SSE_RETRY = b"retry: 2000\n\n"
"""First bytes of every stream: EventSource clients reconnect after 2 s."""
_WRITE_TIMEOUT = 30.0
"""Seconds one write to a stream may take before the client counts as gone."""


def _events_query(request: web.Request) -> str | None:
    """`?service=NAME` (optional), validated like a service name; nothing else."""
    for key in request.query:
        if key != "service":
            raise ProtocolError(
                Status.BAD_REQUEST,
                ErrorCode.INVALID_FIELD,
                f"Unknown query parameter {key[:64]!r}; the event stream takes service only.",
                {"field": f"query.{key[:64]}"},
            )
    values = request.query.getall("service", [])
    if not values:
        return None
    name = values[0]
    if len(values) > 1 or not _is_service_name(name):
        raise ProtocolError(
            Status.BAD_REQUEST,
            ErrorCode.INVALID_FIELD,
            "Query parameter service must be given once, as a service name (1-64 characters "
            "from A-Z, a-z, 0-9, '_' and '-').",
            {"field": "query.service"},
        )
    return name


async def _events(request: web.Request) -> web.StreamResponse:
    """The registry's change events as Server-Sent Events (see actors/event_feed.py)."""
    service = _events_query(request)
    if request.method == "HEAD":
        return web.Response(headers=_SSE_HEADERS)
    feed = request.app[EVENTS]
    try:
        subscription = await feed.subscribe(service, request.headers.get("Last-Event-ID"))
    except TooManyClientsError as error:
        refused = _error_response(
            ProtocolError(
                Status.SERVICE_UNAVAILABLE,
                ErrorCode.ROUTER_UNAVAILABLE,
                f"This router serves its maximum of {error.limit} event streams; retry later "
                "or use another router.",
                {"limit": error.limit},
            )
        )
        refused.headers["Retry-After"] = "10"
        return refused
    subscriber = subscription.subscriber
    streams = request.app[STREAMS]
    streams.add(subscriber)
    response = web.StreamResponse(headers=_SSE_HEADERS)
    loop = asyncio.get_running_loop()
    try:
        await response.prepare(request)
        await response.write(_SSE_RETRY)
        written = loop.time()
        # Wake up at least every second to notice a client that left (aiohttp does not
        # cancel the handler) without waiting for the next write to fail.
        while (frames := await subscriber.take(min(feed.keepalive, 1.0))) is not None:
            transport = request.transport
            if transport is None or transport.is_closing():
                break
            if not frames and loop.time() - written < feed.keepalive:
                continue
            async with asyncio.timeout(_WRITE_TIMEOUT):
                await response.write(b"".join(frames) if frames else KEEPALIVE_FRAME)
            written = loop.time()
        log.info("event_stream_closed", reason=subscriber.closed or "the client left")
    except (ConnectionError, TimeoutError):
        pass  # the client left (or stopped reading)
    except Exception:  # the response has begun: end it, never answer twice
        log.exception("event_stream_failed")
    finally:
        streams.discard(subscriber)
        feed.unsubscribe(subscriber)
    return response


async def _end_streams(app: web.Application) -> None:
    """At shutdown: end every event stream, so that the server need not wait for them."""
    streams = app[STREAMS]
    for subscriber in list(streams):
        subscriber.close("the router is shutting down")


# -- the console (GET /) -------------------------------------------------------------------

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
CONSOLE_FILES = {
    "/": ("index.html", "text/html"),
    "/console/console.css": ("console.css", "text/css"),
    "/console/console.js": ("console.js", "text/javascript"),
    "/console/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
"""URL path -> (file in actors/console/, content type)."""
_CONSOLE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _console_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("actors") / "console"
    return {
        path: ((folder / name).read_bytes(), content_type)
        for path, (name, content_type) in CONSOLE_FILES.items()
    }


async def _console(request: web.Request) -> web.Response:
    body, content_type = request.app[CONSOLE][request.path]
    return web.Response(
        body=body, content_type=content_type, charset="utf-8", headers=_CONSOLE_HEADERS
    )


def build_admin_app(
    registry: RegistryClient,
    health: HealthProbe,
    admin_token: str | None = None,
    *,
    cache_bytes: int = 32 * 2**20,
    events: EventFeedClient | None = None,
    metrics: MetricsSources | None = None,
    forward: Callable[[bytes], Awaitable[InstanceReply]] | None = None,
) -> web.Application:
    """The admin application: routes, error and token middlewares, OpenAPI document.

    With `events`, it also serves the event stream and the console (`GET /`, which
    lives on it); with `metrics`, `GET /metrics`. The OpenAPI document lists what the
    app serves."""
    app = web.Application(middlewares=[_errors_as_json, _bearer_token])
    if admin_token:
        app[ADMIN_TOKEN] = hashlib.sha256(admin_token.encode()).digest()
    app[REGISTRY] = registry
    app[CACHE] = _ResponseCache(max_bytes=cache_bytes)
    app[HEALTH] = health
    version = package_version("0.0.0")
    app[OPENAPI] = encode_json(
        openapi_document(
            version,
            token_required=bool(admin_token),
            events=events is not None,
            metrics=metrics is not None,
        )
    )
    app.router.add_get(f"{ADMIN_BASE}/services", _list_services)
    app.router.add_get(f"{ADMIN_BASE}/services/{{service_name}}", _get_service)
    instance_path = f"{ADMIN_BASE}/services/{{service_name}}/instances/{{instance_id}}"
    app.router.add_delete(instance_path, _remove_instance)
    app.router.add_put(f"{instance_path}/maintenance", _enter_maintenance)
    app.router.add_delete(f"{instance_path}/maintenance", _leave_maintenance)
    if forward is not None:
        app[FORWARD] = forward
    app.router.add_get(f"{ADMIN_BASE}/openapi.json", _openapi)
    app.router.add_get("/healthz", _healthz)
    if metrics is not None:
        app[METRICS] = metrics if metrics.version else replace(metrics, version=version)
        app.router.add_get(METRICS_PATH, _metrics)
    if events is not None:
        app[EVENTS] = events
        app[STREAMS] = set()
        app.on_shutdown.append(_end_streams)
        app.router.add_get(EVENTS_PATH, _events)
        app[CONSOLE] = _console_files()
        for path in CONSOLE_FILES:
            app.router.add_get(path, _console)
    return app


RUNNER_OPTIONS: dict[str, Any] = {
    "access_log": None,
    "handle_signals": False,
    # Long enough for any name, cursor or filter we could accept, so that such
    # requests reach our handlers (and their JSON errors) instead of aiohttp's
    # plain-text 400 for over-long lines.
    "max_line_size": 65536,
    "max_field_size": 65536,
}
"""How the admin app is served (tests serve it the same way)."""


class GetAddress(Message, frozen=True):
    """-> (host, port) the admin API is bound to (port 0 resolved)."""


class GetConnectionStats(Message, frozen=True):
    """-> `ConnectionStats` of the admin port (None before it listens)."""


class HttpGateway(Actor):
    """Serves the admin app on `host:port` for as long as the actor runs, behind a
    `ConnectionGuard`. Takes `GetAddress` and `GetConnectionStats`."""

    def __init__(
        self,
        app_factory: Callable[[], web.Application],
        host: str,
        port: int,
        *,
        limits: AdminLimits | None = None,
    ) -> None:
        super().__init__("http-gateway")
        self._app_factory = app_factory
        self._host = host
        self._port = port
        self._limits = limits or AdminLimits()
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.guard: ConnectionGuard | None = None

    async def on_start(self) -> None:
        limits = self._limits
        self._runner = web.AppRunner(
            self._app_factory(), keepalive_timeout=limits.idle_timeout, **RUNNER_OPTIONS
        )
        await self._runner.setup()
        self.guard = ConnectionGuard(
            max_connections=descriptor_budget(limits.max_connections, limits.descriptor_reserve),
            head_timeout=limits.head_timeout,
        )
        loop = asyncio.get_running_loop()
        protocols = self._runner.server
        assert protocols is not None  # set up above
        try:
            self._server = await loop.create_server(
                self.guard.wrap(protocols), self._host, self._port, reuse_address=True
            )
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUseError("HTTP", self._host, self._port) from None
            raise
        if self._port == 0:
            self._port = self._server.sockets[0].getsockname()[1]
        log.info(
            "http_gateway_ready",
            url=f"http://{self._host}:{self._port}{ADMIN_BASE}",
            max_connections=self.guard.max_connections,
        )

    async def on_stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()

    async def handle(self, message: Any) -> Any:
        match message:
            case GetAddress():
                return (self._host, self._port)
            case GetConnectionStats():
                guard = self.guard
                if guard is None:
                    return None
                return ConnectionStats(
                    open=guard.open,
                    max_connections=guard.max_connections,
                    evicted=guard.evicted,
                    refused=guard.refused,
                    timed_out=guard.timed_out,
                )
            case _:
                raise TypeError(f"http gateway cannot handle {type(message).__name__}")
