"""`ServiceClient`: what a service embeds to register with the router and stay alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from protocol import (
    DEREGISTER_SUBJECT,
    GET_SUBJECT,
    LIST_SUBJECT,
    MAINTENANCE_SUBJECT,
    MAX_REQUEST_BYTES,
    REGISTER_SUBJECT,
    ErrorCode,
    GetServiceRequest,
    Instance,
    InstanceStatus,
    LeaseReply,
    LeaseRequest,
    ListServicesRequest,
    MaintenanceRequest,
    ProtocolError,
    RegisterReply,
    RegisterRequest,
    RegistryEvent,
    Reply,
    ServiceDetail,
    ServiceSummary,
    Status,
    decode_event,
    decode_get_reply,
    decode_instance_reply,
    decode_lease_reply,
    decode_list_reply,
    decode_maintenance_request,
    decode_register_reply,
    decode_register_request,
    encode_msgpack,
    events_subject,
)
from sdk.connection import DEAD_LINK_AFTER, GuardedClient, NatsAuth, NatsConnectError, connect
from sdk.errors import (
    ConflictError,
    InvalidRequestError,
    RegistryError,
    RouterTimeoutError,
    RouterUnavailableError,
    error_from_reply,
)
from sdk.leases import DEFAULT_HEARTBEAT_INTERVAL, LeaseKeeper
from sdk.requests import Exchange
from sdk.retry import Backoff

if TYPE_CHECKING:
    from sdk.cache import ServiceCache

__all__ = ["EventSubscription", "Registration", "ServiceClient", "ServiceStamp"]

log = logging.getLogger("ipc_router.sdk")


R = TypeVar("R", bound=Reply)

# Failures after which the same request may well succeed: worth a retry.
_TRANSIENT_NATS_ERRORS = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.FlushTimeoutError,
    ConnectionError,
)
_CONSISTENT_READ_ATTEMPTS = 5
_EXPIRY_SLACK = 0.25
"""Seconds past a lease deadline by which the router has usually applied it."""


@dataclass(frozen=True, slots=True)
class Registration:
    """A successful registration, as the router recorded it."""

    service_name: str
    instance_id: str
    status: InstanceStatus
    metadata: dict[str, Any]
    registered_at: datetime
    created: bool
    """True when this call created the record (201); False for a repeat (200)."""
    heartbeat_interval: float
    """How often the client renews the lease (told by the router)."""
    lease_ttl: float
    """Seconds without a heartbeat before the router marks the instance UNHEALTHY."""


@dataclass(frozen=True, slots=True)
class ServiceStamp:
    """Where one service stands in the router's history (`ServiceClient.service_stamp`).

    Two stamps of the same service are equal when nothing changed in between."""

    epoch: str
    """The router incarnation: a new one after every router restart."""
    revision: int
    """Registry-wide revision at the time of the read."""
    service_revision: int
    """Revision of the service's last change (0: none in this epoch)."""


class EventSubscription(Protocol):
    """A subscription made by `ServiceClient.subscribe_events`."""

    async def unsubscribe(self) -> None:
        """Stop receiving events."""
        ...


