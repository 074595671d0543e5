"""One request/reply on a router subject, the way a foreign client makes it: a msgpack
map out, a msgpack map back."""

from __future__ import annotations

from typing import Any

import msgpack
import nats.errors
from nats.aio.client import Client as NatsClient

REQUEST_TIMEOUT = 5.0
"""Seconds to wait for a reply on loopback."""


class NoReplyError(AssertionError):
    """A request got no reply in time (a test failure unless the test expects silence)."""


def show(data: Any, limit: int = 300) -> str:
    """`repr(data)` cut to `limit` characters, with the size of bytes: for failure messages."""
    text = repr(data)
    size = f" ({len(data)} bytes)" if isinstance(data, bytes | bytearray) else ""
    return (text if len(text) <= limit else text[:limit] + "...") + size


async def nats_request(
    nc: NatsClient, subject: str, request: Any, *, timeout: float = REQUEST_TIMEOUT
) -> dict[str, Any]:
    """Send `request` on `subject` (msgpack-packed, unless it is bytes already) and
    return the decoded reply map (msgpack timestamps as aware datetimes).

    Raises `NoReplyError` on silence and fails the test on a reply that is not a
    msgpack map."""
    payload = request if isinstance(request, bytes) else msgpack.packb(request)
    try:
        message = await nc.request(subject, payload, timeout=timeout)
    except nats.errors.TimeoutError:
        raise NoReplyError(f"no reply in {timeout} s on {subject} for {show(payload)}") from None
    try:
        reply = msgpack.unpackb(message.data, timestamp=3, strict_map_key=False)
    except Exception as error:  # noqa: BLE001 - any decoding error is the finding
        problem = f"is no msgpack ({error!r}): {show(message.data)}"
    else:
        if isinstance(reply, dict):
            return reply
        problem = f"is not a map: {show(reply, 600)}"
    raise AssertionError(f"the reply on {subject} for {show(payload)} {problem}")
