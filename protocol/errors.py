"""Error codes and the one exception type that carries them across boundaries."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any


class Status(IntEnum):
    """Status codes used on NATS replies and HTTP responses alike."""

    OK = 200
    CREATED = 201
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    FORBIDDEN = 403
    NOT_FOUND = 404
    METHOD_NOT_ALLOWED = 405
    CONFLICT = 409
    PAYLOAD_TOO_LARGE = 413
    INTERNAL_ERROR = 500
    SERVICE_UNAVAILABLE = 503
    GATEWAY_TIMEOUT = 504
    INSUFFICIENT_STORAGE = 507


class ErrorCode(StrEnum):
    """Stable, machine-readable error codes. Never renamed once published."""

    INVALID_PAYLOAD = "invalid_payload"
    """The body is not msgpack (or JSON on HTTP), or not a map at the top level."""
    INVALID_FIELD = "invalid_field"
    """A field is missing, has the wrong type or breaks a constraint."""
    METADATA_TOO_LARGE = "metadata_too_large"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    """413: the request is larger than the router decodes at all."""
    REGISTRY_FULL = "registry_full"
    """507: the router holds as many instances as it is configured to."""
    SERVICE_FULL = "service_full"
    """507: the service holds as many instances as one service may."""
    INSTANCE_CONFLICT = "instance_conflict"
    NOT_OWNER = "not_owner"
    """A heartbeat or deregistration from a session that does not own the instance."""
    INSTANCE_NOT_FOUND = "instance_not_found"
    """The router does not know the instance (any more): register again."""
    INSTANCE_REMOVED = "instance_removed"
    """404 on a heartbeat: an operator removed the instance. The SDK does not register
    it again by itself."""
    MAINTENANCE_HELD = "maintenance_held"
    """403: an operator put the instance into maintenance; only an operator ends it."""
    SERVICE_NOT_FOUND = "service_not_found"
    ROUTE_NOT_FOUND = "route_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL_ERROR = "internal_error"
    ROUTER_UNAVAILABLE = "router_unavailable"
    UNAUTHORIZED = "unauthorized"
    """401: the admin API needs `Authorization: Bearer <token>`."""
    ROUTER_TIMEOUT = "router_timeout"


class ProtocolError(Exception):
    """An error meant for the caller: a status, a stable code, a message, details.

    Raised inside the router where a request cannot be served and turned into the
    wire error body by the gateways; raised again by the SDK from a reply.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details if details is not None else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.message!r})"
