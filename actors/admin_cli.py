"""`ipc-router services`: the admin API as a readable table (or JSON), so an admin
needs no curl.

Standard library only (HTTP with `urllib`, in a thread), so that the command works
in an install without the router's extra: `pip install ipc-router` alone."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from actors.cli_parsing import Option, add_options
from actors.cli_values import HttpUrl, InstanceId, Reason, ServiceName, Token
from actors.openapi import ADMIN_BASE

__all__ = [
    "OPERATOR_COMMANDS",
    "SERVICES_OPTIONS",
    "AdminApiError",
    "add_operator_commands",
    "add_services_command",
    "fetch_all",
    "get_json",
    "operator_command",
    "render_instances",
    "render_services",
    "run_services",
    "send_json",
    "services_command",
]

REQUEST_TIMEOUT = 10.0
"""Seconds one admin API request may take."""

def _admin_options(command: str) -> tuple[Option, ...]:
    return (
        Option(command, "--admin-token", "the router's admin token", parse=Token()),
        Option(command, "--admin-url", "the router's admin API", "http://127.0.0.1:8080", HttpUrl()),
    )


SERVICES_OPTIONS = _admin_options("services")
"""The options of `services` that an IPC_ROUTER_* variable sets too."""
OPERATOR_COMMANDS = {
    "maintenance": "put an instance into maintenance (out of discovery) or back",
    "deregister": "deregister an instance now, as an operator",
}
"""The commands that write through the admin API, and their one-line help."""


class AdminApiError(RuntimeError):
    """The admin API could not be reached or answered with an error."""


# -- the command line -------------------------------------------------------------------------


def add_services_command(
    add_parser: Callable[..., argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the `services` command with `add_parser` (a subparsers' `add_parser`);
    returns its parser."""
    services = add_parser(
        "services",
        help="list registered services, or one service's instances",
        description="Print what the router knows, from its admin API.",
        subcommand=True,
    )
    services.add_argument(
        "service_name", nargs="?", metavar="NAME", type=ServiceName(), help="one service's instances"
    )
    services.add_argument(
        "--status",
        type=str.upper,
        choices=["ONLINE", "UNHEALTHY", "OFFLINE"],
        help="only instances in this status",
    )
    services.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    add_options(services, SERVICES_OPTIONS)
    return services


def add_operator_commands(
    add_parser: Callable[..., argparse.ArgumentParser],
) -> dict[str, argparse.ArgumentParser]:
    """Add `maintenance` and `deregister` with `add_parser`; returns their parsers."""
    maintenance = add_parser(
        "maintenance",
        help=OPERATOR_COMMANDS["maintenance"],
        description="Put an instance into maintenance (it stays registered and renewing, "
        "but discovery leaves it out) or take it out of maintenance, as an operator (only an "
        "operator ends an operator's maintenance). Prints the instance after the change.",
        subcommand=True,
    )
    _instance_arguments(maintenance)
    maintenance.add_argument("state", choices=("on", "off"), help="into maintenance, or out of it")
    maintenance.add_argument("--reason", type=Reason(), default="", help="why (kept with it)")
    add_options(maintenance, _admin_options("maintenance"))
    deregister = add_parser(
        "deregister",
        help=OPERATOR_COMMANDS["deregister"],
        description="Deregister an instance now (OFFLINE; the event's reason is \"admin\"). "
        "Its client is told on its next heartbeat and does not register it again by itself.",
        subcommand=True,
    )
    _instance_arguments(deregister)
    add_options(deregister, _admin_options("deregister"))
    return {"maintenance": maintenance, "deregister": deregister}


