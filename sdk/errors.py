"""Exceptions raised by the SDK; all derive from `RegistryError`."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol import ErrorCode, ErrorInfo, Instance, Status

__all__ = [
    "ConflictError",
    "InvalidRequestError",
    "RegistryError",
    "RouterError",
    "RouterTimeoutError",
    "RouterUnavailableError",
    "error_from_reply",
]


class RegistryError(Exception):
    """Base of every SDK error: `.status` (int), `.code` (stable str), `.details`."""

    default_status: int = Status.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = ErrorCode.INTERNAL_ERROR,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = int(status if status is not None else self.default_status)
        self.code = str(code)
        self.details: dict[str, Any] = details or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, message={self.message!r})"


class InvalidRequestError(RegistryError):
    """400 (or 413, too large): the request is invalid; `details["field"]` names the
    offending field."""

    default_status = Status.BAD_REQUEST


class ConflictError(RegistryError):
    """409: the instance id is held by another client; `.existing` is that instance."""

    default_status = Status.CONFLICT

    @property
    def existing(self) -> Instance | None:
        """The live instance that holds the id, as the router reported it."""
        raw = self.details.get("existing")
        if raw is None:
            return None
        try:
            return msgspec.convert(raw, Instance)
        except msgspec.ValidationError:
            return None


class RouterError(RegistryError):
    """500: the router failed unexpectedly."""

    default_status = Status.INTERNAL_ERROR


class RouterUnavailableError(RegistryError):
    """503: no router answered (NATS "no responders"), or it was overloaded, after retries."""

    default_status = Status.SERVICE_UNAVAILABLE


class RouterTimeoutError(RegistryError):
    """504: the router did not reply within the timeout, after retries."""

    default_status = Status.GATEWAY_TIMEOUT


_BY_STATUS: dict[int, type[RegistryError]] = {
    Status.BAD_REQUEST: InvalidRequestError,
    Status.CONFLICT: ConflictError,
    Status.PAYLOAD_TOO_LARGE: InvalidRequestError,
    Status.INTERNAL_ERROR: RouterError,
    Status.SERVICE_UNAVAILABLE: RouterUnavailableError,
    Status.GATEWAY_TIMEOUT: RouterTimeoutError,
}


def error_from_reply(status: int, error: ErrorInfo | None) -> RegistryError:
    """The exception for an error reply from the router."""
    cls = _BY_STATUS.get(status, RegistryError)
    if error is None:
        return cls(f"the router answered status {status} without an error body", status=status)
    return cls(error.message, status=status, code=error.code, details=dict(error.details))