class ServiceClient:
    """Registers service instances with the router over NATS and keeps them alive.

    Use it as an async context manager::

        async with ServiceClient("nats://127.0.0.1:4222") as client:
            await client.register("orders", "orders-1", {"zone": "a"})
            ...  # the service's own work; heartbeats run in the background

    After `register()`, a background task renews every registered instance at the
    interval the router asks for, and registers it again (with jitter) when the router
    answers that it does not know it, after a router restart for instance. An instance
    an operator removed is not registered again: its heartbeat is answered that an
    operator removed it, the client stops renewing it, logs a warning and calls
    `on_removed(service_name, instance_id)`. Leaving the `async with` (or `close()`)
    deregisters the instances. With `deregister_on_exit=True` a SIGTERM does the same
    before the process exits.

    Each client has its own random session id, sent with every request, so that its
    retries are idempotent and only it can renew or deregister its instances. Pass
    `nc` to reuse a connected nats-py client (it is then left open on exit), or
    `auth=NatsAuth(...)` for a NATS server that wants credentials or TLS.

    `nats_url` is one NATS server or several, comma-separated (the client fails over
    between them). Each attempt of a request waits `timeout` seconds for its reply,
    and is sent again up to `retries` times: a router that failed over answers the
    next attempt (a registration repeated by the same client is idempotent). A
    connection that answers none of its pings for `dead_link_after` seconds (a link
    gone half-open) is replaced.
    """

    def __init__(
        self,
        nats_url: str = "nats://127.0.0.1:4222",
        *,
        nc: NatsClient | None = None,
        timeout: float = 1.0,
        retries: int = 4,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        heartbeat: bool = True,
        deregister_on_exit: bool = False,
        auth: NatsAuth | None = None,
        stale_holder_wait: float = 10.0,
        dead_link_after: float = DEAD_LINK_AFTER,
        on_removed: Callable[[str, str], None] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must be zero or more")
        self._nats_url = nats_url
        self._auth = auth or NatsAuth()
        self._nc = nc
        self._owns_connection = nc is None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout
        self._session_id = secrets.token_urlsafe(24)
        self._heartbeat_enabled = heartbeat
        self._deregister_on_exit = deregister_on_exit
        self.stale_holder_wait = stale_holder_wait
        """Longest wait for another holder's lease to run out before taking an id over."""
        self._dead_link_after = dead_link_after
        self._leases = LeaseKeeper(
            self._session_id,
            send_request=self._request_once,
            register_again=self._register,
            deregister_once=self._deregister_once,
            on_removed=on_removed,
        )
        self._exchange: Exchange | None = None
        self._sigterm_installed = False
        self._closing = False
        self._caches: set[ServiceCache] = set()

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect to NATS (no-op when already connected or given a client).

        Raises:
            RouterUnavailableError: NATS cannot be reached within `connect_timeout`.
        """
        if self._deregister_on_exit and not self._sigterm_installed:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._on_sigterm)
            self._sigterm_installed = True
        if self._nc is not None:
            return
        nc = GuardedClient()
        try:
            await connect(
                nc, self._nats_url, auth=self._auth, timeout=self._connect_timeout,
                dead_link_after=self._dead_link_after,
            )  # fmt: skip
        except NatsConnectError as error:
            raise RouterUnavailableError(str(error), code=ErrorCode.ROUTER_UNAVAILABLE) from None
        self._nc = nc

    async def close(self) -> None:
        """Stop heartbeats, deregister this client's instances (best effort, one try
        each) and close the NATS connection if this client opened it. Idempotent."""
        if self._closing:
            return
        self._closing = True
        # Beats stop first, so that no reply arriving while the caches close acts.
        await self._leases.stop()
        for cache in list(self._caches):
            await cache.close()
        await self._leases.close()
        if self._sigterm_installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
            self._sigterm_installed = False
        if self._exchange is not None:
            await self._exchange.close()
            self._exchange = None
        if self._nc is not None and self._owns_connection:
            nc, self._nc = self._nc, None
            await nc.close()

    # -- requests ----------------------------------------------------------------

    async def register(
        self,
        service_name: str,
        instance_id: str,
        metadata: dict[str, Any] | None = None,
    ) -> Registration:
        """Register one instance of `service_name` and keep it alive from now on.

        Raises:
            InvalidRequestError: 400, bad name or metadata (checked before sending too).
            ConflictError: 409, the instance id is held by another client that keeps
                renewing it. (A holder whose lease is about to run out, such as the
                previous run of a restarted service, is waited out, up to
                `stale_holder_wait` seconds: then the id is taken over, a 201.)
            RouterUnavailableError: 503, no router answered after the retries.
            RouterTimeoutError: 504, the router did not reply in time after the retries.
            RouterError: 500, the router failed.
        """
        metadata = dict(metadata or {})
        waited = 0.0
        renewed_at: datetime | None = None
        while True:
            try:
                reply = await self._register(service_name, instance_id, metadata)
                break
            except ConflictError as conflict:
                # A holder that stopped renewing (the previous run of a restarted
                # service) is waited out until its lease has run out; one that renews
                # meanwhile keeps the id, and the 409 is raised.
                existing = conflict.existing
                if existing is None or existing.last_heartbeat is None:
                    raise
                if renewed_at is not None and existing.last_heartbeat != renewed_at:
                    raise
                renewed_at = existing.last_heartbeat
                pause = self._wait_for(existing)
                if pause is None or waited + pause > self.stale_holder_wait:
                    raise
                await asyncio.sleep(pause)
                waited += pause
        instance = reply.instance
        assert instance is not None
        interval = reply.heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL
        self._leases.interval = interval
        self._leases.hold(service_name, instance_id, metadata)
        self._start_heartbeats()
        return Registration(
            service_name=instance.service_name,
            instance_id=instance.instance_id,
            status=instance.status,
            metadata=instance.metadata,
            registered_at=instance.registered_at,
            created=reply.status == Status.CREATED,
            heartbeat_interval=interval,
            lease_ttl=reply.lease_ttl or 3 * interval,
        )

    async def deregister(self, service_name: str, instance_id: str) -> None:
        """Take one instance offline and stop renewing it. Idempotent.

        Raises:
            RegistryError: 403 when another client owns the instance; 503/504 as for
                `register`.
        """
        await self._leases.release(service_name, instance_id)
        request = self._lease_request(service_name, instance_id)
        reply = await self._request(DEREGISTER_SUBJECT, _with_nonce(request), decode_lease_reply)
        if reply.status != Status.OK:
            raise error_from_reply(reply.status, reply.error)

    async def set_maintenance(
        self, service_name: str, instance_id: str, maintenance: bool, *, reason: str = ""
    ) -> Instance:
        """Put one of this client's instances into maintenance (`True`), or take it
        out: in maintenance it stays registered and keeps renewing its lease, but
        discovery (the ONLINE view, `ServiceCache`, `choose()`) leaves it out. For a
        graceful drain: enter maintenance, wait for the callers' caches to drop it
        (about one event's delivery), finish the work in flight, then deregister or
        exit. Returns the instance as the router recorded it. Idempotent.

        Raises:
            InvalidRequestError: 400, bad name, or a reason longer than 200 characters.
            RegistryError: 404 the router does not know the instance; 403 `not_owner`
                (another client registered it), 403 `maintenance_held` (an operator put
                it into maintenance: only an operator takes it out); 503/504 as for
                `register`.
        """
        request = MaintenanceRequest(
            service_name=service_name,
            instance_id=instance_id,
            session_id=self._session_id,
            maintenance=maintenance,
            reason=reason,
        )
        _check_locally(request, decode_maintenance_request)
        reply = await self._request(
            MAINTENANCE_SUBJECT,
            _with_nonce(request),
            decode_instance_reply,
            _about(service_name, instance_id),
        )
        if reply.status != Status.OK or reply.instance is None:
            raise error_from_reply(reply.status, reply.error)
        return reply.instance

    # -- discovery ---------------------------------------------------------------

    async def get_instances(
        self,
        service_name: str,
        status: InstanceStatus | None = InstanceStatus.ONLINE,
        metadata: dict[str, Any] | None = None,
        *,
        include_maintenance: bool | None = None,
    ) -> list[Instance]:
        """Every instance of `service_name` in `status` (None: any status) whose
        metadata has each key/value of `metadata`, sorted by instance id. An unknown
        service has no instances. Instances in maintenance are left out of the ONLINE
        view and listed in the others, unless `include_maintenance` says otherwise."""
        instances: list[Instance] = []
        async for page in self._service_pages(service_name, status, metadata, include_maintenance):
            instances.extend(page.instances)
        return instances

    async def get_service(
        self,
        service_name: str,
        status: InstanceStatus | None = InstanceStatus.ONLINE,
        metadata: dict[str, Any] | None = None,
    ) -> ServiceDetail:
        """Like `get_instances`, with the revision stamps of the snapshot (`epoch`,
        `revision`, `service_revision`) that a cache needs. If the service changes
        while the pages are read, it reads them again so the result is consistent."""
        for _ in range(_CONSISTENT_READ_ATTEMPTS):
            pages = [page async for page in self._service_pages(service_name, status, metadata, None)]
            first, last = pages[0], pages[-1]
            if (first.epoch, first.service_revision) == (last.epoch, last.service_revision):
                break
        # Still changing after several reads: return the last read, stamped with its
        # first page's revision, so that events since then are applied on top.
        instances = [i for page in pages for i in page.instances]
        return msgspec.structs.replace(
            last, instances=instances, next_cursor=None, service_revision=first.service_revision
        )

    async def _service_pages(
        self,
        service_name: str,
        status: InstanceStatus | None,
        metadata: dict[str, Any] | None,
        include_maintenance: bool | None,
        limit: int = 1000,
    ) -> AsyncIterator[ServiceDetail]:
        cursor: str | None = None
        while True:
            request = GetServiceRequest(
                service_name=service_name,
                status=status,
                metadata=metadata or {},
                limit=limit,
                cursor=cursor,
                include_maintenance=include_maintenance,
            )
            # status None is sent as nil ("any status"), not omitted: its default is ONLINE.
            reply = await self._request(
                GET_SUBJECT,
                _with_nonce(request),
                decode_get_reply,
                lambda reply: reply.result is None or reply.result.service_name == service_name,
            )
            if reply.status != Status.OK or reply.result is None:
                raise error_from_reply(reply.status, reply.error)
            yield reply.result
            cursor = reply.result.next_cursor
            if cursor is None:
                return

    async def service_stamp(self, service_name: str) -> ServiceStamp:
        """The revision stamps of `service_name` now, read cheaply (one instance at
        most is sent): compare them with those of a snapshot from `get_service()` to
        tell whether anything changed since.

        Raises:
            RegistryError: as for `get_service`.
        """
        async for page in self._service_pages(service_name, InstanceStatus.ONLINE, None, None, limit=1):
            return ServiceStamp(page.epoch, page.revision, page.service_revision)
        raise AssertionError("unreachable: _service_pages yields at least one page")

    async def list_services(self, status: InstanceStatus | None = None) -> list[ServiceSummary]:
        """Every service (with instances in `status`, if given) and its counts."""
        services: list[ServiceSummary] = []
        cursor: str | None = None
        while True:
            request = ListServicesRequest(status=status, limit=1000, cursor=cursor)
            reply = await self._request(LIST_SUBJECT, _with_nonce(request), decode_list_reply)
            if reply.status != Status.OK or reply.result is None:
                raise error_from_reply(reply.status, reply.error)
            services.extend(reply.result.services)
            cursor = reply.result.next_cursor
            if cursor is None:
                return services

    async def watch(self, service_name: str) -> AsyncIterator[RegistryEvent]:
        """Every change to `service_name` from now on, as the router publishes it.

        A bare stream: events missed while disconnected are not replayed (compare
        `previous_revision` with the last `revision` seen). `discover()` builds a
        gap-free view on top of it."""
        subscription = await self._subscribe(events_subject(service_name))
        try:
            async for msg in subscription.messages:
                event = _decode_event_or_none(msg)
                if event is not None:
                    yield event
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def discover(self, service_name: str, **options: Any) -> ServiceCache:
        """A started `ServiceCache` of the usable instances of `service_name` (ONLINE,
        not in maintenance): close it (or use `async with`) when done. `options` go to
        `ServiceCache`."""
        from sdk.cache import ServiceCache

        cache = ServiceCache(self, service_name, **options)
        await cache.start()
        self._caches.add(cache)
        return cache

    async def subscribe_events(
        self, service_name: str, callback: Callable[[RegistryEvent], None]
    ) -> EventSubscription:
        """Call `callback(event)` for every change to `service_name` from now on, in
        the order they arrive, until the returned subscription is unsubscribed.

        When this returns, the server knows the subscription: a snapshot read after
        it misses no event. Unreadable events are logged and skipped. The callback
        runs on the event loop and must not block.
        """

        async def on_event(msg: Msg) -> None:
            event = _decode_event_or_none(msg)
            if event is not None:
                callback(event)

        return await self._subscribe(events_subject(service_name), on_event)

    async def _subscribe(
        self, subject: str, callback: Callable[[Msg], Awaitable[None]] | None = None
    ) -> Subscription:
        self._check_open()
        if self._nc is None:
            await self.connect()
        assert self._nc is not None
        subscription = await self._nc.subscribe(subject, cb=callback)
        await self._nc.flush()  # the server knows the interest before we go on
        return subscription

    def _check_open(self) -> None:
        if self._closing:
            raise RegistryError(
                "this ServiceClient is closed; create a new one",
                status=Status.SERVICE_UNAVAILABLE,
                code="client_closed",
            )

    @property
    def registered(self) -> list[tuple[str, str]]:
        """(service_name, instance_id) of every instance this client keeps alive."""
        return self._leases.held

    async def _register(
        self, service_name: str, instance_id: str, metadata: dict[str, Any]
    ) -> RegisterReply:
        request = RegisterRequest(
            service_name=service_name,
            instance_id=instance_id,
            metadata=metadata,
            timestamp=time.time(),
            session_id=self._session_id,
        )
        # Names and types are checked here; the metadata size limit is the router's.
        _check_locally(
            request, lambda data: decode_register_request(data, max_metadata_bytes=MAX_REQUEST_BYTES)
        )
        reply = await self._request(
            REGISTER_SUBJECT,
            _with_nonce(request),
            decode_register_reply,
            _about(service_name, instance_id),
        )
        if reply.status in (Status.OK, Status.CREATED) and reply.instance is not None:
            return reply
        raise error_from_reply(reply.status, reply.error)

    async def _request(
        self,
        subject: str,
        build: Callable[[str], bytes],
        decode: Callable[[bytes], R],
        matches: Callable[[R], bool] | None = None,
    ) -> R:
        """One request with retries where a retry can help; returns the decoded reply
        (the one that echoes the request's nonce and satisfies `matches`).

        Retried, up to `retries` times: no reply within `timeout`, a lost connection,
        and a 503 reply (the router is overloaded, restarting, or a standby). Retried
        for as long as all the attempts could take, without counting as one: no
        responders (no router listens right now: a leader is being elected, a router
        restarts). Never retried: any other reply."""
        self._check_open()
        exchange = await self._exchange_now()
        loop = asyncio.get_running_loop()
        give_up_waiting = loop.time() + self.timeout * (self.retries + 1)
        last: RegistryError | None = None
        attempts = waits = 0
        while attempts <= self.retries:
            try:
                reply = await exchange.request(subject, build, decode, self.timeout, matches)
            except nats.errors.NoRespondersError:
                last = RouterUnavailableError(
                    f"no router is listening on {subject}; is ipc-router running?",
                    code=ErrorCode.ROUTER_UNAVAILABLE,
                )
                delay = self.backoff.delay(waits)
                waits += 1
                if loop.time() + delay >= give_up_waiting:
                    attempts = self.retries + 1  # waited long enough: give up
                    break
                await asyncio.sleep(delay)
                continue
            except nats.errors.TimeoutError:
                last = RouterTimeoutError(
                    f"the router did not reply within {self.timeout} s",
                    code=ErrorCode.ROUTER_TIMEOUT,
                )
            except _TRANSIENT_NATS_ERRORS as error:
                last = RouterUnavailableError(
                    f"the NATS connection failed: {error!r}", code=ErrorCode.ROUTER_UNAVAILABLE
                )
            else:
                if reply.status != Status.SERVICE_UNAVAILABLE:
                    return reply
                last = error_from_reply(reply.status, reply.error)
            attempts += 1
            if attempts <= self.retries:
                await asyncio.sleep(self.backoff.delay(attempts - 1))
        assert last is not None
        last.details.setdefault("attempts", attempts)
        raise last

    @staticmethod
    def _wait_for(existing: Instance) -> float | None:
        """How long to wait before asking again for an id held by `existing`: until its
        lease runs out, but at most a third of the lease (about one heartbeat), so that
        a holder that is alive shows it by renewing before we have waited long. None:
        the router did not say when the lease runs out."""
        if existing.lease_expires_at is None or existing.last_heartbeat is None:
            return None
        lease = (existing.lease_expires_at - existing.last_heartbeat).total_seconds()
        left = (existing.lease_expires_at - datetime.now(UTC)).total_seconds()
        log.info(
            "%s/%s is held by another client (a previous run?); its lease runs out in "
            "%.1f s unless it renews",
            existing.service_name,
            existing.instance_id,
            max(left, 0.0),
        )
        # A little past the deadline: the router's expiry timer runs in batches.
        return min(max(left, 0.0) + _EXPIRY_SLACK, max(lease / 3, _EXPIRY_SLACK))

    async def _exchange_now(self) -> Exchange:
        if self._nc is None:
            await self.connect()
        assert self._nc is not None
        if self._exchange is None:
            self._exchange = Exchange(self._nc)
        return self._exchange

    async def _request_once(self, subject: str, request: LeaseRequest, timeout: float) -> LeaseReply:
        """One lease request without retries (the lease keeper's heartbeats): the reply,
        or a `RegistryError` when none came."""
        if self._nc is None:
            raise RouterUnavailableError("not connected to NATS", code=ErrorCode.ROUTER_UNAVAILABLE)
        exchange = await self._exchange_now()
        try:
            return await exchange.request(subject, _with_nonce(request), decode_lease_reply, timeout)
        except nats.errors.TimeoutError:
            raise RouterTimeoutError(
                f"the router did not reply within {timeout} s", code=ErrorCode.ROUTER_TIMEOUT
            ) from None
        except (nats.errors.Error, *_TRANSIENT_NATS_ERRORS) as error:
            raise RouterUnavailableError(
                f"the request on {subject} failed: {error!r}", code=ErrorCode.ROUTER_UNAVAILABLE
            ) from None

    async def _deregister_once(self, service_name: str, instance_id: str) -> None:
        """Best effort, one try: a lease that is not deregistered runs out anyway."""
        if self._nc is None:
            return  # never connected: nothing was registered
        request = self._lease_request(service_name, instance_id)
        try:
            await self._request_once(DEREGISTER_SUBJECT, request, min(self.timeout, 2.0))
        except RegistryError as error:
            log.warning("deregistering %s/%s failed: %r", service_name, instance_id, error)

    def _lease_request(self, service_name: str, instance_id: str) -> LeaseRequest:
        return LeaseRequest(
            service_name=service_name, instance_id=instance_id, session_id=self._session_id
        )

    # -- heartbeats (the LeaseKeeper does the work) --------------------------------------

    def _start_heartbeats(self) -> None:
        if self._heartbeat_enabled and not self._closing:
            self._leases.start()

    def _on_sigterm(self) -> None:
        async def leave_then_exit() -> None:
            try:
                await self.close()
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        asyncio.get_running_loop().create_task(leave_then_exit())


def _with_nonce(request: msgspec.Struct) -> Callable[[str], bytes]:
    """The request encoded with a given nonce (a fresh one per attempt)."""
    return lambda nonce: encode_msgpack(msgspec.structs.replace(request, nonce=nonce))


def _check_locally(request: msgspec.Struct, decode: Callable[[bytes], object]) -> None:
    """Raise `InvalidRequestError` for a request the router's own decoder would refuse,
    without sending it."""
    try:
        decode(encode_msgpack(request))
    except ProtocolError as error:
        raise InvalidRequestError(
            error.message, status=error.status, code=error.code, details=error.details
        ) from None


class _InstanceReply(Protocol):
    @property
    def instance(self) -> Instance | None: ...


def _about(service_name: str, instance_id: str) -> Callable[[_InstanceReply], bool]:
    """Whether a reply is about the instance asked about (or names none: an error)."""
    return lambda reply: reply.instance is None or (
        reply.instance.service_name,
        reply.instance.instance_id,
    ) == (service_name, instance_id)


def _decode_event_or_none(msg: Msg) -> RegistryEvent | None:
    try:
        return decode_event(msg.data)
    except ProtocolError:
        log.warning("unreadable event on %s ignored", msg.subject)
        return None
