"""The admin API's OpenAPI 3.1 document; its schemas come from the msgspec Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol import (
    INSTANCE_ID_MAX_LENGTH,
    MAINTENANCE_REASON_MAX_LENGTH,
    NAME_PATTERN,
    SERVICE_NAME_MAX_LENGTH,
    ErrorReply,
    Health,
    InstanceReply,
    RegistryEvent,
    ServiceDetail,
    ServiceList,
)

__all__ = ["ADMIN_BASE", "EVENTS_PATH", "METRICS_PATH", "openapi_document"]

ADMIN_BASE = "/api/v1/admin"
EVENTS_PATH = f"{ADMIN_BASE}/events"
METRICS_PATH = "/metrics"
_REF = "#/components/schemas/{name}"
_SERVICE_NAME_SCHEMA = {
    "type": "string",
    "pattern": NAME_PATTERN.replace("(?!\\n)", ""),
    "minLength": 1,
    "maxLength": SERVICE_NAME_MAX_LENGTH,
}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name=schema_name)}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("ErrorReply", description)


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_STATUS = _query(
    "status",
    "Only instances in this status; letter case does not matter; `any` for every status. "
    "Default: every status.",
    {
        "type": "string",
        "enum": [
            *(name for value in ("ONLINE", "UNHEALTHY", "OFFLINE", "ANY") for name in (value, value.lower()))
        ],
    },
)
_LIMIT = _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100})
_CURSOR = _query(
    "cursor", "The `next_cursor` of the previous page, unchanged.", {"type": "string", "maxLength": 256}
)
_INCLUDE_MAINTENANCE = _query(
    "include_maintenance",
    "Whether instances in maintenance are listed. Default: not with `status=online` (the "
    "view discovery uses: they take no traffic), listed otherwise.",
    {"type": "string", "enum": ["true", "false"]},
)


def _path_name(name: str, max_length: int) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {
            "type": "string",
            "pattern": NAME_PATTERN.replace("(?!\\n)", ""),
            "minLength": 1,
            "maxLength": max_length,
        },
    }


_INSTANCE_PATH = [
    _path_name("service_name", SERVICE_NAME_MAX_LENGTH),
    _path_name("instance_id", INSTANCE_ID_MAX_LENGTH),
]
_WRITES_DESCRIPTION = (
    "An operator's write, applied by the router that leads (a router that does not "
    "passes it on, signed, over NATS), logged with who made it (`operator_write`) and "
    "published as a change event."
)


def _write_operations(errors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """DELETE an instance; PUT and DELETE its maintenance."""
    write_errors = {
        **errors,
        "403": _error("Refused (`maintenance_held`, ...)"),
        "404": _error("No such live instance (`instance_not_found`) or route"),
        "504": _error("The leader did not answer in time: look before trying again"),
    }
    reply = _json("InstanceReply", "The instance as it is after the change")
    base = f"{ADMIN_BASE}/services/{{service_name}}/instances/{{instance_id}}"
    return {
        base: {
            "delete": {
                "operationId": "removeInstance",
                "summary": "Deregister an instance now (OFFLINE; the event's reason is `admin`)",
                "description": _WRITES_DESCRIPTION + " Its client's next heartbeat is "
                "answered 404 `instance_removed`, and the SDK does not register it again by "
                "itself. Repeating it is harmless.",
                "parameters": _INSTANCE_PATH,
                "responses": {"200": reply, **write_errors},
            }
        },
        f"{base}/maintenance": {
            "put": {
                "operationId": "enterMaintenance",
                "summary": "Put an instance into maintenance (out of discovery, still registered)",
                "description": _WRITES_DESCRIPTION + " Only an operator ends an operator's "
                "maintenance. Repeating it is harmless; another reason replaces the reason.",
                "parameters": _INSTANCE_PATH,
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "reason": {
                                        "type": "string",
                                        "maxLength": MAINTENANCE_REASON_MAX_LENGTH,
                                    }
                                },
                                "additionalProperties": False,
                            }
                        }
                    },
                },
                "responses": {
                    "200": reply,
                    **write_errors,
                    "413": _error("The body is larger than 4096 bytes"),
                },
            },
            "delete": {
                "operationId": "leaveMaintenance",
                "summary": "Take an instance out of maintenance",
                "description": _WRITES_DESCRIPTION + " Repeating it is harmless.",
                "parameters": _INSTANCE_PATH,
                "responses": {"200": reply, **write_errors},
            },
        },
    }


_META_FILTERS = (
    "Metadata filters: `meta.<key>=<value>` (any number of them) keeps only instances whose "
    "metadata has that key with that value; a number, bool or null matches its JSON text, "
    "so `meta.replicas=3` finds `{\"replicas\": 3}`. (OpenAPI has no form for a parameter "
    "name prefix, so they are described here rather than listed.)"
)


_EVENTS_DESCRIPTION = """\
The registry's change events, as they are published on `ipc.registry.events.<service>`,
as Server-Sent Events (`text/event-stream`); every router serves it, leader or standby.

