"""structlog configuration: readable console lines, or one JSON object per line."""

from __future__ import annotations

import io
import logging
import sys
from typing import Any, Literal, TextIO, cast

import msgspec
import structlog

__all__ = ["LogFormat", "configure_logging"]

LogFormat = Literal["console", "json"]


class _CurrentStderr(io.TextIOBase):
    """Whatever `sys.stderr` is when a line is written. Loggers are cached on first
    use (they are on the hot path), so they must not hold on to one stream object."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_encode = msgspec.json.Encoder(enc_hook=repr).encode


def _json_line(event: dict[str, Any], **_: Any) -> str:
    return _encode(event).decode()


def configure_logging(
    log_format: LogFormat = "console", level: str = "info", *, cache: bool = True
) -> None:
    """Configure structlog for the whole process (stderr). `cache` keeps each logger
    after its first use (fast; but later reconfiguration no longer reaches it)."""
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[structlog.typing.Processor]
    if log_format == "json":
        # msgspec's encoder: a registration is logged per request, on the hot path.
        renderer = [
            # Never local variables in tracebacks: they hold session ids and tokens.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=_json_line),
        ]
    else:
        renderer = [
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        ]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # A text stream in all but name: typeshed's TextIO is a protocol no class
        # outside `io` can claim.
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=cache,
    )
