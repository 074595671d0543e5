"""`ipc-router services` against a running router's admin API."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re

import pytest

from actors.admin_cli import AdminApiError, run_services
from actors.app import Router
from actors.cli import main
from actors.embedded_nats import NatsServerProcess
from sdk import ServiceClient
from tests.support.network import free_port
from tests.support.routers import InProcessRouters
from tests.support.waiting import eventually

TOKEN = "cli-admin-token-0123456789abcdef"

pytestmark = pytest.mark.timeout(30)


async def test_services_table_lists_every_service_with_counts(
    router: Router, nats_server: NatsServerProcess
) -> None:
    async with ServiceClient(nats_server.url) as client:
        for n in range(3):
            await client.register("orders", f"orders-{n}", {"zone": "a"})
        await client.register("payments", "payments-0")
        out = io.StringIO()
        await run_services(f"http://127.0.0.1:{router.http_port}", None, None, False, out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["SERVICE", "INSTANCES", "ONLINE", "UNHEALTHY", "OFFLINE", "IN", "MAINTENANCE"]
    assert lines[1].split() == ["orders", "3", "3", "0", "0", "0"]
    assert lines[2].split() == ["payments", "1", "1", "0", "0", "0"]
    assert lines[-1] == "2 service(s)"


async def test_one_service_as_table_and_as_json(router: Router, nats_server: NatsServerProcess) -> None:
    base = f"http://127.0.0.1:{router.http_port}"
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1", {"zone": "a"})
        table, raw = io.StringIO(), io.StringIO()
        await run_services(base, "orders", "online", False, out=table)
        await run_services(base, "orders", None, True, out=raw)
    row = table.getvalue().splitlines()[1].split()
    assert row[0:2] == ["orders-1", "ONLINE"]
    for time in row[2:4]:  # ISO 8601 in UTC to the millisecond: 2026-12-06T22:47:37.712Z
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", time), time
    assert row[-1] == '{"zone":"a"}'
    body = json.loads(raw.getvalue())
    assert body["instances"][0]["instance_id"] == "orders-1"


async def test_paginated_lists_are_read_to_the_end(router: Router, nats_server: NatsServerProcess) -> None:
    async with ServiceClient(nats_server.url) as client:
        await asyncio.gather(
            *(client.register(f"svc-{n:04d}", "i") for n in range(1005))
        )
        raw = io.StringIO()
        await run_services(f"http://127.0.0.1:{router.http_port}", None, None, True, out=raw)
    body = json.loads(raw.getvalue())
    assert len(body["services"]) == 1005
    assert body["total"] == 1005


@pytest.mark.parametrize("name", ["ghost", "not/a name", "a.b"])
async def test_unknown_service_is_named_in_cli_words_not_the_apis_path(
    router: Router, name: str
) -> None:
    with pytest.raises(AdminApiError) as raised:
        await run_services(f"http://127.0.0.1:{router.http_port}", name, None, False)
    assert str(raised.value) == (
        f"no service named {name!r} (see `ipc-router services` for the list)"
    )


async def test_output_goes_to_stdout_as_it_is_when_called(
    router: Router, nats_server: NatsServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
        await run_services(f"http://127.0.0.1:{router.http_port}", None, None, False)
    assert "1 service(s)" in capsys.readouterr().out.splitlines()


def test_cli_prints_one_line_and_exits_1_when_the_api_is_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["services", "--admin-url", f"http://127.0.0.1:{free_port()}"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ipc-router: error: cannot reach the admin API")


async def test_an_operator_drains_and_deregisters_from_the_command_line(
    routers: InProcessRouters, nats_server: NatsServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ipc-router maintenance ... on|off` and `ipc-router deregister`, with the token
    from the environment, as an operator types them; without it, one line and exit 1."""
    router = await routers.start(admin_token=TOKEN)
    admin = ["--admin-url", f"http://127.0.0.1:{router.http_port}"]
    removed: list[tuple[str, str]] = []
    async with ServiceClient(nats_server.url, on_removed=lambda *key: removed.append(key)) as owner:
        await owner.register("orders", "orders-1")
        refused = await asyncio.to_thread(main, ["maintenance", "orders", "orders-1", "on", *admin])
        assert refused == 1
        # (the router in this process logs to stderr too: the command's line is the last)
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            "ipc-router: error: The admin API needs the header 'Authorization: Bearer <token>' "
            "with the router's admin token (--admin-token / IPC_ROUTER_ADMIN_TOKEN)."
        )
        os.environ["IPC_ROUTER_ADMIN_TOKEN"] = TOKEN
        try:
            argv = ["maintenance", "orders", "orders-1", "on", "--reason", "bad disk", *admin]
            assert await asyncio.to_thread(main, argv) == 0
            [row] = _rows(capsys.readouterr().out, "orders-1")
            assert re.search(r"ONLINE .* since \S+Z by admin: bad disk", row), row
            assert [i.instance_id for i in await owner.get_instances("orders")] == []
            table = io.StringIO()
            await run_services(admin[1], None, None, False, TOKEN, out=table)
            assert table.getvalue().splitlines()[1].split() == ["orders", "1", "1", "0", "0", "1"]

            argv = ["maintenance", "orders", "orders-1", "off", "--json", *admin]
            assert await asyncio.to_thread(main, argv) == 0
            answer = capsys.readouterr().out
            assert "maintenance" not in json.loads(answer[answer.index("{\n") :])["instance"]

            assert await asyncio.to_thread(main, ["deregister", "orders", "orders-1", *admin]) == 0
            [row] = _rows(capsys.readouterr().out, "orders-1")
            assert row.split()[1] == "OFFLINE"
            assert await asyncio.to_thread(main, ["deregister", "orders", "nobody", *admin]) == 1
            assert "no live instance 'nobody'" in capsys.readouterr().err
        finally:
            del os.environ["IPC_ROUTER_ADMIN_TOKEN"]

        async def told() -> bool:
            return removed == [("orders", "orders-1")]

        await eventually(told, timeout=10, what="the owner to be told on its next heartbeat")


def _rows(out: str, instance: str) -> list[str]:
    """The table rows of `instance` in `out` (the router in this process logs there too)."""
    return [line for line in out.splitlines() if line.startswith(instance + " ")]
