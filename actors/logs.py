"""Logging for the whole process: readable console lines, or one JSON object per line,
for structlog and for the standard library's loggers (aiohttp's, nats-py's, the
SDK's) alike, and never a secret.

Secrets are kept out twice over. Tracebacks never show local variables (they hold
session ids and tokens). And every line that did not come from our own structlog
calls with known fields, that is every line of another library and every line with
an exception, has each configured secret (`configure_logging(secrets=...)`) replaced
by `[REDACTED]`, and a malformed HTTP request is logged as one line that names the
error but not the bytes (aiohttp would log the raw header line, token and all).
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO, cast

import msgspec
import structlog

__all__ = ["REDACTED", "LogFormat", "configure_logging"]

LogFormat = Literal["console", "json"]
REDACTED = "[REDACTED]"


class _CurrentStderr(io.TextIOBase):
    """Whatever `sys.stderr` is when a line is written. Loggers are cached on first
    use (they are on the hot path), so they must not hold on to one stream object."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_encode = msgspec.json.Encoder(enc_hook=repr).encode


def _json_line(event: MutableMapping[str, Any], **_: Any) -> str:
    return _encode(event).decode()


class _Redact:
    """Replaces each secret in every string of an event (nested too). `always`: on
    every line (those of other libraries); otherwise only on lines with an exception:
    our own lines carry known fields, and the hot path must not pay for a walk."""

    def __init__(self, secrets: list[str], *, always: bool) -> None:
        self._secrets = secrets
        self._always = always

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if self._secrets and (self._always or "exception" in event):
            for key, value in list(event.items()):
                event[key] = self._clean(value)
        return event

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {key: self._clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._clean(item) for item in value]
        return value


class _MalformedHttpRequests(logging.Filter):
    """aiohttp logs a request it cannot parse with the exception, whose text holds the
    offending raw bytes (an `Authorization` line with a stray control character, say).
    Keep the fact and the error class; drop the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            if _is_http_parse_error(error):
                record.msg = "malformed HTTP request refused: %s"
                record.args = (type(error).__name__,)
                record.exc_info = None
                record.exc_text = None
        return True


def _is_http_parse_error(error: BaseException) -> bool:
    try:
        from aiohttp.http_exceptions import HttpProcessingError
    except ImportError:  # pragma: no cover - the router always has aiohttp
        return False
    return isinstance(error, HttpProcessingError)


def configure_logging(
    log_format: LogFormat = "console",
    level: str = "info",
    *,
    cache: bool = True,
    secrets: Iterable[str] = (),
) -> None:
    """Configure structlog and the standard library's logging for the whole process
    (stderr). `cache` keeps each logger after its first use (fast; but later
    reconfiguration no longer reaches it). `secrets` never appear in a line."""
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    kept = sorted({s for s in secrets if s}, key=len, reverse=True)
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, *_renderer(log_format, _Redact(kept, always=False))],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # A text stream in all but name: typeshed's TextIO is a protocol no class
        # outside `io` can claim.
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=cache,
    )
    # Every line of the standard library's loggers comes from another library: all
    # are redacted.
    _route_standard_logging(
        numeric_level, shared, _renderer(log_format, _Redact(kept, always=True))
    )


def _renderer(log_format: LogFormat, redact: _Redact) -> list[structlog.typing.Processor]:
    """The processors that render an event as a line, `redact` just before the last."""
    if log_format == "json":
        return [
            # Never local variables in tracebacks: they hold session ids and tokens.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            redact,
            # msgspec's encoder: a registration is logged per request, on the hot path.
            structlog.processors.JSONRenderer(serializer=_json_line),
        ]
    return [
        # Rendered to plain text first (no local variables), so that the redaction
        # sees the traceback too.
        structlog.processors.format_exc_info,
        redact,
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
    ]


def _route_standard_logging(
    level: int,
    shared: list[structlog.typing.Processor],
    renderer: list[structlog.typing.Processor],
) -> None:
    """Lines of the standard library's loggers go through the same processors as
    structlog's (`renderer` redacting every line)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )
    handler = _RouterHandler(cast(TextIO, _CurrentStderr()))
    handler.setFormatter(formatter)
    handler.addFilter(_MalformedHttpRequests())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RouterHandler)]:
        root.removeHandler(old)  # configured again: one handler, not two
    root.addHandler(handler)
    root.setLevel(level)


class _RouterHandler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs (told apart from others by its type)."""
