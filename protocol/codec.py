"""Module-level codecs, built once and reused on both sides of the wire.

msgpack on NATS, JSON on HTTP. Decoding goes straight into the typed Structs;
anything that does not fit becomes a `ProtocolError` with status 400 and the
offending field path in `details.field`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from datetime import date, datetime
from typing import Any, NoReturn, TypeVar

import msgspec

from protocol.errors import ErrorCode, ProtocolError, Status
from protocol.models import (
    INSTANCE_ID_MAX_LENGTH,
    MAX_REQUEST_BYTES,
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    SERVICE_NAME_MAX_LENGTH,
    SESSION_ID_MAX_LENGTH,
    SESSION_ID_MIN_LENGTH,
    ErrorInfo,
    ErrorReply,
    GetServiceReply,
    GetServiceRequest,
    InstanceReply,
    LeaseReply,
    LeaseRequest,
    ListServicesReply,
    ListServicesRequest,
    MaintenanceRequest,
    Nonce,
    RegisterReply,
    RegisterRequest,
    RegistryEvent,
)

T = TypeVar("T")

_FIELD_HINTS = {
    "$.service_name": (
        f"service_name must be a string of 1-{SERVICE_NAME_MAX_LENGTH} characters "
        "from A-Z, a-z, 0-9, '_' and '-'"
    ),
    "$.instance_id": (
        f"instance_id must be a string of 1-{INSTANCE_ID_MAX_LENGTH} characters "
        "from A-Z, a-z, 0-9, '_' and '-'"
    ),
    "$.session_id": (
        f"session_id must be a string of {SESSION_ID_MIN_LENGTH}-{SESSION_ID_MAX_LENGTH} "
        "characters from A-Z, a-z, 0-9, '_' and '-'"
    ),
    "$.metadata": "metadata must be a map with string keys",
    "$.timestamp": "timestamp must be Unix seconds (float or int) or a msgpack timestamp",
}
_AT_PATH = re.compile(r"`(\$[^`]*)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`")


def _reject_extension(code: int, data: memoryview) -> NoReturn:
    raise ValueError(f"msgpack extension type {code} is not allowed")


msgpack_encoder = msgspec.msgpack.Encoder()
json_encoder = msgspec.json.Encoder()
_register_request_decoder = msgspec.msgpack.Decoder(RegisterRequest, ext_hook=_reject_extension)
_lease_request_decoder = msgspec.msgpack.Decoder(LeaseRequest, ext_hook=_reject_extension)
_maintenance_request_decoder = msgspec.msgpack.Decoder(
    MaintenanceRequest, ext_hook=_reject_extension
)
_list_request_decoder = msgspec.msgpack.Decoder(ListServicesRequest, ext_hook=_reject_extension)
_get_request_decoder = msgspec.msgpack.Decoder(GetServiceRequest, ext_hook=_reject_extension)
_register_reply_decoder = msgspec.msgpack.Decoder(RegisterReply)
_lease_reply_decoder = msgspec.msgpack.Decoder(LeaseReply)
_instance_reply_decoder = msgspec.msgpack.Decoder(InstanceReply)
_list_reply_decoder = msgspec.msgpack.Decoder(ListServicesReply)
_get_reply_decoder = msgspec.msgpack.Decoder(GetServiceReply)
_event_decoder = msgspec.msgpack.Decoder(RegistryEvent)


def validation_path(error: msgspec.ValidationError) -> str:
    """The path of the offending field in a msgspec validation error (`$.metadata.zone`,
    `$.instances[0]`), `$.name` for a missing field, `$` when the whole value is wrong.

    msgspec puts the path only in the message text: this is the one place that reads it.
    """
    message = str(error)
    if match := _AT_PATH.search(message):
        return match.group(1)
    if match := _MISSING_FIELD.match(message):
        return f"$.{match.group(1)}"
    return "$"


def top_field(path: str) -> str:
    """The top-level field of a path: `$.metadata.zone[0]` -> `metadata` (`$` -> ``)."""
    return path[2:].split(".", 1)[0].split("[", 1)[0]


def _invalid(code: ErrorCode, message: str, field: str) -> ProtocolError:
    return ProtocolError(Status.BAD_REQUEST, code, message, {"field": field})


def _decode_request(decoder: msgspec.msgpack.Decoder[T], data: bytes) -> T:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        reason = str(exc)
        field = validation_path(exc)
        if field == "$":
            raise _invalid(
                ErrorCode.INVALID_PAYLOAD,
                f"The request must be a msgpack map: {reason}.",
                field,
            ) from None
        hint = _FIELD_HINTS.get(f"$.{top_field(field)}")
        message = f"Invalid field {field}: {reason}." + (f" Hint: {hint}." if hint else "")
        raise _invalid(ErrorCode.INVALID_FIELD, message, field) from None
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise _invalid(
            ErrorCode.INVALID_PAYLOAD,
            f"The request is not valid msgpack: {exc}.",
            "$",
        ) from None


def check_payload_size(data: bytes, limit: int = MAX_REQUEST_BYTES) -> None:
    """Refuse a request larger than `limit` before spending any work on it.

    Raises:
        ProtocolError: 413 `payload_too_large`.
    """
    if len(data) > limit:
        raise ProtocolError(
            Status.PAYLOAD_TOO_LARGE,
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The request is {len(data)} bytes; the router accepts at most {limit}. "
            "Keep metadata small (it is limited separately).",
            {"field": "$", "size": len(data), "limit": limit},
        )


def decode_register_request(
    data: bytes, max_metadata_bytes: int = METADATA_MAX_BYTES
) -> RegisterRequest:
    """Decode and validate a registration request.

    Raises:
        ProtocolError: status 413 `payload_too_large`, or 400 with code
            `invalid_payload`, `invalid_field` or `metadata_too_large`, and
            `details.field` naming the offending path.
    """
    check_payload_size(data)
    request = _decode_request(_register_request_decoder, data)
    if isinstance(request.timestamp, float) and not math.isfinite(request.timestamp):
        raise _invalid(
            ErrorCode.INVALID_FIELD,
            "Invalid field $.timestamp: numbers must be finite (NaN and infinity have no "
            f"JSON form). Hint: {_FIELD_HINTS['$.timestamp']}.",
            "$.timestamp",
        )
    if request.metadata:
        check_metadata(request.metadata, len(data), max_metadata_bytes)
    return request


def decode_lease_request(data: bytes) -> LeaseRequest:
    """Decode and validate a heartbeat or deregistration request (400 as above)."""
    check_payload_size(data)
    return _decode_request(_lease_request_decoder, data)


def decode_maintenance_request(data: bytes) -> MaintenanceRequest:
    """Decode and validate an `ipc.service.maintenance` request (400 as above)."""
    check_payload_size(data)
    return _decode_request(_maintenance_request_decoder, data)


def decode_list_request(data: bytes) -> ListServicesRequest:
    """Decode and validate an `ipc.service.list` request (400 as above)."""
    check_payload_size(data)
    return _decode_request(_list_request_decoder, data)


def decode_get_request(data: bytes) -> GetServiceRequest:
    """Decode and validate an `ipc.service.get` request (400 as above)."""
    check_payload_size(data)
    return _decode_request(_get_request_decoder, data)


_CURSOR_VERSION = b"\x02"
_CURSOR_MAC_BYTES = 8
_CURSOR_CHARS = re.compile(r"[A-Za-z0-9_-]+")


def encode_cursor(last_key: str, secret: bytes) -> str:
    """An opaque cursor that resumes a listing after `last_key`, signed with `secret`
    so that only cursors this registry handed out are accepted."""
    key = last_key.encode()
    mac = hmac.new(secret, _CURSOR_VERSION + key, hashlib.sha256).digest()[:_CURSOR_MAC_BYTES]
    return base64.urlsafe_b64encode(_CURSOR_VERSION + key + mac).decode().rstrip("=")


def decode_cursor(cursor: str, secret: bytes, field: str = "$.cursor") -> str:
    """The key a cursor resumes after.

    Raises:
        ProtocolError: 400 `invalid_field` when the cursor was not made by this
            registry (forged, altered, or from another registry).
    """
    try:
        if _CURSOR_CHARS.fullmatch(cursor):  # strict: one cursor, one spelling
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            body, mac = raw[:-_CURSOR_MAC_BYTES], raw[-_CURSOR_MAC_BYTES:]
            expected = hmac.new(secret, body, hashlib.sha256).digest()[:_CURSOR_MAC_BYTES]
            if len(body) > 1 and body[:1] == _CURSOR_VERSION and hmac.compare_digest(mac, expected):
                key = body[1:].decode()  # (not UTF-8: not a cursor we made)
                # One spelling only (base64 leaves slack in the last character).
                if base64.urlsafe_b64encode(raw).decode().rstrip("=") == cursor:
                    return key
    except (ValueError, UnicodeDecodeError):
        pass
    raise _invalid(
        ErrorCode.INVALID_FIELD,
        f"Invalid field {field}: not a cursor from this API. Pass the next_cursor of the "
        "previous page unchanged, or omit it for the first page.",
        field,
    )


def check_metadata(
    metadata: dict[str, Any],
    payload_size: int | None = None,
    max_bytes: int = METADATA_MAX_BYTES,
) -> None:
    """Check that metadata is not too large, JSON-compatible and not too deep.

    `payload_size`, when given, is the size of the whole request: metadata cannot be
    much larger, so the re-encoding that measures it is skipped for small requests.
    The size is checked first: it is measured in C, while the value walk is Python
    and must not run over a megabyte of hostile input.
    """
    # Re-encoding can grow a foreign encoding by at most 9/5 (float32 -> float64), so a
    # request that small cannot hold metadata over the limit: skip the measurement.
    if payload_size is None or payload_size * 9 // 5 > max_bytes:
        size = len(msgpack_encoder.encode(metadata))
        if size > max_bytes:
            raise _invalid(
                ErrorCode.METADATA_TOO_LARGE,
                f"metadata is {size} bytes once msgpack-encoded; the limit is "
                f"{max_bytes} bytes. Keep large data elsewhere and store a reference.",
                "$.metadata",
            )
    _check_metadata_values(metadata)


_SCALARS = (str, int, float, bool, type(None))


def _check_metadata_values(metadata: dict[str, Any]) -> None:
    # Fast path: flat maps of strings, ints and bools (the common case) need no walk.
    for value in metadata.values():
        kind = type(value)
        if kind is not str and kind is not int and kind is not bool:
            break
    else:
        return
    stack: list[tuple[Any, str, int]] = [(metadata, "$.metadata", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = ((f"[{i}]", item) for i, item in enumerate(value))
        else:
            continue
        if depth > METADATA_MAX_DEPTH:
            raise _invalid(
                ErrorCode.INVALID_FIELD,
                f"Invalid field {path}: metadata may nest arrays and maps at most "
                f"{METADATA_MAX_DEPTH} levels deep.",
                path,
            )
        for key, item in items:
            if isinstance(value, dict):
                if not isinstance(key, str):
                    raise _invalid(
                        ErrorCode.INVALID_FIELD,
                        f"Invalid field {path}: map keys inside metadata must be strings, "
                        f"got {type(key).__name__}.",
                        path,
                    )
                item_path = f"{path}.{key}"
            else:
                item_path = f"{path}{key}"
            if isinstance(item, (dict, list)):
                stack.append((item, item_path, depth + 1))
            elif isinstance(item, float) and not math.isfinite(item):
                raise _invalid(
                    ErrorCode.INVALID_FIELD,
                    f"Invalid field {item_path}: metadata numbers must be finite "
                    "(NaN and infinity have no JSON form).",
                    item_path,
                )
            elif not isinstance(item, _SCALARS) or isinstance(item, (datetime, date)):
                raise _invalid(
                    ErrorCode.INVALID_FIELD,
                    f"Invalid field {item_path}: metadata values must be nil, bool, int, "
                    f"float, str, array or map, got {type(item).__name__}.",
                    item_path,
                )


def error_reply(error: ProtocolError, nonce: str | None = None) -> ErrorReply:
    """The wire body for an error (echoing the request's `nonce`, if known)."""
    return ErrorReply(
        status=int(error.status),
        error=ErrorInfo(code=str(error.code), message=error.message, details=error.details),
        nonce=nonce,
    )


class _NonceOnly(msgspec.Struct):
    nonce: Nonce | None = None


_nonce_decoder = msgspec.msgpack.Decoder(_NonceOnly, ext_hook=_reject_extension)


def peek_nonce(data: bytes) -> str | None:
    """The `nonce` of a request that failed validation, if it has a valid one, so
    that even its error reply reaches the requester's check."""
    if len(data) > MAX_REQUEST_BYTES:
        return None
    try:
        return _nonce_decoder.decode(data).nonce
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None


def new_nonce() -> str:
    """A fresh, unguessable request nonce (22 characters)."""
    return secrets.token_urlsafe(16)


def encode_msgpack(value: Any) -> bytes:
    """Encode any wire Struct as msgpack."""
    return msgpack_encoder.encode(value)


def encode_json(value: Any) -> bytes:
    """Encode any wire Struct as JSON."""
    return json_encoder.encode(value)


def _decode_reply(decoder: msgspec.msgpack.Decoder[T], data: bytes) -> T:
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(
            Status.INTERNAL_ERROR,
            ErrorCode.INTERNAL_ERROR,
            f"The router sent a reply this client cannot read: {exc}. "
            "Check that the router and SDK versions are compatible.",
        ) from None


def decode_register_reply(data: bytes) -> RegisterReply:
    """Decode a registration reply (used by the SDK).

    Raises:
        ProtocolError: status 500 when the reply is not a valid `RegisterReply`.
    """
    return _decode_reply(_register_reply_decoder, data)


def decode_lease_reply(data: bytes) -> LeaseReply:
    """Decode a heartbeat or deregistration reply (500 as above when unreadable)."""
    return _decode_reply(_lease_reply_decoder, data)


def decode_instance_reply(data: bytes) -> InstanceReply:
    """Decode a maintenance or operator reply (500 when unreadable)."""
    return _decode_reply(_instance_reply_decoder, data)


def decode_list_reply(data: bytes) -> ListServicesReply:
    """Decode an `ipc.service.list` reply (500 when unreadable)."""
    return _decode_reply(_list_reply_decoder, data)


def decode_get_reply(data: bytes) -> GetServiceReply:
    """Decode an `ipc.service.get` reply (500 when unreadable)."""
    return _decode_reply(_get_reply_decoder, data)


def decode_event(data: bytes) -> RegistryEvent:
    """Decode a change event (500 when unreadable)."""
    return _decode_reply(_event_decoder, data)
