"""Log output: one JSON object per line, readable console lines, no secrets."""

from __future__ import annotations

import json

import pytest
import structlog

from actors.logs import configure_logging

pytestmark = pytest.mark.timeout(10)


def fail_with_a_secret_in_scope(log: structlog.typing.FilteringBoundLogger) -> None:
    session_id = "SESSION-SECRET-0123456789"  # noqa: F841 - what a traceback must not show
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        log.exception("request_failed")


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_tracebacks_never_show_local_variables(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(log_format, "info", cache=False)  # type: ignore[arg-type]
    fail_with_a_secret_in_scope(structlog.get_logger(component="test"))
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err
    assert "SESSION-SECRET" not in err


def test_json_format_writes_one_object_per_line_with_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info", cache=False)
    log = structlog.get_logger(component="registry")
    log.info("registration", service_name="orders", instance_id="orders-1", outcome="created", odd=object())
    log.debug("hidden")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "registration"
    assert (event["service_name"], event["instance_id"], event["outcome"]) == ("orders", "orders-1", "created")
    assert event["level"] == "info" and event["timestamp"].endswith("Z")
    assert event["component"] == "registry"
