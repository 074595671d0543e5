"""ipc-router wire contract: msgspec Structs, error codes, subjects and codecs.

Imports nothing of the router or the SDK; both import it.
"""

from protocol.codec import (
    check_metadata,
    decode_register_reply,
    decode_register_request,
    encode_json,
    encode_msgpack,
    error_reply,
)
from protocol.errors import ErrorCode, ProtocolError, Status
from protocol.models import (
    INSTANCE_ID_MAX_LENGTH,
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    NAME_PATTERN,
    SERVICE_NAME_MAX_LENGTH,
    SESSION_ID_MAX_LENGTH,
    SESSION_ID_MIN_LENGTH,
    ErrorInfo,
    ErrorReply,
    Health,
    Instance,
    InstanceStatus,
    RegisterReply,
    RegisterRequest,
    ServiceDetail,
    ServiceList,
    ServiceSummary,
)
from protocol.subjects import REGISTER_SUBJECT, ROUTER_QUEUE_GROUP

__all__ = [
    "INSTANCE_ID_MAX_LENGTH",
    "METADATA_MAX_BYTES",
    "METADATA_MAX_DEPTH",
    "NAME_PATTERN",
    "REGISTER_SUBJECT",
    "ROUTER_QUEUE_GROUP",
    "SERVICE_NAME_MAX_LENGTH",
    "SESSION_ID_MAX_LENGTH",
    "SESSION_ID_MIN_LENGTH",
    "ErrorCode",
    "ErrorInfo",
    "ErrorReply",
    "Health",
    "Instance",
    "InstanceStatus",
    "ProtocolError",
    "RegisterReply",
    "RegisterRequest",
    "ServiceDetail",
    "ServiceList",
    "ServiceSummary",
    "Status",
    "check_metadata",
    "decode_register_reply",
    "decode_register_request",
    "encode_json",
    "encode_msgpack",
    "error_reply",
]
