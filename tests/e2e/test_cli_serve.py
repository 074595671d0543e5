"""The `ipc-router serve` command from the outside: start, register, list, stop."""

from __future__ import annotations

import os
import signal
import time

import aiohttp
import pytest

from actors.embedded_nats import NatsServerProcess
from sdk import ServiceClient
from tests.support.network import free_port, occupied_port
from tests.support.processes import RouterLauncher, RouterProcess, process_exists, wait_gone

pytestmark = pytest.mark.timeout(60)


async def test_newcomer_flow_register_with_sdk_and_list_over_http(
    started_router: tuple[RouterProcess, int, int],
) -> None:
    router, nats_port, http_port = started_router
    async with ServiceClient(f"nats://127.0.0.1:{nats_port}") as client:
        info = await client.register("orders", "orders-1", {"zone": "a"})
    assert info.created
    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{http_port}"
        async with http.get(f"{base}/api/v1/admin/services") as response:
            assert response.status == 200
            assert (await response.json())["total"] == 1
        async with http.get(f"{base}/api/v1/admin/services/orders") as response:
            body = await response.json()
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
    assert body["instances"][0]["instance_id"] == "orders-1"
    logged = await router.wait_for_event("registration")
    assert logged["service_name"] == "orders"
    assert logged["instance_id"] == "orders-1"
    assert logged["outcome"] == "created"
    secret = client._session_id
    assert not any(secret in line for line in router.raw_lines)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_stops_everything_within_5_seconds_with_exit_0(
    started_router: tuple[RouterProcess, int, int], sig: signal.Signals
) -> None:
    router, _, _ = started_router
    nats_pid = (await router.wait_for_event("nats_server_ready"))["pid"]
    assert process_exists(nats_pid)
    started = time.monotonic()
    router.send(sig)
    code = await router.wait_exit(timeout=5.0)
    assert code == 0
    assert time.monotonic() - started < 5.0
    await wait_gone(nats_pid)  # the embedded nats-server stops with the router
    assert not any("Traceback" in line for line in router.raw_lines)


async def test_router_killed_by_sigkill_leaves_no_orphan_nats_server(
    started_router: tuple[RouterProcess, int, int],
) -> None:
    router, _, _ = started_router
    nats_pid = (await router.wait_for_event("nats_server_ready"))["pid"]
    router.send(signal.SIGKILL)
    await router.wait_exit()
    await wait_gone(nats_pid)  # the embedded nats-server is not orphaned


async def test_http_port_in_use_is_a_one_line_error_and_exit_2(routers: RouterLauncher) -> None:
    with occupied_port() as taken:
        router = await routers.start(
            "--embedded-nats-port", str(free_port()), "--http-port", str(taken), ready=False
        )
        code = await router.wait_exit(timeout=20)
    errors = [line for line in router.raw_lines if line.startswith("ipc-router: error:")]
    assert code == 2
    assert len(errors) == 1 and f"127.0.0.1:{taken}" in errors[0] and "in use" in errors[0]
    assert errors[0].endswith("choose another with --http-port")
    assert not any("Traceback" in line for line in router.raw_lines)


async def test_embedded_nats_port_in_use_is_a_one_line_error_and_exit_2(
    routers: RouterLauncher,
) -> None:
    with occupied_port() as taken:
        router = await routers.start(
            "--embedded-nats-port", str(taken), "--http-port", str(free_port()), ready=False
        )
        code = await router.wait_exit(timeout=20)
    errors = [line for line in router.raw_lines if line.startswith("ipc-router: error:")]
    assert code == 2
    assert len(errors) == 1 and "NATS port" in errors[0] and "in use" in errors[0]
    assert errors[0].endswith("choose another with --embedded-nats-port")
    assert not any("Traceback" in line for line in router.raw_lines)


async def test_embedded_nats_port_0_starts_on_a_free_port_and_logs_its_real_url(
    routers: RouterLauncher,
) -> None:
    router = await routers.start("--embedded-nats-port", "0", "--http-port", str(free_port()))
    started = await router.wait_for_event("router_started")
    ready = await router.wait_for_event("nats_server_ready")
    url = started["nats_url"]
    assert started["embedded_nats"] is True
    assert url == ready["url"]
    assert url.startswith("nats://127.0.0.1:") and int(url.rsplit(":", 1)[1]) not in (0, 4222)
    async with ServiceClient(url) as client:
        info = await client.register("orders", "orders-1", {"zone": "a"})
    assert info.created


async def test_environment_variables_configure_serve(
    nats_server: NatsServerProcess, routers: RouterLauncher
) -> None:
    http_port = free_port()
    router = await routers.start(
        env={"IPC_ROUTER_NATS_URL": nats_server.url, "IPC_ROUTER_HTTP_PORT": str(http_port)}
    )
    started = await router.wait_for_event("router_started")
    assert started["nats_url"] == nats_server.url
    assert started["embedded_nats"] is False
    async with ServiceClient(nats_server.url) as client:
        await client.register("orders", "orders-1")
    url = f"http://127.0.0.1:{http_port}/api/v1/admin/services"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert (await response.json())["total"] == 1
    router.send(signal.SIGTERM)
    assert await router.wait_exit() == 0


async def test_embedded_nats_crash_is_restarted_and_clients_reconnect(
    started_router: tuple[RouterProcess, int, int],
) -> None:
    router, nats_port, _ = started_router
    first_pid = (await router.wait_for_event("nats_server_ready"))["pid"]
    mark = len(router.events)
    os.kill(first_pid, signal.SIGKILL)
    restarted = await router.wait_for_event("nats_server_ready", after=mark)
    assert restarted["pid"] != first_pid
    await router.wait_for_event("child_restarted", after=mark)
    async with ServiceClient(f"nats://127.0.0.1:{nats_port}", retries=10) as client:
        info = await client.register("orders", "orders-1")
    assert info.created


async def test_restart_intensity_exceeded_exits_1_with_a_clear_log_line(
    started_router: tuple[RouterProcess, int, int],
) -> None:
    router, _, _ = started_router
    after = 0
    for _ in range(4):  # the default intensity allows 3 restarts within 5 s
        ready = await router.wait_for_event("nats_server_ready", after=after)
        after = router.events.index(ready) + 1
        os.kill(ready["pid"], signal.SIGKILL)
    assert await router.wait_exit(timeout=10) == 1
    assert any(e.get("event") == "restart_intensity_exceeded" for e in router.events)
    assert any(e.get("event") == "router_failed" for e in router.events)


async def test_unknown_option_is_a_usage_error_exit_2(routers: RouterLauncher) -> None:
    router = await routers.start("--no-such-option", ready=False)
    assert await router.wait_exit() == 2
    assert router.raw_lines[0].startswith("usage: ipc-router serve ")
    assert router.raw_lines[-1] == (
        "ipc-router serve: error: --no-such-option is not an option of ipc-router serve "
        "(see ipc-router serve --help)"
    )


def test_cli_main_reports_port_in_use_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from actors.cli import main

    with occupied_port() as taken:
        code = main(
            ["serve", "--embedded-nats-port", str(free_port()), "--http-port", str(taken)]
        )
    assert code == 2
    assert "is already in use" in capsys.readouterr().err
