"""What the nats-server said, as captured from the router's logs (its lines are log
entries `nats_server_log`, field `line`)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

LogEntries = list[MutableMapping[str, Any]]


def violations(entries: LogEntries) -> list[str]:
    """The permissions violations the nats-server logged ("Publish Violation - Subject
    ...", "Subscription Violation - Subject ...")."""
    return [
        str(entry.get("line"))
        for entry in entries
        if entry.get("event") == "nats_server_log" and "violation" in str(entry.get("line")).lower()
    ]
