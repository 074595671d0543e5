"""`ipc-router`: the command line.

Every option of `serve` also reads an `IPC_ROUTER_*` environment variable; the
command line wins over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Sequence

from actors.admin_cli import AdminApiError, run_services
from actors.app import Router, RouterConfig, run_until_stopped
from actors.errors import StartupError
from actors.logs import configure_logging
from protocol import MAX_REQUEST_BYTES, LeasePolicy, RegistryLimits
from sdk.connection import NatsAuth

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"IPC_ROUTER_{name}", default)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < 86_400 or value != value:
        raise argparse.ArgumentTypeError(f"seconds must be between 0 and 86400: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to check docker-compose.yaml)."""
    parser = argparse.ArgumentParser(
        prog="ipc-router",
        description="Service registration and discovery router over NATS.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the router",
        description="Run the router. Without --nats-url it starts the bundled nats-server.",
    )
    serve.add_argument(
        "--nats-url",
        default=_env("NATS_URL", None),
        help="NATS server URL [IPC_ROUTER_NATS_URL]; default: start the bundled nats-server",
    )
    serve.add_argument(
        "--http-host",
        default=_env("HTTP_HOST", "127.0.0.1"),
        help="admin API bind address [IPC_ROUTER_HTTP_HOST] (default: %(default)s)",
    )
    serve.add_argument(
        "--http-port",
        type=_port,
        default=_env("HTTP_PORT", "8080"),
        help="admin API port [IPC_ROUTER_HTTP_PORT] (default: %(default)s)",
    )
    serve.add_argument(
        "--embedded-nats-port",
        type=_port,
        default=_env("EMBEDDED_NATS_PORT", "4222"),
        help="port of the bundled nats-server on 127.0.0.1 [IPC_ROUTER_EMBEDDED_NATS_PORT] "
        "(default: %(default)s)",
    )
    _add_nats_auth_arguments(serve)
    serve.add_argument(
        "--admin-token",
        default=_env("ADMIN_TOKEN", None),
        help="require 'Authorization: Bearer TOKEN' on the admin API, /healthz aside "
        "[IPC_ROUTER_ADMIN_TOKEN]; prefer the environment variable (command lines are visible)",
    )
    policy = LeasePolicy()
    serve.add_argument(
        "--heartbeat-interval",
        type=_seconds,
        default=_env("HEARTBEAT_INTERVAL", str(policy.heartbeat_interval)),
        help="how often clients renew, in seconds [IPC_ROUTER_HEARTBEAT_INTERVAL] "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--lease-ttl",
        type=_seconds,
        default=_env("LEASE_TTL", str(policy.lease_ttl)),
        help="seconds without a heartbeat before an instance is UNHEALTHY "
        "[IPC_ROUTER_LEASE_TTL] (default: %(default)s)",
    )
    serve.add_argument(
        "--offline-after",
        type=_seconds,
        default=_env("OFFLINE_AFTER", str(policy.offline_after)),
        help="further seconds UNHEALTHY before an instance is OFFLINE and removed "
        "[IPC_ROUTER_OFFLINE_AFTER] (default: %(default)s)",
    )
    serve.add_argument(
        "--offline-retention",
        type=_seconds,
        default=_env("OFFLINE_RETENTION", str(policy.offline_retention)),
        help="seconds an OFFLINE instance stays visible to admins "
        "[IPC_ROUTER_OFFLINE_RETENTION] (default: %(default)s)",
    )
    limits = RegistryLimits()
    serve.add_argument(
        "--max-instances",
        type=_positive,
        default=_env("MAX_INSTANCES", str(limits.max_instances)),
        help="live instances the registry holds before 507 registry_full "
        "[IPC_ROUTER_MAX_INSTANCES] (default: %(default)s)",
    )
    serve.add_argument(
        "--max-instances-per-service",
        type=_positive,
        default=_env("MAX_INSTANCES_PER_SERVICE", str(limits.max_instances_per_service)),
        help="live instances of one service before 507 service_full "
        "[IPC_ROUTER_MAX_INSTANCES_PER_SERVICE] (default: %(default)s)",
    )
    serve.add_argument(
        "--max-metadata-bytes",
        type=_positive,
        default=_env("MAX_METADATA_BYTES", str(limits.max_metadata_bytes)),
        help="encoded metadata size per instance before 400 metadata_too_large "
        "[IPC_ROUTER_MAX_METADATA_BYTES] (default: %(default)s)",
    )
    serve.add_argument(
        "--mailbox-size",
        type=_positive,
        default=_env("MAILBOX_SIZE", "10000"),
        help="requests queued for the registry before 503 router_unavailable "
        "[IPC_ROUTER_MAILBOX_SIZE] (default: %(default)s)",
    )
    serve.add_argument(
        "--uvloop",
        action="store_true",
        default=_env("UVLOOP", "") not in ("", "0", "false"),
        help="run on uvloop (pip install 'ipc-router[speed]') [IPC_ROUTER_UVLOOP]",
    )
    serve.add_argument(
        "--log-format",
        choices=["console", "json"],
        default=_env("LOG_FORMAT", "console"),
        help="log output [IPC_ROUTER_LOG_FORMAT] (default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=_env("LOG_LEVEL", "info"),
        help="log level [IPC_ROUTER_LOG_LEVEL] (default: %(default)s)",
    )
    services = commands.add_parser(
        "services",
        help="list registered services, or one service's instances",
        description="Print what the router knows, from its admin API.",
    )
    services.add_argument("service_name", nargs="?", metavar="NAME", help="one service's instances")
    services.add_argument(
        "--status",
        type=str.upper,
        choices=["ONLINE", "UNHEALTHY", "OFFLINE"],
        help="only instances in this status",
    )
    services.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    services.add_argument(
        "--admin-token",
        default=_env("ADMIN_TOKEN", None),
        help="the router's admin token [IPC_ROUTER_ADMIN_TOKEN]",
    )
    services.add_argument(
        "--admin-url",
        default=_env("ADMIN_URL", "http://127.0.0.1:8080"),
        help="the router's admin API [IPC_ROUTER_ADMIN_URL] (default: %(default)s)",
    )
    bench = commands.add_parser(
        "bench",
        help="load-test a router against the raw NATS round trip",
        description="Register N instances across S services with C requests in flight, "
        "heartbeat them for D seconds, then query; each phase beside a raw nats-py echo "
        "baseline measured in the same run. Without --nats-url it starts its own "
        "nats-server and router.",
    )
    bench.add_argument("--nats-url", default=None, help="bench the router on this NATS server")
    bench.add_argument("--instances", "-n", type=_positive, default=10_000, help="(default: %(default)s)")
    bench.add_argument("--services", "-s", type=_positive, default=100, help="(default: %(default)s)")
    bench.add_argument(
        "--concurrency", "-c", type=_positive, default=64, help="requests in flight (default: %(default)s)"
    )
    bench.add_argument(
        "--heartbeat-seconds", "-d", type=_seconds, default=5.0, help="(default: %(default)s)"
    )
    bench.add_argument("--raw", action="store_true", help="register with raw nats-py instead of the SDK")
    bench.add_argument("--uvloop", action="store_true", help="start the router with --uvloop")
    bench.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _add_nats_auth_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "NATS authentication", "credentials for --nats-url (each also an IPC_ROUTER_* variable)"
    )
    group.add_argument("--nats-user", default=_env("NATS_USER", None), help="[IPC_ROUTER_NATS_USER]")
    group.add_argument(
        "--nats-password",
        default=_env("NATS_PASSWORD", None),
        help="[IPC_ROUTER_NATS_PASSWORD]; prefer the environment variable",
    )
    group.add_argument(
        "--nats-token",
        default=_env("NATS_TOKEN", None),
        help="[IPC_ROUTER_NATS_TOKEN]; prefer the environment variable",
    )
    group.add_argument("--nats-creds", default=_env("NATS_CREDS", None), help="a .creds file [IPC_ROUTER_NATS_CREDS]")
    group.add_argument("--nats-tls-ca", default=_env("NATS_TLS_CA", None), help="CA file [IPC_ROUTER_NATS_TLS_CA]")
    group.add_argument(
        "--nats-tls-cert", default=_env("NATS_TLS_CERT", None), help="client certificate [IPC_ROUTER_NATS_TLS_CERT]"
    )
    group.add_argument(
        "--nats-tls-key", default=_env("NATS_TLS_KEY", None), help="client key [IPC_ROUTER_NATS_TLS_KEY]"
    )


