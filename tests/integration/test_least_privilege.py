"""deploy/nats-server.conf on the real nats-server: only the router may take the
request subjects or publish events, only the router may read or write the registry's
JetStream stream and the leadership key or talk on the routers' presence subject, and
registration still works end to end, with routers in memory and in stream mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nats
import pytest
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from actors.app import Router, RouterConfig
from actors.embedded_nats import NatsServerProcess
from actors.errors import StartupError
from actors.journal import JournalConfig
from actors.leadership import Role
from actors.nats_gateway import Presence
from protocol import REGISTER_SUBJECT, ROUTER_PRESENCE_SUBJECT, encode_msgpack, events_subject
from sdk import NatsAuth, RegistryError, RouterUnavailableError, ServiceClient
from sdk.connection import GuardedClient, connect, redact
from tests.support.nats_logs import LogEntries, violations
from tests.support.network import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nats-server.conf"
PASSWORDS = {
    "router": "router-secret-1",
    "router-store": "router-store-secret-4",
    "service": "service-secret-2",
    "admin": "admin-secret-3",
}
STREAM = JournalConfig().stream
"""The registry's stream (the one deploy/nats-server.conf grants the router)."""
BUCKET_STREAM = "KV_IPC_ROUTER_LEADER"
"""The stream behind the leadership KV bucket IPC_ROUTER_LEADER."""
LEADER_KEY = "$KV.IPC_ROUTER_LEADER.leader"
VIOLATION = "permissions violation"


@pytest.fixture
async def secured_nats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[NatsServerProcess]:
    for user, password in PASSWORDS.items():
        monkeypatch.setenv(f"{user.upper().replace('-', '_')}_NATS_PASSWORD", password)
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
    prefix = f"_INBOX_{user.replace('-', '_')}"
    return NatsAuth(user=user, password=PASSWORDS[user], inbox_prefix=prefix)


async def connect_collecting_errors(url: str, user: str) -> tuple[Any, list[str], asyncio.Event]:
    errors: list[str] = []
    seen = asyncio.Event()

    async def on_error(error: Exception) -> None:
        errors.append(str(error))
        seen.set()

    nc = await nats.connect(url, error_cb=on_error, **auth(user).connect_options())
    return nc, errors, seen


def router_config(
    url: str, store: Literal["memory", "stream"] = "memory", **options: Any
) -> RouterConfig:
    """A router as deploy/nats-server.conf has it: the `router` user answers (on the
    service's and the admin's inboxes), the `router-store` user keeps the stream."""
    return RouterConfig(
        nats_url=url, http_port=0, store=store, nats_auth=auth("router"),
        store_auth=auth("router-store"), reply_prefixes=("_INBOX_service", "_INBOX_admin"),
        **options,
    )  # fmt: skip


async def leader_among(routers: list[Router]) -> Router:
    """The router whose registry leads (waiting for one)."""
    found: list[Router] = []

    async def one() -> bool:
        for router in routers:
            status = await router.registry.status()
            if status is not None and status.role is Role.LEADER:
                found[:] = [router]
                return True
        return False

    await eventually(one, timeout=15, what="a leader")
    return found[0]


async def instance_ids(router: Router, service: str) -> list[str]:
    detail = await router.registry.get_service(service, missing_ok=True)
    return sorted(instance.instance_id for instance in detail.instances)


async def register_and_discover(client: ServiceClient) -> None:
    """What a service does: register orders-1, then find it by a get and by a cache."""
    info = await client.register("orders", "orders-1", {"zone": "a"})
    assert info.created
    assert [i.instance_id for i in await client.get_instances("orders")] == ["orders-1"]
    cache = await client.discover("orders")
    assert [i.instance_id for i in cache.instances] == ["orders-1"]


async def test_registration_works_with_least_privilege_users(
    server_log: LogEntries, secured_nats: NatsServerProcess
) -> None:
    router = Router(router_config(secured_nats.url))
    await router.start()
    try:
        async with ServiceClient(secured_nats.url, auth=auth("service")) as client:
            await register_and_discover(client)
        async with ServiceClient(secured_nats.url, auth=auth("admin")) as admin:
            assert [s.service_name for s in await admin.list_services()] == ["orders"]
    finally:
        await router.stop()
    assert violations(server_log) == []