def _instance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service_name", metavar="SERVICE", type=ServiceName(), help="its service")
    parser.add_argument("instance_id", metavar="INSTANCE", type=InstanceId(), help="the instance")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def operator_command(args: argparse.Namespace) -> int:
    """Run `ipc-router maintenance` or `deregister` as parsed; returns the exit code (1
    when the API cannot be reached or refuses, said in one line on stderr)."""
    path = (
        f"{ADMIN_BASE}/services/{quote(args.service_name, safe='')}"
        f"/instances/{quote(args.instance_id, safe='')}"
    )
    body: dict[str, Any] | None = None
    if args.command == "maintenance":
        path += "/maintenance"
        method = "PUT" if args.state == "on" else "DELETE"
        body = {"reason": args.reason} if args.state == "on" and args.reason else None
    else:
        method = "DELETE"
    url = f"{args.admin_url.rstrip('/')}{path}"
    try:
        status, answer = send_json(method, url, body, args.admin_token or None)
    except AdminApiError as error:
        print(f"ipc-router: error: cannot reach the admin API at {args.admin_url}: {error}",
              file=sys.stderr)  # fmt: skip
        return 1
    instance = answer.get("instance") if isinstance(answer, dict) else None
    if status != 200 or not isinstance(instance, dict):
        print(f"ipc-router: error: {_error_message(status, answer, url)}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(answer, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_instances({"service_name": args.service_name, "instances": [instance]}, sys.stdout)
    return 0


def services_command(args: argparse.Namespace) -> int:
    """Run `ipc-router services` as parsed; returns the exit code (1 when the API
    cannot be reached or answers an error, said in one line on stderr)."""
    try:
        asyncio.run(
            run_services(
                args.admin_url, args.service_name, args.status, args.json, args.admin_token or None
            )
        )
    except AdminApiError as error:
        print(f"ipc-router: error: {error}", file=sys.stderr)
        return 1
    return 0


# -- the admin API ----------------------------------------------------------------------------

# No proxy from the environment (http_proxy): the admin API is reached directly, as
# curl --noproxy would.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, token: str | None = None, timeout: float = REQUEST_TIMEOUT) -> tuple[int, Any]:
    """GET `url`; its status and its JSON body (None when the body is not JSON).
    Blocking: call it in a thread from async code.

    Raises:
        AdminApiError: the URL cannot be reached, or did not answer within `timeout`
            (its message is the reason alone: the caller names what it tried).
    """
    return send_json("GET", url, None, token, timeout)


def send_json(
    method: str,
    url: str,
    body: dict[str, Any] | None,
    token: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[int, Any]:
    """`method` `url` with `body` as JSON (none: no body); its status and its JSON
    body (None when it is not JSON). Blocking. Raises `AdminApiError` as `get_json`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, _json_or_none(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _json_or_none(error.read())
    except urllib.error.URLError as error:
        raise AdminApiError(str(error.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise AdminApiError(str(error) or repr(error)) from None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def fetch_all(
    base_url: str, path: str, params: dict[str, str], key: str, token: str | None = None
) -> dict[str, Any]:
    """GET every page of a paginated admin endpoint; returns the first page's body
    with `key` holding the items of all pages. Blocking.

    Raises:
        AdminApiError: unreachable API or an error answer (its message is for humans).
    """
    url = f"{base_url.rstrip('/')}{ADMIN_BASE}{path}"
    body: dict[str, Any] | None = None
    items: list[Any] = []
    query = {**params, "limit": "1000"}
    while True:
        try:
            status, page = get_json(f"{url}?{urlencode(query)}", token)
        except AdminApiError as error:
            raise AdminApiError(f"cannot reach the admin API at {base_url}: {error}") from None
        if status != 200 or not isinstance(page, dict) or not isinstance(page.get(key), list):
            raise AdminApiError(_error_message(status, page, url))
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


# -- output -----------------------------------------------------------------------------------


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
            str(s.get("in_maintenance", 0)),
        ]
        for s in body["services"]
    ]
    _table(["SERVICE", "INSTANCES", "ONLINE", "UNHEALTHY", "OFFLINE", "IN MAINTENANCE"], rows, out)
    out.write(f"{len(rows)} service(s)\n")


def render_time(text: str | None) -> str:
    """An API time for the table: ISO 8601 in UTC to the millisecond, with its zone
    (`2026-12-06T22:47:37.712Z`); "-" for none; as it came if it is no such time."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        return text  # no zone to keep: shown as it came, not taken for UTC
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_maintenance(maintenance: Any) -> str:
    """An instance's maintenance for the table: `since by who: why`, or "-"."""
    if not isinstance(maintenance, dict):
        return "-"
    reason = maintenance.get("reason") or ""
    shown = f"since {render_time(maintenance.get('since'))} by {maintenance.get('by')}"
    return f"{shown}: {reason}" if reason else shown


def render_instances(body: dict[str, Any], out: TextIO) -> None:
    """One service's instances as a table."""
    rows = [
        [
            i["instance_id"],
            i["status"],
            render_time(i.get("last_heartbeat")),
            render_time(i.get("lease_expires_at")),
            render_maintenance(i.get("maintenance")),
            json.dumps(i["metadata"], separators=(",", ":"), sort_keys=True),
        ]
        for i in body["instances"]
    ]
    _table(["INSTANCE", "STATUS", "LAST HEARTBEAT", "LEASE EXPIRES", "MAINTENANCE", "METADATA"], rows, out)
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
    (default: stdout as it is when called). The requests run in a thread: the event
    loop (a router's, in tests) goes on meanwhile.

    Raises:
        AdminApiError: unreachable API or an error answer (its message is for humans).
    """
    out = sys.stdout if out is None else out
    params = {"status": status} if status else {}
    if service_name is None:
        path, key = "/services", "services"
    else:
        path, key = f"/services/{quote(service_name, safe='')}", "instances"
    body = await asyncio.to_thread(fetch_all, base_url, path, params, key, token)
    if as_json:
        json.dump(body, out, indent=2)
        out.write("\n")
    elif service_name is None:
        render_services(body, out)
    else:
        render_instances(body, out)