def _nats_auth(args: argparse.Namespace, parser: argparse.ArgumentParser) -> NatsAuth:
    try:
        return NatsAuth(
            user=args.nats_user,
            password=args.nats_password,
            token=args.nats_token,
            creds=args.nats_creds,
            tls_ca=args.nats_tls_ca,
            tls_cert=args.nats_tls_cert,
            tls_key=args.nats_tls_key,
        )
    except ValueError as error:
        parser.error(str(error))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _bench(args: argparse.Namespace) -> int:
    from actors.bench import BenchConfig, render_report, report_json, run_bench

    config = BenchConfig(
        instances=args.instances,
        services=min(args.services, args.instances),
        concurrency=args.concurrency,
        heartbeat_seconds=args.heartbeat_seconds,
        nats_url=args.nats_url,
        raw=args.raw,
        uvloop=args.uvloop,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    try:
        report = asyncio.run(run_bench(config))
    except (StartupError, RuntimeError, OSError) as error:
        print(f"ipc-router: error: bench failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(report_json(report))
    else:
        render_report(report, sys.stdout)
    return EXIT_OK


def _services(args: argparse.Namespace) -> int:
    try:
        asyncio.run(
            run_services(
                args.admin_url, args.service_name, args.status, args.json, args.admin_token
            )
        )
    except AdminApiError as error:
        print(f"ipc-router: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RouterConfig:
    if args.heartbeat_interval >= args.lease_ttl:
        parser.error(
            f"--heartbeat-interval ({args.heartbeat_interval:g} s) must be shorter than "
            f"--lease-ttl ({args.lease_ttl:g} s), or every instance would flap UNHEALTHY"
        )
    if args.max_metadata_bytes > MAX_REQUEST_BYTES:
        parser.error(
            f"--max-metadata-bytes ({args.max_metadata_bytes}) cannot exceed the request size "
            f"limit of {MAX_REQUEST_BYTES} bytes"
        )
    return RouterConfig(
        nats_url=args.nats_url or None,
        http_host=args.http_host,
        http_port=args.http_port,
        embedded_nats_port=args.embedded_nats_port,
        lease_policy=LeasePolicy(
            heartbeat_interval=args.heartbeat_interval,
            lease_ttl=args.lease_ttl,
            offline_after=args.offline_after,
            offline_retention=args.offline_retention,
        ),
        limits=RegistryLimits(
            max_instances=args.max_instances,
            max_instances_per_service=args.max_instances_per_service,
            max_metadata_bytes=args.max_metadata_bytes,
        ),
        registry_mailbox_size=args.mailbox_size,
        nats_auth=_nats_auth(args, parser),
        admin_token=args.admin_token or None,
    )


async def _serve(config: RouterConfig) -> int:
    # The registry keeps many long-lived objects; with the default thresholds the
    # collector rescans them all every few thousand requests (pauses of ~100 ms at
    # 100k instances). Collect the young generation less often and the old one rarely:
    # the router's data structures form no reference cycles to speak of.
    gc.freeze()
    gc.set_threshold(20_000, 50, 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    router = Router(config)
    try:
        await router.start()
    except StartupError as error:
        print(f"ipc-router: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"ipc-router: error: cannot start: {error}", file=sys.stderr)
        return EXIT_USAGE
    return await run_until_stopped(router, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ipc-router` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "log_format", "console"), getattr(args, "log_level", "warning"))
    if args.command == "services":
        return _services(args)
    if args.command == "bench":
        return _bench(args)
    if args.command == "serve":
        config = _config(args, parser)
        if args.uvloop:
            try:
                import uvloop
            except ImportError:
                parser.error("--uvloop needs uvloop: pip install 'ipc-router[speed]'")
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return asyncio.run(_serve(config))
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse rejects it
    return EXIT_USAGE  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
