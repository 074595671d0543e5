"""An operator's writes (maintenance, deregistration) as commands routers pass on.

The admin API runs on every router, but only the leader writes. A standby that takes
an operator's write signs it and sends it to the leader on `ipc.router.admin`; the
leader applies it only if the signature holds, it is recent and it was not seen
before. The key comes from the registry stream's own secret (its metadata): whoever
can read that can write the stream itself, so a signed command grants nothing more,
while any other user of the bus (every service is untrusted) cannot forge one, and
cannot replay one it overheard.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from enum import StrEnum
from typing import Annotated

import msgspec
from msgspec import Meta

from protocol import (
    ErrorCode,
    MaintenanceReason,
    OperatorName,
    ProtocolError,
    Status,
    new_nonce,
)
from protocol.models import InstanceId, Nonce, ServiceName

__all__ = [
    "AdminAction",
    "AdminCommand",
    "RecentNonces",
    "admin_key",
    "open_command",
    "seal_command",
]

COMMAND_WINDOW = 30.0
"""Seconds a signed command stays valid either side of its issue time (the routers'
clocks must agree to within this: NTP does far better)."""
_MAX_SEALED_BYTES = 2048


class AdminAction(StrEnum):
    """What an operator asked for."""

    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_OFF = "maintenance_off"
    DEREGISTER = "deregister"


class AdminCommand(msgspec.Struct, frozen=True, kw_only=True):
    """One operator write, as the admin API took it."""

    action: AdminAction
    service_name: ServiceName
    instance_id: InstanceId
    reason: MaintenanceReason = ""
    by: OperatorName = "admin"
    issued_at: Annotated[float, Meta(ge=0.0)] = 0.0
    nonce: Nonce | None = None


class _Sealed(msgspec.Struct, frozen=True):
    command: Annotated[bytes, Meta(max_length=_MAX_SEALED_BYTES)]
    mac: Annotated[bytes, Meta(min_length=32, max_length=32)]


_command_decoder = msgspec.msgpack.Decoder(AdminCommand)
_sealed_decoder = msgspec.msgpack.Decoder(_Sealed)
_encoder = msgspec.msgpack.Encoder()


def admin_key(stream_secret: bytes) -> bytes:
    """The key that signs operator commands among the routers of one registry."""
    return hmac.new(stream_secret, b"ipc-router admin commands v1", hashlib.sha256).digest()


def seal_command(command: AdminCommand, key: bytes, now: float | None = None) -> bytes:
    """`command`, stamped with the time and a fresh nonce, signed with `key`."""
    stamped = msgspec.structs.replace(
        command, issued_at=time.time() if now is None else now, nonce=new_nonce()
    )
    body = _encoder.encode(stamped)
    return _encoder.encode(_Sealed(body, hmac.new(key, body, hashlib.sha256).digest()))


def open_command(
    data: bytes, key: bytes, seen: RecentNonces, now: float | None = None
) -> AdminCommand:
    """The command in `data`, if signed with `key`, recent, and not seen before.

    Raises:
        ProtocolError: 403 `unauthorized` otherwise (the message says which check
            failed; nothing in it helps a forger).
    """
    now = time.time() if now is None else now
    try:
        sealed = _sealed_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise _refused("not a signed command") from None
    expected = hmac.new(key, sealed.command, hashlib.sha256).digest()
    if not hmac.compare_digest(sealed.mac, expected):
        raise _refused("bad signature")
    try:
        command = _command_decoder.decode(sealed.command)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise _refused("unreadable command") from None
    if command.nonce is None or abs(now - command.issued_at) > COMMAND_WINDOW:
        raise _refused("expired (or the routers' clocks disagree)")
    if not seen.add(command.nonce, now):
        raise _refused("already applied (a replay)")
    return command


class RecentNonces:
    """Nonces of the commands applied within the last `COMMAND_WINDOW` (a command older
    than that is refused anyway), at most `capacity` of them."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._capacity = capacity

    def add(self, nonce: str, now: float) -> bool:
        """Remember `nonce`; False if it was seen within the window, or if the table is
        full of commands still within it (a flood of them is refused, not forgotten)."""
        seen = self._seen
        while seen and next(iter(seen.values())) < now - 2 * COMMAND_WINDOW:
            seen.popitem(last=False)
        if nonce in seen or len(seen) >= self._capacity:
            return False
        seen[nonce] = now
        return True

    def __len__(self) -> int:
        return len(self._seen)


def _refused(why: str) -> ProtocolError:
    return ProtocolError(
        Status.FORBIDDEN,
        ErrorCode.UNAUTHORIZED,
        f"Operator command refused: {why}. Routers pass operator writes on to the leader "
        "signed with their registry's key; nothing else is taken on this subject.",
    )
