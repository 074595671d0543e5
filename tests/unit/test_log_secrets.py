"""No line the router writes holds a secret, and with `--log-format json` every line is
JSON, the standard library's loggers (aiohttp's, nats-py's) included (issue 10.7)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage

from actors.logs import REDACTED, configure_logging

pytestmark = pytest.mark.timeout(10)

TOKEN = "prod-admin-token-0123456789"


@pytest.fixture(autouse=True)
def _restore_standard_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("stray", ["\r", "\x00", "\x7f"])
def test_a_malformed_authorization_line_is_logged_without_its_bytes(
    stray: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """aiohttp logs the parse error with the raw header line, token and all."""
    configure_logging("json", "info", cache=False, secrets=[TOKEN])
    error = BadHttpMessage(f"Invalid header value char: b'Authorization: Bearer {TOKEN}{stray}'")
    try:
        raise error
    except BadHttpMessage:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s", "127.0.0.1")
    [line] = lines(capsys)
    event = json.loads(line)
    assert TOKEN not in line
    assert event["logger"] == "aiohttp.server"
    assert "BadHttpMessage" in event["event"]


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_a_secret_in_another_librarys_line_is_redacted(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(log_format, "info", cache=False, secrets=[TOKEN])  # type: ignore[arg-type]
    logging.getLogger("nats.aio.client").warning("connect to nats://user:%s@host failed", TOKEN)
    try:
        raise RuntimeError(f"token {TOKEN} refused")
    except RuntimeError:
        logging.getLogger("somelib").exception("it failed")
        structlog.get_logger(component="test").exception("ours_failed")
    output = lines(capsys)
    assert len(output) >= 3
    assert all(TOKEN not in line for line in output)
    assert sum(REDACTED in line for line in output) >= 3
    if log_format == "json":
        assert all(json.loads(line) for line in output)


def test_configuring_twice_installs_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info", cache=False)
    configure_logging("json", "info", cache=False)
    logging.getLogger("somelib").warning("once")
    assert len(lines(capsys)) == 1
