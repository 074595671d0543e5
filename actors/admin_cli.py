"""`ipc-router services`: the admin API as a readable table (or JSON), so an admin
needs no curl."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO
from urllib.parse import quote

import aiohttp

from actors.openapi import ADMIN_BASE

__all__ = ["AdminApiError", "fetch_all", "render_instances", "render_services", "run_services"]


class AdminApiError(RuntimeError):
    """The admin API could not be reached or answered with an error."""


async def fetch_all(
    session: aiohttp.ClientSession, base_url: str, path: str, params: dict[str, str], key: str
) -> dict[str, Any]:
    """GET every page of a paginated admin endpoint; returns the first page's body
    with `key` holding the items of all pages."""
    url = f"{base_url.rstrip('/')}{ADMIN_BASE}{path}"
    body: dict[str, Any] | None = None
    items: list[Any] = []
    query = {**params, "limit": "1000"}
    while True:
        try:
            async with session.get(url, params=query) as response:
                page = await response.json(content_type=None)
        except (aiohttp.ClientError, json.JSONDecodeError, TimeoutError) as error:
            raise AdminApiError(f"cannot reach the admin API at {base_url}: {error}") from None
        if response.status != 200:
            raise AdminApiError(_error_message(response.status, page, url))
        body = body or page
        items.extend(page[key])
        if not page.get("next_cursor"):
            break
        query["cursor"] = page["next_cursor"]
    body[key] = items
    body.pop("next_cursor", None)
    return body


def _error_message(status: int, body: Any, url: str) -> str:
    """What to tell the person at the command line about an error answer: the API's
    own message, except where it points at the HTTP API rather than the CLI."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {status} from {url}"
    details = error.get("details")
    if error.get("code") == "service_not_found":
        name = details.get("service_name", "") if isinstance(details, dict) else ""
        return f"no service named {name!r} (see `ipc-router services` for the list)"
    return str(error.get("message") or f"HTTP {status} from {url}")


def _table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        out.write("\n")


def render_services(body: dict[str, Any], out: TextIO) -> None:
    """The service list as a table."""
    rows = [
        [
            s["service_name"],
            str(s["instance_count"]),
            *(str(s["status_counts"].get(status, 0)) for status in ("ONLINE", "UNHEALTHY", "OFFLINE")),
        ]
        for s in body["services"]
    ]
    _table(["SERVICE", "INSTANCES", "ONLINE", "UNHEALTHY", "OFFLINE"], rows, out)
    out.write(f"{len(rows)} service(s)\n")


def render_instances(body: dict[str, Any], out: TextIO) -> None:
    """One service's instances as a table."""
    rows = [
        [
            i["instance_id"],
            i["status"],
            (i.get("last_heartbeat") or "-")[:23],
            (i.get("lease_expires_at") or "-")[:23],
            json.dumps(i["metadata"], separators=(",", ":"), sort_keys=True),
        ]
        for i in body["instances"]
    ]
    _table(["INSTANCE", "STATUS", "LAST HEARTBEAT", "LEASE EXPIRES", "METADATA"], rows, out)
    out.write(f"{len(rows)} instance(s) of {body['service_name']}\n")


async def run_services(
    base_url: str,
    service_name: str | None,
    status: str | None,
    as_json: bool,
    token: str | None = None,
    out: TextIO | None = None,
) -> None:
    """Print services (or one service's instances) from the admin API on `out`
    (default: stdout as it is when called).

    Raises:
        AdminApiError: unreachable API or an error answer (its message is for humans).
    """
    out = sys.stdout if out is None else out
    params = {"status": status} if status else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        if service_name is None:
            body = await fetch_all(session, base_url, "/services", params, "services")
        else:
            path = f"/services/{quote(service_name, safe='')}"
            body = await fetch_all(session, base_url, path, params, "instances")
    if as_json:
        json.dump(body, out, indent=2)
        out.write("\n")
    elif service_name is None:
        render_services(body, out)
    else:
        render_instances(body, out)
