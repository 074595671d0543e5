"""The types of `ipc-router`'s option values: each turns the text given into a
value or fails with what it accepts ("must be a port number from 0 to 65535 (got x)"),
and says what it accepts when the value is missing.

Standard library only (and `protocol`'s constants)."""

from __future__ import annotations

import argparse
import ipaddress
import math
import re
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

from protocol import (
    INSTANCE_ID_MAX_LENGTH,
    MAINTENANCE_REASON_MAX_LENGTH,
    NAME_PATTERN,
    SERVICE_NAME_MAX_LENGTH,
)

__all__ = [
    "MAX_SECONDS",
    "HostName",
    "HttpUrl",
    "InboxPrefix",
    "InboxPrefixList",
    "InstanceId",
    "NatsUrl",
    "Reason",
    "Seconds",
    "ServiceName",
    "StreamName",
    "Token",
    "ValueType",
    "WholeNumber",
]

MAX_SECONDS = 86_400.0
"""The longest duration any option takes: a day."""


class ValueType:
    """An option's type: turns the text given into a value, and says what it
    accepts (`accepted`, such as "a port number from 0 to 65535"), both in the error
    for a bad value and for a missing one."""

    accepted = "a value"

    def __call__(self, text: str) -> Any:
        raise NotImplementedError

    def reject(self, text: str) -> NoReturn:
        """Fail for `text`, in the words every option uses."""
        raise argparse.ArgumentTypeError(f"must be {self.accepted} (got {_shown(text)})")


def _shown(text: str) -> str:
    """A value as the error repeats it: quoted when quotes help to see it."""
    return text if text and re.fullmatch(r"[\w.:/+-]+", text) else repr(text)


class WholeNumber(ValueType):
    """A whole number from `minimum` to `maximum` (or more, when `maximum` is None)."""

    def __init__(self, minimum: int, maximum: int | None = None, what: str = "a whole number"):
        self.minimum = minimum
        self.maximum = maximum
        if maximum is None:
            self.accepted = f"{what} of at least {minimum}"
        else:
            self.accepted = f"{what} from {minimum} to {maximum}"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            self.reject(text)
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            self.reject(text)
        return value


class Seconds(ValueType):
    """A duration in seconds, more than 0 (or at least `minimum`) and at most `maximum`."""

    def __init__(self, maximum: float = MAX_SECONDS, minimum: float = 0.0) -> None:
        self.maximum = maximum
        self.minimum = minimum
        least = f"at least {minimum:g}" if minimum else "more than 0"
        self.accepted = f"{least} and at most {maximum:g} seconds"

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            self.reject(text)
        if math.isnan(value) or not 0 < value <= self.maximum or value < self.minimum:
            self.reject(text)
        return value


NATS_SCHEMES = ("nats", "tls", "ws", "wss")


class NatsUrl(ValueType):
    """One NATS server URL or several, comma-separated (a cluster): each
    `scheme://host[:port]` with a NATS scheme, all websocket or none (as nats-py
    requires). Checked here, so that a typo is an error at once rather than a
    connection retried until it times out."""

    accepted = (
        "a NATS URL, nats://host:port (or tls://, ws://, wss://), several comma-separated "
        "for a cluster"
    )

    def __call__(self, text: str) -> str:
        if not text:
            return text  # none: the default applies
        parts = [part.strip() for part in text.split(",")]
        if not all(_is_server_url(part, NATS_SCHEMES) for part in parts):
            self.reject(text)
        websocket = {urlsplit(part).scheme in ("ws", "wss") for part in parts}
        if len(websocket) > 1:
            raise argparse.ArgumentTypeError(
                f"must be all websocket (ws, wss) or all NATS (nats, tls) URLs (got {text!r})"
            )
        return text


class HttpUrl(ValueType):
    """An admin API base URL: http(s)://host[:port][/path] (a path: behind a proxy)."""

    accepted = "an http:// or https:// URL such as http://127.0.0.1:8080"

    def __call__(self, text: str) -> str:
        if not _is_server_url(text, ("http", "https"), path_allowed=True):
            self.reject(text)
        return text


def _is_server_url(text: str, schemes: Sequence[str], path_allowed: bool = False) -> bool:
    """Whether `text` is `scheme://[user[:password]@]host[:port][/]` (any path, with
    `path_allowed`) with one of `schemes`, a host, and a port (if any) from 1 to 65535."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return False
    return (
        parts.scheme in schemes
        and bool(parts.hostname)
        and (port is None or port > 0)
        and (path_allowed or parts.path in ("", "/"))
        and not parts.query
        and not parts.fragment
    )


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


class HostName(ValueType):
    """An address to bind: an IPv4 or IPv6 address, or a host name."""

    accepted = "an IP address or host name, such as 127.0.0.1 or 0.0.0.0"

    def __call__(self, text: str) -> str:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not _HOST_NAME.fullmatch(text):
                self.reject(text)
        return text


_INBOX_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class InboxPrefix(ValueType):
    """A NATS inbox prefix: subject tokens without wildcards."""

    accepted = "subject tokens without wildcards, such as _INBOX_service"

    def __call__(self, text: str) -> str:
        if not _INBOX_PREFIX.fullmatch(text):
            self.reject(text)
        return text


class InboxPrefixList(ValueType):
    """Inbox prefixes, comma-separated (a trailing `.` of each ignored); empty: none."""

    accepted = "inbox prefixes, comma-separated, such as _INBOX_service,_INBOX_admin"

    def __call__(self, text: str) -> str:
        prefixes = [part.strip().rstrip(".") for part in text.split(",") if part.strip()]
        if not all(_INBOX_PREFIX.fullmatch(prefix) for prefix in prefixes):
            self.reject(text)
        return text


class StreamName(ValueType):
    """A JetStream stream name that is also a single subject token (it is one in
    `$JS.API.STREAM.INFO.<name>`)."""

    accepted = "a stream name: letters, digits, _ and -, at most 255 characters"

    def __call__(self, text: str) -> str:
        if len(text) > 255 or not re.fullmatch(NAME_PATTERN, text):
            self.reject(text)
        return text


class ServiceName(ValueType):
    """A service name as the registry accepts it."""

    accepted = (
        f"a service name of 1-{SERVICE_NAME_MAX_LENGTH} letters, digits, _ or -"
    )

    def __call__(self, text: str) -> str:
        if len(text) > SERVICE_NAME_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, text):
            self.reject(text)
        return text


class InstanceId(ValueType):
    """An instance id as the registry accepts it."""

    accepted = f"an instance id of 1-{INSTANCE_ID_MAX_LENGTH} letters, digits, _ or -"

    def __call__(self, text: str) -> str:
        if len(text) > INSTANCE_ID_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, text):
            self.reject(text)
        return text


class Reason(ValueType):
    """Why an operator did something: free text the registry keeps (a maintenance's)."""

    accepted = f"a text of at most {MAINTENANCE_REASON_MAX_LENGTH} characters"

    def __call__(self, text: str) -> str:
        if len(text) > MAINTENANCE_REASON_MAX_LENGTH:
            raise argparse.ArgumentTypeError(
                f"must be {self.accepted} (got {len(text)} characters)"
            )
        return text


class Token(ValueType):
    """A bearer token: visible ASCII, as an HTTP header carries it; empty: none."""

    accepted = "visible ASCII characters without spaces (it travels in an HTTP header)"

    def __call__(self, text: str) -> str:
        if not all("!" <= char <= "~" for char in text):
            raise argparse.ArgumentTypeError(f"must be {self.accepted}")  # (never echoed)
        return text