- A change: `id: <revision>` and `data: <RegistryEvent as JSON>` (see the
  `RegistryEvent` schema), in revision order. Revisions increase but are not contiguous.
- `event: resync` with `data: {"reason", "epoch", "revision"}`: read a snapshot
  (`GET /services`, `GET /services/{name}`; at least at `revision` when it is not null),
  then apply the events that follow whose revision is above the snapshot's. A stream
  starts with it unless it continues an earlier one (see `Last-Event-ID`), and it comes
  again whenever the router may have missed events.
- `: keepalive` comments after 15 s of silence.

A client that is too slow to read its events is disconnected (it reconnects with
`Last-Event-ID`); each router serves a bounded number of streams (503 beyond).
An `epoch` that changes means a registry that started afresh: read a snapshot."""


def _events_operation(errors: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": "streamEvents",
            "summary": "The registry's change events as Server-Sent Events",
            "description": _EVENTS_DESCRIPTION,
            "parameters": [
                _query(
                    "service",
                    "Only this service's events (default: every service's).",
                    _SERVICE_NAME_SCHEMA,
                ),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "The `id` of the last event received: the stream continues "
                    "after it when this router still holds every event since, and starts with "
                    "`event: resync` otherwise.",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "An endless stream of events (see above)",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **errors,
                "503": _error("Too many event streams on this router, or its event feed is restarting: retry"),
            },
        }
    }


def _metrics_operation(errors: dict[str, Any]) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    return {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "description": "The router's metrics in the Prometheus text format (OpenMetrics when "
            "the `Accept` header asks for `application/openmetrics-text`), read from the actors "
            "at scrape time.",
            "responses": {
                "200": {
                    "description": "Metrics",
                    "content": {"text/plain": text, "application/openmetrics-text": text},
                },
                **{k: v for k, v in errors.items() if k in ("401", "404", "405", "500")},
            },
        }
    }


def openapi_document(
    version: str, *, token_required: bool = False, events: bool = False, metrics: bool = False
) -> dict[str, Any]:
    """Build the document (once, at app start). `events` and `metrics`: the app also
    serves the event stream, and the Prometheus metrics."""
    _, components = msgspec.json.schema_components(
        [
            ServiceList,
            ServiceDetail,
            ErrorReply,
            Health,
            InstanceReply,
            *([RegistryEvent] if events else []),
        ],
        ref_template=_REF,
    )
    errors = {
        "400": _error("Invalid query parameter (`error.details.field` names it)"),
        "404": _error("No such route (`route_not_found`)"),
        "405": _error("Method not allowed (see the `Allow` header)"),
        "500": _error("Unexpected error"),
        "503": _error("Registry unavailable (restarting or overloaded): retry"),
    }
    if token_required:
        errors["401"] = _error("Missing or wrong bearer token")
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "ipc-router admin API",
            "version": version,
            "description": "The services registered with the router, and an operator's "
            "writes: maintenance and deregistration. Every error has the body "
            "`{status, error: {code, message, details}}`.",
        },
        "paths": {
            f"{ADMIN_BASE}/services": {
                "get": {
                    "operationId": "listServices",
                    "summary": "A page of registered services with instance counts per status",
                    "parameters": [_STATUS, _LIMIT, _CURSOR],
                    "responses": {"200": _json("ServiceList", "A page of services"), **errors},
                }
            },
            f"{ADMIN_BASE}/services/{{service_name}}": {
                "get": {
                    "operationId": "getService",
                    "summary": "A page of one service's instances",
                    "description": _META_FILTERS,
                    "parameters": [
                        {
                            "name": "service_name",
                            "in": "path",
                            "required": True,
                            "schema": {
                                "type": "string",
                                "pattern": NAME_PATTERN.replace("(?!\\n)", ""),
                                "maxLength": SERVICE_NAME_MAX_LENGTH,
                            },
                        },
                        _STATUS,
                        _LIMIT,
                        _CURSOR,
                        _INCLUDE_MAINTENANCE,
                    ],
                    "responses": {
                        "200": _json("ServiceDetail", "A page of the service's instances"),
                        **errors,
                        "404": _error("No such service (`service_not_found`) or route"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "200 once NATS is connected and the registry runs, 503 otherwise",
                    "security": [],
                    "responses": {
                        "200": _json("Health", "Healthy"),
                        "503": _json("Health", "Not ready (the same Health body, not an error body)"),
                    },
                }
            },
            f"{ADMIN_BASE}/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **{k: v for k, v in errors.items() if k in ("401", "404", "405")},
                    },
                }
            },
        },
        "components": {"schemas": components},
    }
    document["paths"].update(_write_operations(errors))
    if events:
        document["paths"][EVENTS_PATH] = _events_operation(errors)
    if metrics:
        document["paths"][METRICS_PATH] = _metrics_operation(errors)
    if token_required:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    return document