async def test_routers_in_stream_mode_work_with_least_privilege_users(
    server_log: LogEntries, secured_nats: NatsServerProcess
) -> None:
    """Two routers as the `router` user on the JetStream registry: the leader stores,
    the standby follows, the standby takes over when the leader stops, and the server
    logs not one permissions violation on the way (the router's grants are exact)."""
    routers = [Router(router_config(secured_nats.url, "stream")) for _ in range(2)]
    started: list[Router] = []
    try:
        for router in routers:
            await router.start()
            started.append(router)
        leader = await leader_among(routers)
        standby = next(router for router in routers if router is not leader)
        async with ServiceClient(secured_nats.url, auth=auth("service")) as client:
            await register_and_discover(client)
            async with ServiceClient(secured_nats.url, auth=auth("admin")) as admin:
                assert [s.service_name for s in await admin.list_services()] == ["orders"]
            # The standby read the registration from the stream.
            await eventually(
                lambda: _has(standby, "orders", ["orders-1"]),
                timeout=10,
                what="the standby to follow",
            )
            # Takeover: the leader stops (it releases the key), the standby takes it.
            await leader.stop()
            started.remove(leader)
            await leader_among([standby])
            second = await client.register("orders", "orders-2", {"zone": "b"})
            assert second.created
            assert await instance_ids(standby, "orders") == ["orders-1", "orders-2"]
    finally:
        for router in started:
            await router.stop()
    assert violations(server_log) == []


async def _has(router: Router, service: str, expected: list[str]) -> bool:
    return await instance_ids(router, service) == expected


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
    assert any("permissions violation" in e.lower() and REGISTER_SUBJECT in e for e in errors), (
        errors
    )


async def test_a_service_user_cannot_forge_change_events(secured_nats: NatsServerProcess) -> None:
    nc, errors, seen = await connect_collecting_errors(secured_nats.url, "service")
    try:
        await nc.publish(events_subject("orders"), b"forged")
        await nc.flush()
        await asyncio.wait_for(seen.wait(), 5)
    finally:
        await nc.close()
    assert any("permissions violation" in e.lower() and "publish" in e.lower() for e in errors), (
        errors
    )


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


async def test_an_unreadable_creds_file_is_a_clear_error(
    secured_nats: NatsServerProcess, tmp_path: Path
) -> None:
    client = ServiceClient(secured_nats.url, auth=NatsAuth(creds=str(tmp_path / "missing.creds")))
    with pytest.raises(RouterUnavailableError, match="NATS"):
        await client.connect()
    router = Router(
        RouterConfig(
            nats_url=secured_nats.url, http_port=0, nats_auth=NatsAuth(creds=str(tmp_path / "x"))
        )
    )
    with pytest.raises(StartupError):
        await router.start()


async def test_a_cancelled_connect_leaves_no_client_behind() -> None:
    nc = GuardedClient()
    with pytest.raises(TimeoutError):
        # Nothing listens there: connect() would retry for 30 s; the caller gives up first.
        await asyncio.wait_for(
            connect(nc, f"nats://127.0.0.1:{free_port()}", auth=NatsAuth(), timeout=30), 0.3
        )
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
    assert any(
        "permissions violation" in e.lower() and "_inbox_admin" in e.lower() for e in errors
    ), errors


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


# -- the registry's stream, the leadership key and presence are the router's alone ----


@dataclass(frozen=True)
class Attempt:
    """Something only the router may do, tried by another user."""

    what: str
    kind: Literal["publish", "subscribe"]
    subject: str
    payload: bytes = b""


