"""deploy/nats-server.conf on the real nats-server: only the router may take the
request subjects or publish events, and registration still works end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
import structlog

from actors.app import Router, RouterConfig
from actors.embedded_nats import NatsServerProcess
from actors.errors import StartupError
from protocol import REGISTER_SUBJECT, events_subject
from sdk import NatsAuth, RegistryError, RouterUnavailableError, ServiceClient
from sdk.connection import GuardedClient, connect, redact
from tests.support.network import free_port

pytestmark = pytest.mark.timeout(60)

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats-server.conf"
PASSWORDS = {"router": "router-secret-1", "service": "service-secret-2", "admin": "admin-secret-3"}


@pytest.fixture
async def secured_nats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[NatsServerProcess]:
    for user, password in PASSWORDS.items():
        monkeypatch.setenv(f"{user.upper()}_NATS_PASSWORD", password)
    server = NatsServerProcess(
        port=free_port(),
        jetstream=False,
        config_file=CONF,
        extra_args=("-sd", str(tmp_path), "-m", str(free_port())),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def auth(user: str) -> NatsAuth:
    return NatsAuth(user=user, password=PASSWORDS[user], inbox_prefix=f"_INBOX_{user}")


async def connect_collecting_errors(url: str, user: str) -> tuple[Any, list[str], asyncio.Event]:
    errors: list[str] = []
    seen = asyncio.Event()

    async def on_error(error: Exception) -> None:
        errors.append(str(error))
        seen.set()

    nc = await nats.connect(url, error_cb=on_error, **auth(user).connect_options())
    return nc, errors, seen


async def test_registration_works_with_least_privilege_users(secured_nats: NatsServerProcess) -> None:
    router = Router(RouterConfig(nats_url=secured_nats.url, http_port=0, nats_auth=auth("router")))
    await router.start()
    try:
        async with ServiceClient(secured_nats.url, auth=auth("service")) as client:
            info = await client.register("orders", "orders-1", {"zone": "a"})
            assert info.created
            assert [i.instance_id for i in await client.get_instances("orders")] == ["orders-1"]
            cache = await client.discover("orders")
            assert [i.instance_id for i in cache.instances] == ["orders-1"]
        async with ServiceClient(secured_nats.url, auth=auth("admin")) as admin:
            assert [s.service_name for s in await admin.list_services()] == ["orders"]
    finally:
        await router.stop()


async def test_a_service_user_cannot_subscribe_to_the_register_subject(
    secured_nats: NatsServerProcess,
) -> None:
    nc, errors, seen = await connect_collecting_errors(secured_nats.url, "service")
    try:
        await nc.subscribe(REGISTER_SUBJECT, queue="ipc-router")
        await nc.flush()
        await asyncio.wait_for(seen.wait(), 5)
    finally:
        await nc.close()
    assert any("permissions violation" in e.lower() and REGISTER_SUBJECT in e for e in errors), errors


async def test_a_service_user_cannot_forge_change_events(secured_nats: NatsServerProcess) -> None:
    nc, errors, seen = await connect_collecting_errors(secured_nats.url, "service")
    try:
        await nc.publish(events_subject("orders"), b"forged")
        await nc.flush()
        await asyncio.wait_for(seen.wait(), 5)
    finally:
        await nc.close()
    assert any("permissions violation" in e.lower() and "publish" in e.lower() for e in errors), errors


async def test_the_router_with_a_wrong_password_fails_to_start_with_a_clear_error(
    secured_nats: NatsServerProcess,
) -> None:
    wrong = NatsAuth(user="router", password="not-the-password")
    router = Router(RouterConfig(nats_url=secured_nats.url, http_port=0, nats_auth=wrong))
    with pytest.raises(StartupError, match="rejected the credentials"):
        await router.start()


async def test_clients_without_valid_credentials_are_refused_at_once(
    secured_nats: NatsServerProcess,
) -> None:
    for credentials in (None, NatsAuth(user="service", password="wrong")):
        client = ServiceClient(secured_nats.url, auth=credentials, connect_timeout=30)
        with pytest.raises(RouterUnavailableError, match="rejected the credentials"):
            await asyncio.wait_for(client.connect(), 10)


async def test_credentials_in_the_nats_url_work_and_never_reach_the_logs(
    secured_nats: NatsServerProcess,
) -> None:
    url = f"nats://router:{PASSWORDS['router']}@127.0.0.1:{secured_nats.port}"
    with structlog.testing.capture_logs() as logs:
        router = Router(RouterConfig(nats_url=url, http_port=0))
        await router.start()
        await router.stop()
    assert any(e["event"] == "router_started" for e in logs)
    assert PASSWORDS["router"] not in repr(logs)
    wrong = f"nats://router:not-the-password@127.0.0.1:{secured_nats.port}"
    with pytest.raises(StartupError) as caught:
        await Router(RouterConfig(nats_url=wrong, http_port=0)).start()
    assert "not-the-password" not in str(caught.value)


async def test_an_unreadable_creds_file_is_a_clear_error(secured_nats: NatsServerProcess, tmp_path: Path) -> None:
    client = ServiceClient(secured_nats.url, auth=NatsAuth(creds=str(tmp_path / "missing.creds")))
    with pytest.raises(RouterUnavailableError, match="NATS"):
        await client.connect()
    router = Router(
        RouterConfig(nats_url=secured_nats.url, http_port=0, nats_auth=NatsAuth(creds=str(tmp_path / "x")))
    )
    with pytest.raises(StartupError):
        await router.start()


async def test_a_cancelled_connect_leaves_no_client_behind() -> None:
    nc = GuardedClient()
    with pytest.raises(TimeoutError):
        # Nothing listens there: connect() would retry for 30 s; the caller gives up first.
        await asyncio.wait_for(connect(nc, f"nats://127.0.0.1:{free_port()}", auth=NatsAuth(), timeout=30), 0.3)
    assert nc.is_closed


def test_redact_hides_passwords_and_tokens_only() -> None:
    assert redact("nats://bob:hunter2@host:4222") == "nats://***@host:4222"
    assert redact("nats://s3cr3ttoken@host") == "nats://***@host"
    assert redact("nats://host:4222") == "nats://host:4222"


async def test_a_user_cannot_read_another_users_replies(secured_nats: NatsServerProcess) -> None:
    nc, errors, seen = await connect_collecting_errors(secured_nats.url, "service")
    try:
        await nc.subscribe("_INBOX_admin.>")
        await nc.flush()
        await asyncio.wait_for(seen.wait(), 5)
    finally:
        await nc.close()
    assert any("permissions violation" in e.lower() and "_inbox_admin" in e.lower() for e in errors), errors


async def test_a_client_on_the_default_inbox_prefix_gets_no_replies(
    secured_nats: NatsServerProcess,
) -> None:
    """Without its prefix a client may not subscribe to its inbox: it learns so at once
    (a permissions error), not by reading someone else's replies."""
    router = Router(RouterConfig(nats_url=secured_nats.url, http_port=0, nats_auth=auth("router")))
    await router.start()
    try:
        plain = NatsAuth(user="service", password=PASSWORDS["service"])
        async with ServiceClient(secured_nats.url, auth=plain, timeout=0.5, retries=0) as client:
            with pytest.raises(RegistryError):
                await client.register("orders", "orders-1")
    finally:
        await router.stop()


def test_an_inbox_prefix_with_wildcards_is_refused() -> None:
    for bad in ("_INBOX.>", "a.*", "", "a..b", "a b"):
        with pytest.raises(ValueError, match="inbox prefix"):
            NatsAuth(inbox_prefix=bad)
