"""The admin API's OpenAPI 3.1 document; its schemas come from the msgspec Structs."""

from __future__ import annotations

from typing import Any

import msgspec

from protocol import ErrorReply, Health, ServiceDetail, ServiceList

__all__ = ["ADMIN_BASE", "openapi_document"]

ADMIN_BASE = "/api/v1/admin"
_REF = "#/components/schemas/{name}"


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name=schema_name)}}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json("ErrorReply", description)


def openapi_document(version: str) -> dict[str, Any]:
    """Build the document (once, at app start)."""
    (list_ref, detail_ref, error_ref, health_ref), components = msgspec.json.schema_components(
        [ServiceList, ServiceDetail, ErrorReply, Health], ref_template=_REF
    )
    del list_ref, detail_ref, error_ref, health_ref
    common_errors = {
        "400": _error("Invalid query parameter"),
        "500": _error("Unexpected error"),
        "503": _error("Registry unavailable"),
    }
    status_parameter = {
        "name": "status",
        "in": "query",
        "required": False,
        "description": "Only instances in this status (case-insensitive).",
        "schema": {"type": "string", "enum": ["ONLINE", "UNHEALTHY", "OFFLINE"]},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ipc-router admin API",
            "version": version,
            "description": "Read-only view of the services registered with the router.",
        },
        "paths": {
            f"{ADMIN_BASE}/services": {
                "get": {
                    "operationId": "listServices",
                    "summary": "List registered services with instance counts per status",
                    "parameters": [status_parameter],
                    "responses": {"200": _json("ServiceList", "All services"), **common_errors},
                }
            },
            f"{ADMIN_BASE}/services/{{service_name}}": {
                "get": {
                    "operationId": "getService",
                    "summary": "One service and its instances",
                    "parameters": [
                        {
                            "name": "service_name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        status_parameter,
                    ],
                    "responses": {
                        "200": _json("ServiceDetail", "The service and its instances"),
                        "404": _error("No such service"),
                        **common_errors,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "200 once NATS is connected and the registry runs, 503 otherwise",
                    "responses": {
                        "200": _json("Health", "Healthy"),
                        "503": _json("Health", "Not ready"),
                    },
                }
            },
            f"{ADMIN_BASE}/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
        },
        "components": {"schemas": components},
    }