JS_API = "$JS.API"
CONSUMER = json.dumps(
    {"stream_name": STREAM, "config": {"deliver_policy": "all", "ack_policy": "none"}}
).encode()
FIRST = json.dumps({"seq": 1}).encode()
LAST_LEADER = json.dumps({"last_by_subj": LEADER_KEY}).encode()
INSTANCE = "ipc.registry.state.orders.orders-1"
ATTEMPTS = (
    # Reading the registry.
    Attempt("read the stream's subjects", "subscribe", "ipc.registry.state.>"),
    Attempt("read what the stream delivers to the routers", "subscribe", "_INBOX_router_store.>"),
    Attempt("read the router's replies", "subscribe", "_INBOX_router.>"),
    Attempt("ask for the stream's info", "publish", f"{JS_API}.STREAM.INFO.{STREAM}"),
    Attempt("create a consumer", "publish", f"{JS_API}.CONSUMER.CREATE.{STREAM}", CONSUMER),
    Attempt("create a named consumer", "publish", f"{JS_API}.CONSUMER.CREATE.{STREAM}.spy"),
    Attempt("get a message", "publish", f"{JS_API}.STREAM.MSG.GET.{STREAM}", FIRST),
    Attempt("direct-get a message", "publish", f"{JS_API}.DIRECT.GET.{STREAM}", FIRST),
    Attempt("direct-get an instance", "publish", f"{JS_API}.DIRECT.GET.{STREAM}.{INSTANCE}"),
    # Writing it.
    Attempt("write an instance", "publish", "ipc.registry.state.orders.forged", b"forged"),
    Attempt("purge the stream", "publish", f"{JS_API}.STREAM.PURGE.{STREAM}"),
    Attempt("delete the stream", "publish", f"{JS_API}.STREAM.DELETE.{STREAM}"),
    # The leadership key.
    Attempt("take the leadership key", "publish", LEADER_KEY, b'{"router": "forged"}'),
    Attempt("read the key", "publish", f"{JS_API}.STREAM.MSG.GET.{BUCKET_STREAM}", LAST_LEADER),
    Attempt("direct-get the key", "publish", f"{JS_API}.DIRECT.GET.{BUCKET_STREAM}.{LEADER_KEY}"),
    Attempt("watch the leadership key", "subscribe", "$KV.IPC_ROUTER_LEADER.>"),
    Attempt("ask for the bucket's info", "publish", f"{JS_API}.STREAM.INFO.{BUCKET_STREAM}"),
    # Presence among routers.
    Attempt("answer presence probes", "subscribe", ROUTER_PRESENCE_SUBJECT),
    Attempt(
        "send a presence probe",
        "publish",
        ROUTER_PRESENCE_SUBJECT,
        encode_msgpack(Presence(mode="memory")),
    ),
)


class Intruder:
    """One user's connection that tries what it may not, and records what came of it."""

    def __init__(self, nc: NatsClient, user: str, errors: list[str]) -> None:
        self.nc = nc
        self.user = user
        self.errors = errors
        self.received: dict[str, list[Msg]] = {}
        self.replies: dict[str, list[Msg]] = {}

    async def attempt(self, attempt: Attempt) -> None:
        """Try it; a publish carries a reply subject on the user's own inbox, so that an
        answer (JetStream's, a router's) would show that it went through."""
        seen: list[Msg] = []

        async def keep(msg: Msg) -> None:
            seen.append(msg)

        if attempt.kind == "subscribe":
            self.received[attempt.what] = seen
            await self.nc.subscribe(attempt.subject, cb=keep)
        else:
            self.replies[attempt.what] = seen
            inbox = self.nc.new_inbox()
            await self.nc.subscribe(inbox, cb=keep)
            await self.nc.publish(attempt.subject, attempt.payload, reply=inbox)
        await self.nc.flush()

    def refused(self, attempt: Attempt) -> bool:
        """The server said no to it, naming its subject (nats-py lowercases the
        server's message)."""
        verb = "subscription" if attempt.kind == "subscribe" else "publish"
        expected = f'{VIOLATION} for {verb} to "{attempt.subject}"'
        return any(expected.lower() in error.lower() for error in self.errors)


async def intruder(url: str, user: str) -> Intruder:
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    nc = await nats.connect(url, error_cb=on_error, **auth(user).connect_options())
    return Intruder(nc, user, errors)


