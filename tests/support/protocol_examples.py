"""The examples of docs/protocol.md, captured from real routers.

`python -m tests.support.protocol_examples` starts `ipc-router serve` (default
settings: the bundled nats-server, the registry in a fresh stream) on free ports,
sends the requests the document shows with nats-py and msgpack only, as a foreign
client would, reads the admin API as curl would, and prints every request and reply:
size, hex dump (30 bytes a line, as in the document) and the decoded value in the
document's notation (JSON-like, `nil` for msgpack nil, `Timestamp(…)` for ext -1).
The document's examples are copied from this output; `tests/unit/test_protocol_doc.py`
checks that each hex dump in the document decodes to what its text says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import aiohttp
import msgpack
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from tests.support.network import free_port
from tests.support.processes import RouterProcess
from tests.support.waiting import Repeating

REGISTER = "ipc.service.register"
HEARTBEAT = "ipc.service.heartbeat"
DEREGISTER = "ipc.service.deregister"
LIST = "ipc.service.list"
GET = "ipc.service.get"
SESSION = "example-session-id-0123456789abc"
"""The fixed example session id of section 11 (real clients use a random one)."""
OTHER_SESSION = "another-session-id-0123456789xyz"
ADMIN_TOKEN = "example-admin-token"


@dataclass
class Exchange:
    """One request and its reply (or one HTTP request and its response)."""

    name: str
    subject: str
    request: bytes
    reply: bytes
    headers: dict[str, str] = field(default_factory=dict)
    """HTTP only: the response headers the document shows."""
    status: int = 0
    """HTTP only: the response status."""

    @property
    def decoded(self) -> Any:
        """The reply decoded (msgpack, or JSON for HTTP)."""
        if self.subject.startswith(("GET ", "POST ")):
            return json.loads(self.reply)
        return msgpack.unpackb(self.reply, timestamp=0, strict_map_key=False)


@dataclass
class Capture:
    """Everything one run captured, by example name."""

    exchanges: dict[str, Exchange] = field(default_factory=dict)
    events: list[tuple[str, bytes]] = field(default_factory=list)
    """(subject, data) of every event on `ipc.registry.events.*` in part 2."""

    def add(self, exchange: Exchange) -> Exchange:
        self.exchanges[exchange.name] = exchange
        return exchange


def notation(value: Any) -> str:
    """`value` in the document's notation."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, msgpack.Timestamp):
        moment = value.to_datetime().astimezone(UTC)
        return f"Timestamp({timestamp_text(moment)})"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bytes):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{notation(k)}: {notation(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(notation(v) for v in value) + "]"
    return repr(value)


def timestamp_text(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a Z, as the document writes times."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hex_lines(data: bytes, per_line: int = 30) -> list[str]:
    """A hex dump as the document shows one."""
    return [data[i : i + per_line].hex(" ") for i in range(0, len(data), per_line)]


async def request(nc: NatsClient, subject: str, body: Any) -> bytes:
    payload = body if isinstance(body, bytes) else msgpack.packb(body)
    msg = await nc.request(subject, payload, timeout=5)
    return bytes(msg.data)


@contextlib.asynccontextmanager
async def router(*options: str, env: dict[str, str] | None = None) -> AsyncIterator[tuple[str, str]]:
    """`ipc-router serve` with its bundled nats-server and a fresh data directory;
    yields (NATS URL, admin base URL) once it takes registrations."""
    with tempfile.TemporaryDirectory(prefix="ipc-router-examples-") as data:
        nats_port, http_port = free_port(), free_port()
        process = RouterProcess(
            "--embedded-nats-port", str(nats_port), "--http-port", str(http_port),
            "--data-dir", data, *options, env=env,
        )  # fmt: skip
        await process.start()
        try:
            await process.wait_for_event("router_started", timeout=30)
            await process.wait_for_event("serving_writes", timeout=30)
            yield f"nats://127.0.0.1:{nats_port}", f"http://127.0.0.1:{http_port}"
        finally:
            process.send(signal.SIGTERM)
            await process.wait_exit(timeout=15)


class Heartbeats:
    """Renews some instances every second, as their clients would."""

    def __init__(self, nc: NatsClient, *instances: tuple[str, str]) -> None:
        self.nc = nc
        self.instances = list(instances)
        self._repeating: Repeating | None = None

    async def _beat(self) -> None:
        await asyncio.sleep(1.0)
        for service, instance in self.instances:
            body = {"service_name": service, "instance_id": instance, "session_id": SESSION}
            with contextlib.suppress(nats.errors.Error):
                await request(self.nc, HEARTBEAT, body)

    async def __aenter__(self) -> Self:
        self._repeating = Repeating(self._beat, interval=0.0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._repeating is not None
        await self._repeating.stop()


async def http(
    capture: Capture, name: str, base: str, path: str, *, method: str = "GET",
    token: str | None = None,
) -> Exchange:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.request(
        method, base + path, headers=headers
    ) as response:
        body = await response.read()
        shown = {
            key: response.headers[key]
            for key in ("Content-Type", "Allow", "WWW-Authenticate")
            if key in response.headers
        }
    return capture.add(Exchange(name, f"{method} {path}", b"", body, shown, response.status))


async def part_one(capture: Capture) -> None:
    """Sections 11.1-11.5 and 13.4: one instance's life, and errors."""
    async with router() as (url, admin):
        nc = await nats.connect(url)
        try:
            reg = {"service_name": "orders", "instance_id": "orders-1", "metadata": {"zone": "a"},
                   "session_id": SESSION}  # fmt: skip
            lease = {"service_name": "orders", "instance_id": "orders-1", "session_id": SESSION}

            async def send(name: str, subject: str, body: Any) -> Exchange:
                payload = body if isinstance(body, bytes) else msgpack.packb(body)
                reply = await request(nc, subject, payload)
                return capture.add(Exchange(name, subject, payload, reply))

            await send("register", REGISTER, reg)
            await send("heartbeat", HEARTBEAT, lease)
            await send("register orders-2", REGISTER, {**reg, "instance_id": "orders-2", "metadata": {}})
            orders_2 = {**lease, "instance_id": "orders-2"}
            await send("deregister", DEREGISTER, orders_2)
            await send("deregister again", DEREGISTER, orders_2)
            await send("deregister unknown", DEREGISTER, {**lease, "instance_id": "orders-8"})
            await send("register again, new metadata", REGISTER, {**reg, "metadata": {"zone": "b"}})
            await send("register, other session", REGISTER, {**reg, "session_id": OTHER_SESSION})
            anonymous = {k: v for k, v in reg.items() if k != "session_id"}
            await send("register, no session", REGISTER, anonymous)
            await send("service name with a dot", REGISTER, {**reg, "service_name": "orders.v1"})
            await send("service name with a newline", REGISTER, {**reg, "service_name": "orders\n"})
            await send("bin metadata", REGISTER, {**reg, "metadata": {"zone": {"a": b"\x00"}}})
            await send("nan metadata", REGISTER, {**reg, "metadata": {"load": float("nan")}})
            await send("large metadata", REGISTER, {**reg, "metadata": {"blob": "x" * 5000}})
            await send("naive timestamp", REGISTER, {**reg, "timestamp": "2026-11-26T07:44:13"})
            await send("nan timestamp", REGISTER, {**reg, "timestamp": float("nan")})
            await send("missing instance_id", REGISTER, {"service_name": "orders"})
            await send("hello", REGISTER, b"hello")
            await send("heartbeat, other session", HEARTBEAT, {**lease, "session_id": OTHER_SESSION})
            await send("deregister, other session", DEREGISTER, {**lease, "session_id": OTHER_SESSION})
            await send("register orders-3", REGISTER, {**reg, "instance_id": "orders-3", "metadata": {}})
            await send("register billing-1", REGISTER, {**reg, "service_name": "billing",
                                                        "instance_id": "billing-1", "metadata": {}})  # fmt: skip
            await send("register billing-2, no session", REGISTER,
                       {"service_name": "billing", "instance_id": "billing-2"})  # fmt: skip
            await send("heartbeat billing-2", HEARTBEAT,
                       {**lease, "service_name": "billing", "instance_id": "billing-2"})  # fmt: skip
            await send("heartbeat unknown", HEARTBEAT, {**lease, "instance_id": "orders-9"})
            await send("heartbeat without session", HEARTBEAT, {"service_name": "orders", "instance_id": "orders-1"})
            await send("with nonce", REGISTER, {**reg, "metadata": {"zone": "b"}, "nonce": "example-nonce-0123456789"})
            await send("error with nonce", REGISTER, {**reg, "service_name": "orders.v1",
                                                      "nonce": "example-nonce-0123456789"})  # fmt: skip
            async with Heartbeats(nc, ("orders", "orders-1"), ("orders", "orders-3"), ("billing", "billing-1")):
                await asyncio.sleep(10)  # billing-2 (anonymous) turns UNHEALTHY meanwhile
                first = await http(capture, "services", admin, "/api/v1/admin/services?limit=1")
                cursor = first.decoded["next_cursor"]
                for name, path in [
                    ("all services", "/api/v1/admin/services"),
                    ("unhealthy services", "/api/v1/admin/services?status=unhealthy"),
                    ("orders", "/api/v1/admin/services/orders"),
                    ("billing", "/api/v1/admin/services/billing"),
                    ("offline orders", "/api/v1/admin/services/orders?status=OFFLINE"),
                    ("unknown parameter", "/api/v1/admin/services/orders?foo=1"),
                    ("unknown service", "/api/v1/admin/services/nope"),
                    ("unknown route", "/api/v1/admin/nope"),
                    ("second page", f"/api/v1/admin/services?limit=1&cursor={cursor}"),
                    ("forged cursor", "/api/v1/admin/services?cursor=AmJpbGxpbmc"),
                    ("meta filter", "/api/v1/admin/services/orders?status=any&meta.zone=b"),
                    ("mixed-case status", "/api/v1/admin/services?status=Offline"),
                    ("bad status", "/api/v1/admin/services?status=gone"),
                    ("repeated limit", "/api/v1/admin/services?limit=1&limit=2"),
                    ("bad limit", "/api/v1/admin/services?limit=abc"),
                    ("healthz", "/healthz"),
                ]:
                    await http(capture, name, admin, path)
                await http(capture, "post", admin, "/api/v1/admin/services", method="POST")
        finally:
            await nc.close()


async def part_two(capture: Capture) -> None:
    """Sections 7.2, 11.6 and 11.7: discovery and change events."""
    async with router() as (url, _admin):
        nc = await nats.connect(url)
        try:

            async def on_event(msg: Msg) -> None:
                capture.events.append((msg.subject, bytes(msg.data)))

            await nc.subscribe("ipc.registry.events.*", cb=on_event)
            await nc.flush()

            async def send(name: str, subject: str, body: Any) -> Exchange:
                payload = body if isinstance(body, bytes) else msgpack.packb(body)
                reply = await request(nc, subject, payload)
                return capture.add(Exchange(name, subject, payload, reply))

            def reg(service: str, instance: str, metadata: dict[str, Any]) -> dict[str, Any]:
                return {"service_name": service, "instance_id": instance, "metadata": metadata,
                        "session_id": SESSION}  # fmt: skip

            await send("d: orders-1", REGISTER, reg("orders", "orders-1", {"zone": "a", "version": "1.4.2"}))
            await send("d: orders-2", REGISTER, reg("orders", "orders-2", {"zone": "b", "version": "1.4.2"}))
            await send("d: orders-3", REGISTER, reg("orders", "orders-3", {"zone": "a", "replicas": 3}))
            await send("d: billing-1", REGISTER, reg("billing", "billing-1", {}))
            async with Heartbeats(nc, ("orders", "orders-1"), ("orders", "orders-2"), ("orders", "orders-3"),
                            ("billing", "billing-1")):  # fmt: skip
                await asyncio.sleep(3)
                await send("list", LIST, {})
                page = await send("list, limit 1", LIST, {"limit": 1})
                cursor = msgpack.unpackb(page.reply)["result"]["next_cursor"]
                await send("list, second page", LIST, {"limit": 1, "cursor": cursor})
                await send("get, zone a", GET, {"service_name": "orders", "metadata": {"zone": "a"}})
                await send("get, replicas text", GET, {"service_name": "orders", "metadata": {"replicas": "3"}})
                await send("get, replicas int", GET, {"service_name": "orders", "metadata": {"replicas": 3}})
                await send("d: orders-1 again", REGISTER, reg("orders", "orders-1", {"zone": "a", "version": "1.5.0"}))
                await send("d: deregister orders-2", DEREGISTER,
                           {"service_name": "orders", "instance_id": "orders-2", "session_id": SESSION})  # fmt: skip
                await send("get, online", GET, {"service_name": "orders"})
                await send("get, any status", GET, {"service_name": "orders", "status": None})
                await send("list, offline", LIST, {"status": "OFFLINE"})
                await send("get, unknown", GET, {"service_name": "nope"})
                await send("list, limit 0", LIST, {"limit": 0})
                await send("get, lower-case status", GET, {"service_name": "orders", "status": "online"})
                await send("get, array filter", GET, {"service_name": "orders", "metadata": {"k": [1]}})
                await send("get, forged cursor", GET, {"service_name": "orders", "cursor": "Am9yZGVycy0x"})
                base = msgpack.packb({"service_name": "orders", "cursor": ""})
                for size in (65537, 65536):
                    body = msgpack.packb({"service_name": "orders", "cursor": "x" * (size - len(base) - 2)})
                    assert len(body) == size, len(body)
                    try:
                        await send(f"get, {size} bytes", GET, body)
                    except nats.errors.MaxPayloadError:  # the bundled server's max_payload
                        capture.add(Exchange(f"get, {size} bytes", GET, body, b""))
            await asyncio.sleep(0.2)  # the last events
            big = "x" * 3990
            for n in range(300):
                await request(nc, REGISTER, reg("big", f"big-{n:03d}", {"blob": big}))
            page = await send("get, 300 big", GET, {"service_name": "big", "limit": 1000})
            pages = 1
            while cursor := msgpack.unpackb(page.reply, timestamp=0)["result"]["next_cursor"]:
                pages += 1
                page = await send(f"get, 300 big, page {pages}", GET,
                                  {"service_name": "big", "limit": 1000, "cursor": cursor})  # fmt: skip
        finally:
            await nc.close()


async def part_three(capture: Capture) -> None:
    """Section 13.4: the admin token."""
    async with router(env={"IPC_ROUTER_ADMIN_TOKEN": ADMIN_TOKEN}) as (_, admin):
        await http(capture, "no token", admin, "/api/v1/admin/services")
        await http(capture, "wrong token", admin, "/api/v1/admin/services", token="wrong")
        await http(capture, "with token", admin, "/api/v1/admin/services", token=ADMIN_TOKEN)
        await http(capture, "healthz without token", admin, "/healthz")


async def capture(parts: tuple[Callable[[Capture], Awaitable[None]], ...] | None = None) -> Capture:
    """Run the scenarios (all three parts by default) and return what they captured."""
    result = Capture()
    for part in parts or (part_one, part_two, part_three):
        await part(result)
    return result


def show(result: Capture) -> str:
    """The capture as text: each exchange with sizes, hex dumps and decoded values."""
    lines: list[str] = []
    for exchange in result.exchanges.values():
        lines.append(f"== {exchange.name} ({exchange.subject})")
        if exchange.name.startswith("get, 300 big"):
            page = exchange.decoded["result"]
            lines.append(f"reply {len(exchange.reply)} bytes: {len(page['instances'])} instances, "
                         f"next_cursor {page['next_cursor']}")  # fmt: skip
        elif exchange.subject.startswith(("GET ", "POST ")):
            lines.append(f"HTTP {exchange.status} {exchange.headers}")
            lines.append(exchange.reply.decode())
        elif not exchange.reply:
            lines.append(f"request {len(exchange.request)} bytes: not sent (over max_payload)")
        else:
            request = exchange.request
            shown = "hello" if request == b"hello" else notation(msgpack.unpackb(request, strict_map_key=False))
            lines.append(f"request {len(request)} bytes: {shown[:2000]}")
            lines += hex_lines(request)[:10]
            lines.append(f"reply {len(exchange.reply)} bytes: {notation(exchange.decoded)[:6000]}")
            lines += hex_lines(exchange.reply)[:12]
        lines.append("")
    for subject, data in result.events:
        if subject.endswith(".big"):
            continue
        event = msgpack.unpackb(data, timestamp=0)
        lines.append(f"== event {subject}, {len(data)} bytes: {notation(event)}")
        lines += hex_lines(data)
    return "\n".join(lines)


def main() -> None:
    """Print a fresh capture."""
    print(f"# captured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, pid {os.getpid()}, "
          f"python {sys.version.split()[0]}, from {Path.cwd()}")  # fmt: skip
    print(show(asyncio.run(capture())))


if __name__ == "__main__":
    main()
