"""Request/reply that only believes its own replies.

NATS delivers whatever anyone publishes on a reply subject. A client with publish
rights can make the router answer on another client's inbox (by naming that inbox
as the reply subject of its own request), and a reply taken at face value could
then tell a service its instance belongs to someone else, or hand a discovery call
an attacker's host. So every request carries a fresh, unguessable nonce; the router
echoes it; and `Exchange` accepts only the reply with that nonce (and, where the
caller says so, naming what was asked for), ignoring and counting anything else
that arrives on the request's inbox.

Replies arrive on one wildcard subscription under the connection's inbox prefix
(`inbox_prefix`, which the deployment gives each NATS user so that no other user can
read its replies), one subject per request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from protocol import ProtocolError, Reply, new_nonce

__all__ = ["Exchange"]

log = logging.getLogger("ipc_router.sdk")

_STATUS_HEADER = "Status"
_NO_RESPONDERS = "503"


R = TypeVar("R", bound=Reply)


@dataclass(slots=True)
class _Pending(Generic[R]):
    nonce: str
    decode: Callable[[bytes], R]
    matches: Callable[[R], bool] | None
    future: asyncio.Future[R]


class Exchange:
    """Requests over one NATS connection (see the module)."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix: str | None = None
        self._subscription: Subscription | None = None
        self._pending: dict[str, _Pending[Any]] = {}
        self._subscribing: asyncio.Lock = asyncio.Lock()
        self.ignored = 0
        """Replies dropped: not the requester's (wrong or missing nonce), unreadable,
        or about something else."""

    async def request(
        self,
        subject: str,
        build: Callable[[str], bytes],
        decode: Callable[[bytes], R],
        timeout: float,
        matches: Callable[[R], bool] | None = None,
    ) -> R:
        """Send `build(nonce)` on `subject` and wait for the reply that echoes the nonce
        (and satisfies `matches`); returns it decoded.

        Raises:
            nats.errors.TimeoutError: no such reply within `timeout`.
            nats.errors.NoRespondersError: nobody listens on `subject`.
            nats.errors.Error, ConnectionError: the connection failed.
        """
        prefix = await self._inbox()
        token = secrets.token_hex(8)
        nonce = new_nonce()
        loop = asyncio.get_running_loop()
        pending = _Pending(nonce, decode, matches, loop.create_future())
        self._pending[token] = pending
        try:
            await self._nc.publish(subject, build(nonce), reply=prefix + token)
            async with asyncio.timeout(timeout):  # (not wait_for: see ServiceCache._run)
                reply: R = await pending.future
            return reply
        except TimeoutError:
            raise nats.errors.TimeoutError from None
        finally:
            self._pending.pop(token, None)

    async def close(self) -> None:
        """Drop the reply subscription (pending requests time out)."""
        subscription, self._subscription = self._subscription, None
        self._prefix = None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except nats.errors.Error as error:
                log.debug("reply subscription not removed: %r", error)

    async def _inbox(self) -> str:
        if self._prefix is not None:
            return self._prefix
        async with self._subscribing:
            if self._prefix is None:
                prefix = self._nc.new_inbox() + "."
                self._subscription = await self._nc.subscribe(prefix + "*", cb=self._on_reply)
                self._prefix = prefix
        return self._prefix

    async def _on_reply(self, msg: Msg) -> None:
        assert self._prefix is not None
        pending = self._pending.get(msg.subject[len(self._prefix) :])
        if pending is None or pending.future.done():
            return  # late (its request timed out) or never ours
        if msg.headers and msg.headers.get(_STATUS_HEADER) == _NO_RESPONDERS and not msg.data:
            pending.future.set_exception(nats.errors.NoRespondersError())
            return
        try:
            reply = pending.decode(msg.data)
        except ProtocolError:
            self._ignore(msg, "unreadable")
            return
        if reply.nonce != pending.nonce:
            self._ignore(msg, "not the reply to this request (nonce)")
        elif pending.matches is not None and not pending.matches(reply):
            self._ignore(msg, "about another service or instance")
        else:
            pending.future.set_result(reply)

    def _ignore(self, msg: Msg, why: str) -> None:
        self.ignored += 1
        log.warning("ignored a reply on %s: %s", msg.subject, why)