@pytest.mark.parametrize("user", ["service", "admin"])
async def test_only_the_router_may_touch_the_stream_the_leadership_key_and_presence(
    secured_nats: NatsServerProcess, user: str
) -> None:
    """A service or admin user can neither read nor write the registry's stream, nor
    read or take the leadership key, nor answer or probe on the routers' presence
    subject: the server refuses each attempt (naming its subject), nothing reaches the
    user, and the routers' registry is unchanged."""
    routers = [Router(router_config(secured_nats.url, "stream")) for _ in range(2)]
    started: list[Router] = []
    spy = await intruder(secured_nats.url, user)
    try:
        for router in routers:
            await router.start()
            started.append(router)
        leader = await leader_among(routers)
        async with ServiceClient(secured_nats.url, auth=auth("service"), heartbeat=False) as client:
            await client.register("orders", "orders-1", {"zone": "a"})
            before = await leader.registry.status()
            assert before is not None
            for attempt in ATTEMPTS:
                await spy.attempt(attempt)
            await eventually(
                lambda: all(spy.refused(attempt) for attempt in ATTEMPTS),
                timeout=10,
                what=f"the server to refuse every attempt (it said {spy.errors})",
            )
            # The stream moves on (the router writes it, delivers it to the routers and
            # probes presence) while the refused subscriptions would be listening.
            await client.register("orders", "orders-2", {"zone": "b"})
            late = Router(router_config(secured_nats.url, "stream"))
            await late.start()  # no forged presence answer keeps it from starting
            started.append(late)
            await eventually(
                lambda: _has(late, "orders", ["orders-1", "orders-2"]),
                timeout=10,
                what="the new router to load",
            )
            await spy.nc.flush()
            after = await leader.registry.status()
    finally:
        await spy.nc.close()
        for router in reversed(started):
            await router.stop()
    not_refused = [attempt.what for attempt in ATTEMPTS if not spy.refused(attempt)]
    assert not_refused == [], (not_refused, spy.errors)
    leaked = {what: len(msgs) for what, msgs in {**spy.received, **spy.replies}.items() if msgs}
    assert leaked == {}, f"{user} got messages it must not: {leaked}"
    assert after is not None and after.role is Role.LEADER, "the forged writes moved the leader"
    # Exactly one change (orders-2) since `before`: nothing forged was stored.
    assert after.revision == before.revision + 1, (before, after)
    assert after.instances == 2


# -- a reply subject cannot turn a read into a write (issue 16) -------------------------


HIJACKS = (LEADER_KEY, "ipc.registry.state.i.orders.orders-1", f"{JS_API}.STREAM.PURGE.{STREAM}")


async def test_a_reply_subject_cannot_make_the_router_write_the_stream_or_the_key(
    server_log: LogEntries, secured_nats: NatsServerProcess
) -> None:
    """The read-only admin user asks `ipc.service.get` with the leadership key, an
    instance's stream subject or a JetStream API call as its reply subject, again and
    again. Before, the router answered there, with its rights: the key was overwritten
    (writes unavailable 9.9 s of 10), an acknowledged registration replaced. Now the
    router answers only on inboxes (and its answering user could not write there
    anyway): the key stays the leader's, the record stays, writes go on."""
    routers = [Router(router_config(secured_nats.url, "stream")) for _ in range(2)]
    started: list[Router] = []
    try:
        for router in routers:
            await router.start()
            started.append(router)
        leader = await leader_among(routers)
        async with ServiceClient(secured_nats.url, auth=auth("service")) as client:
            await client.register("orders", "orders-1", {"zone": "a"})
            before = await leader.registry.status()
            assert before is not None
            admin = await nats.connect(secured_nats.url, **auth("admin").connect_options())
            try:
                body = encode_msgpack({"service_name": "orders"})
                for n in range(300):
                    await admin.publish("ipc.service.get", body, reply=HIJACKS[n % len(HIJACKS)])
                    if n % 50 == 0:
                        await client.register("orders", f"during-{n}")  # writes go on
                await admin.flush()
            finally:
                await admin.close()
            await client.register("orders", "after")
            stats = [await router.nats_gateway.stats() for router in started]
            assert sum(s.dropped_reply_subject for s in stats if s) >= 300
            assert await leader_among(routers) is leader  # the key was never taken
            after = await leader.registry.status()
            assert after is not None and after.role is Role.LEADER
            detail = await leader.registry.get_service("orders")
            kept = next(i for i in detail.instances if i.instance_id == "orders-1")
            assert kept.metadata == {"zone": "a"}
            assert after.instances == before.instances + 7  # six during, one after
    finally:
        for router in reversed(started):
            await router.stop()
    assert violations(server_log) == []


async def test_the_answering_user_itself_cannot_write_the_stream_or_the_key(
    secured_nats: NatsServerProcess,
) -> None:
    """Even a router bug that answered on any subject could not: the `router` user has
    no JetStream rights and no allow_responses."""
    nc, errors, _ = await connect_collecting_errors(secured_nats.url, "router")
    try:
        for subject in HIJACKS:
            await nc.publish(subject, b"forged")
        await nc.flush()
        await eventually(lambda: len(errors) >= len(HIJACKS), timeout=5, what="every refusal")
    finally:
        await nc.close()
    for subject in HIJACKS:
        assert any(VIOLATION in e.lower() and subject.lower() in e.lower() for e in errors), (
            subject,
            errors,
        )
