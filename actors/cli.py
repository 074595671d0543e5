"""`ipc-router`: the command line.

Every option of `serve`, and `--admin-url` and `--admin-token` of `services`, also
reads an `IPC_ROUTER_*` environment variable; the command line wins over the
environment, which wins over the default. They are declared in one table, `OPTIONS`.

`ipc-router bench` runs the load generator, which is not part of the router: it lives
in `benchmarks/loadgen.py`, needs the bench extra, and is imported only by that command.

Exit codes: 0 done (or stopped by SIGINT/SIGTERM); 1 failed (the supervisor gave up,
the admin API answered an error, a bench run counted errors); 2 usage error or a port
in use; 141 (128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe)
when whatever reads the output stopped reading, as in `ipc-router services | head -3`:
the rest of the output is dropped without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from actors.admin_cli import (
    SERVICES_OPTIONS,
    add_operator_commands,
    add_services_command,
    operator_command,
    services_command,
)
from actors.app import Router, RouterConfig, run_until_stopped
from actors.cli_output import EXIT_BROKEN_PIPE, ending_quietly_on_a_closed_stdout
from actors.cli_parsing import CommandLineParser, Option, add_options
from actors.cli_values import (
    HostName,
    InboxPrefix,
    InboxPrefixList,
    NatsUrl,
    Seconds,
    StreamName,
    Token,
    WholeNumber,
)
from actors.errors import StartupError
from actors.http_gateway import AdminLimits
from actors.journal import JournalConfig
from actors.logs import configure_logging
from actors.version import package_version
from protocol import MAX_REQUEST_BYTES, LeasePolicy, RegistryLimits
from sdk.connection import NatsAuth

__all__ = ["EXIT_BROKEN_PIPE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


PORT = WholeNumber(0, 65535, "a port number")
SECONDS = Seconds()
AT_LEAST_ONE = WholeNumber(1)


def _default_data_dir() -> str:
    """$XDG_DATA_HOME/ipc-router, or ~/.local/share/ipc-router."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "ipc-router")


def _data_dir(given: str | None) -> Path | None:
    """`--data-dir` as given, the default when not given; none (a temporary store)
    when given empty."""
    chosen = _default_data_dir() if given is None else given
    return Path(chosen).expanduser() if chosen else None


# -- options backed by the environment --------------------------------------------------


NATS_AUTH = "NATS authentication"
GROUPS = {NATS_AUTH: "credentials for --nats-url (each also an IPC_ROUTER_* variable)"}
"""Help sections of `OPTIONS`, by title: their descriptions."""
_PREFER_ENV = "; prefer the environment variable"
_POLICY = LeasePolicy()
_LIMITS = RegistryLimits()
_ADMIN = AdminLimits()
_JOURNAL = JournalConfig()
_ROUTER = RouterConfig()

OPTIONS: tuple[Option, ...] = (
    Option(
        "serve", "--nats-url", "NATS server URL, or several comma-separated", parse=NatsUrl(),
        note="; default: start the bundled nats-server",
    ),
    Option("serve", "--http-host", "admin API bind address", "127.0.0.1", HostName()),
    Option("serve", "--http-port", "admin API port", "8080", PORT),
    Option(
        "serve", "--embedded-nats-port",
        "port of the bundled nats-server on 127.0.0.1 (0: any free port)", "4222", PORT,
    ),
    Option(
        "serve", "--store",
        "where the registry lives: a JetStream stream shared by every router (survives "
        "restarts, allows standbys), or this process's memory",
        "stream", choices=("stream", "memory"),
    ),
    Option(
        "serve", "--data-dir",
        "with the bundled nats-server: where it keeps the registry's stream",
        # Read when serve starts, not when this module is imported.
        note=" (default: $XDG_DATA_HOME/ipc-router or ~/.local/share/ipc-router)",
    ),
    Option(
        "serve", "--stream", "name of the registry's JetStream stream", _JOURNAL.stream,
        StreamName(),
    ),
    Option(
        "serve", "--replicas",
        "copies of the stream and the leadership key (3 on a 3-node NATS cluster)",
        str(_JOURNAL.replicas), WholeNumber(1, 5, "a number of copies"),
    ),
    Option(
        "serve", "--failover-after",
        "seconds without the leader's renewal before a standby takes over",
        str(_ROUTER.failover_after), SECONDS,
    ),
    Option(
        "serve", "--tombstone-ttl",
        "seconds a forgotten instance's tombstone stays in the stream (a router that "
        "falls behind for most of this reads the whole stream again)",
        f"{_JOURNAL.tombstone_ttl:g}", SECONDS,
    ),
    Option("serve", "--nats-user", group=NATS_AUTH),
    Option("serve", "--nats-password", note=_PREFER_ENV, group=NATS_AUTH),
    Option("serve", "--nats-token", note=_PREFER_ENV, group=NATS_AUTH),
    Option("serve", "--nats-creds", "a .creds file", group=NATS_AUTH),
    Option("serve", "--nats-tls-ca", "CA file", group=NATS_AUTH),
    Option("serve", "--nats-tls-cert", "client certificate", group=NATS_AUTH),
    Option("serve", "--nats-tls-key", "client key", group=NATS_AUTH),
    Option(
        "serve", "--nats-inbox-prefix",
        "where this user's replies arrive (a prefix only it may read)", parse=InboxPrefix(),
        group=NATS_AUTH,
    ),
    Option(
        "serve", "--nats-reply-prefixes",
        "inbox prefixes, comma-separated, of the users whose requests the router answers "
        "(besides _INBOX and its own); a request naming any other reply subject is dropped",
        parse=InboxPrefixList(), group=NATS_AUTH,
    ),
    Option(
        "serve", "--store-nats-user",
        "another NATS user for the stream and the leadership key (the request-answering "
        "user then needs no JetStream rights: see deploy/nats-server.conf)", group=NATS_AUTH,
    ),
    Option("serve", "--store-nats-password", note=_PREFER_ENV, group=NATS_AUTH),
    Option("serve", "--store-nats-token", note=_PREFER_ENV, group=NATS_AUTH),
    Option("serve", "--store-nats-creds", "a .creds file for the store user", group=NATS_AUTH),
    Option(
        "serve", "--store-nats-inbox-prefix",
        "where the store user's replies arrive", parse=InboxPrefix(), group=NATS_AUTH,
    ),
    Option(
        "serve", "--admin-token",
        "require 'Authorization: Bearer TOKEN' on the admin API, /healthz aside",
        parse=Token(), note=_PREFER_ENV + " (command lines are visible)",
    ),
    Option(
        "serve", "--heartbeat-interval", "how often clients renew, in seconds",
        str(_POLICY.heartbeat_interval), SECONDS,
    ),
    Option(
        "serve", "--lease-ttl", "seconds without a heartbeat before an instance is UNHEALTHY",
        str(_POLICY.lease_ttl), SECONDS,
    ),
    Option(
        "serve", "--offline-after",
        "further seconds UNHEALTHY before an instance is OFFLINE (then listed "
        "--offline-retention seconds more, then forgotten)",
        str(_POLICY.offline_after), SECONDS,
    ),
    Option(
        "serve", "--offline-retention", "seconds an OFFLINE instance stays visible to admins",
        str(_POLICY.offline_retention), SECONDS,
    ),
    Option(
        "serve", "--max-instances", "live instances the registry holds before 507 registry_full",
        str(_LIMITS.max_instances), AT_LEAST_ONE,
    ),
    Option(
        "serve", "--max-instances-per-service",
        "live instances of one service before 507 service_full",
        str(_LIMITS.max_instances_per_service), AT_LEAST_ONE,
    ),
    Option(
        "serve", "--max-metadata-bytes",
        "encoded metadata size per instance before 400 metadata_too_large",
        str(_LIMITS.max_metadata_bytes),
        WholeNumber(1, MAX_REQUEST_BYTES, "a number of bytes"),
    ),
    Option(
        "serve", "--mailbox-size",
        "requests queued for the registry before 503 router_unavailable",
        str(_ROUTER.registry_mailbox_size), AT_LEAST_ONE,
    ),
    Option(
        "serve", "--admin-max-connections",
        "admin API connections at once (fewer if the descriptor limit leaves less room)",
        str(_ADMIN.max_connections), AT_LEAST_ONE,
    ),
    Option(
        "serve", "--admin-head-timeout",
        "seconds a new admin connection has to send its request head",
        str(_ADMIN.head_timeout), SECONDS,
    ),
    Option(
        "serve", "--admin-idle-timeout",
        "seconds an admin connection may sit idle between requests",
        str(_ADMIN.idle_timeout), SECONDS,
    ),
    Option(
        "serve", "--metrics-max-services",
        "services with per-service metric series of their own (the first by name); the "
        'rest are summed into service="(other)"',
        str(_ROUTER.metrics_max_services), WholeNumber(0, 100_000, "a number of services"),
    ),
    Option(
        "serve", "--dead-link-after",
        "seconds after which a NATS connection that answers none of the router's pings "
        "is taken for dead and dialled again (a half-open link sends no FIN)",
        str(_ROUTER.dead_link_after), Seconds(600, minimum=0.3),
    ),
    Option("serve", "--uvloop", "run on uvloop (pip install 'ipc-router[speed]')", switch=True),
    Option("serve", "--log-format", "log output", "console", choices=("console", "json")),
    Option(
        "serve", "--log-level", "log level", "info",
        choices=("debug", "info", "warning", "error"),
    ),
    *SERVICES_OPTIONS,
)  # fmt: skip
"""Every environment-backed option, in the order `--help` lists them."""


ROUTER_COMMANDS = {
    "serve": "run the router",
    "bench": "load-test a router against the raw NATS round trip",
}
"""The commands that need the router's extra, and their one-line help."""


def top_level_parser() -> CommandLineParser:
    """`ipc-router` with `--version`, before its commands are added (an install
    without the router's extra adds only `services`)."""
    parser = CommandLineParser(
        prog="ipc-router",
        description="Service registration and discovery router over NATS.",
        epilog="Exit codes: 0 done, 1 failed, 2 usage error or port in use, 141 output "
        "closed early (as in `ipc-router services | head`).",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version('unknown')}"
    )
    return parser


def build_parser() -> CommandLineParser:
    """The argument parser (also used to check docker-compose.yaml)."""
    parser = top_level_parser()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help=ROUTER_COMMANDS["serve"],
        description="Run the router. Without --nats-url it starts the bundled nats-server.",
        subcommand=True,
    )
    add_options(serve, [option for option in OPTIONS if option.command == "serve"], GROUPS)
    services = add_services_command(commands.add_parser)
    operators = add_operator_commands(commands.add_parser)
    bench = commands.add_parser(
        "bench",
        help=ROUTER_COMMANDS["bench"],
        description="Register N instances across S services with C requests in flight, "
        "heartbeat them for D seconds, then query; each phase beside a raw nats-py echo "
        "baseline measured in the same run. Without --nats-url it starts its own "
        "nats-server (JetStream on) and router (log level warning). Its instances have "
        "ids of their own run and are deregistered at the end. A row with errors gets no "
        "ratio, and the command exits 1. Needs the bench extra: "
        "pip install 'ipc-router[bench]'.",
        subcommand=True,
    )
    bench.add_argument(
        "--nats-url", type=NatsUrl(), default=None, help="bench the router on this NATS server"
    )
    bench.add_argument("--instances", "-n", type=AT_LEAST_ONE, default=10_000, help="(default: %(default)s)")
    bench.add_argument("--services", "-s", type=AT_LEAST_ONE, default=100, help="(default: %(default)s)")
    bench.add_argument(
        "--concurrency", "-c", type=AT_LEAST_ONE, default=64, help="requests in flight (default: %(default)s)"
    )
    bench.add_argument(
        "--heartbeat-seconds", "-d", type=SECONDS, default=5.0, help="(default: %(default)s)"
    )
    bench.add_argument("--raw", action="store_true", help="register with raw nats-py instead of the SDK")
    bench.add_argument("--uvloop", action="store_true", help="start the router with --uvloop")
    bench.add_argument(
        "--store",
        choices=("stream", "memory"),
        default="stream",
        help="the --store of the router the bench starts, not used with --nats-url "
        "(default: %(default)s)",
    )
    bench.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.commands = {"serve": serve, "services": services, "bench": bench, **operators}
    return parser


def _nats_auth(
    args: argparse.Namespace, parser: argparse.ArgumentParser, prefix: str = "nats"
) -> NatsAuth:
    """The credentials of the `--nats-*` options (`prefix="store_nats"`: of the
    `--store-nats-*` ones, with the TLS files of `--nats-tls-*`)."""
    flag = "--" + prefix.replace("_", "-")
    if getattr(args, f"{prefix}_password") is not None and getattr(args, f"{prefix}_user") is None:
        parser.error(f"{flag}-password needs {flag}-user")
    if (args.nats_tls_cert is None) != (args.nats_tls_key is None):
        given, missing = (
            ("--nats-tls-cert", "--nats-tls-key")
            if args.nats_tls_key is None
            else ("--nats-tls-key", "--nats-tls-cert")
        )
        parser.error(f"{given} needs {missing} (a client certificate and its key go together)")
    try:
        return NatsAuth(
            user=getattr(args, f"{prefix}_user"),
            password=getattr(args, f"{prefix}_password"),
            token=getattr(args, f"{prefix}_token"),
            creds=getattr(args, f"{prefix}_creds"),
            tls_ca=args.nats_tls_ca,
            tls_cert=args.nats_tls_cert,
            tls_key=args.nats_tls_key,
            inbox_prefix=getattr(args, f"{prefix}_inbox_prefix"),
        )
    except ValueError as error:  # pragma: no cover - the checks above and the types catch it
        parser.error(str(error))


def _store_auth(args: argparse.Namespace, parser: argparse.ArgumentParser) -> NatsAuth | None:
    given = (
        args.store_nats_user, args.store_nats_password, args.store_nats_token, args.store_nats_creds
    )
    if not any(given):
        return None
    return _nats_auth(args, parser, "store_nats")


def _reply_prefixes(args: argparse.Namespace) -> tuple[str, ...]:
    """--nats-reply-prefixes, each as given (their form was checked when parsed)."""
    return tuple(p.strip() for p in (args.nats_reply_prefixes or "").split(",") if p.strip())


BENCH_EXTRA_MISSING = "bench needs the bench extra: pip install 'ipc-router[bench]'"
LOAD_GENERATOR_MISSING = (
    "bench needs the load generator (benchmarks/loadgen.py), which this installation "
    "does not include: run it from a source checkout"
)


def _find_load_generator() -> None:
    """Make `benchmarks` importable when it is not an installed package but sits
    beside `actors/` (a source checkout, an editable install), whatever the working
    directory."""
    root = Path(__file__).resolve().parent.parent
    if (root / "benchmarks" / "loadgen.py").is_file() and importlib.util.find_spec("benchmarks") is None:
        sys.path.append(str(root))


def _bench(args: argparse.Namespace) -> int:
    # The load generator is client-side tooling outside the router, with its own
    # dependency (the bench extra): imported only here, when asked to run.
    _find_load_generator()
    try:
        from benchmarks.loadgen import BenchConfig, render_report, report_json, run_bench
    except ImportError as error:
        missing = error.name in ("benchmarks", "benchmarks.loadgen")
        print(
            f"ipc-router: error: {LOAD_GENERATOR_MISSING if missing else BENCH_EXTRA_MISSING}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    config = BenchConfig(
        instances=args.instances,
        services=min(args.services, args.instances),
        concurrency=args.concurrency,
        heartbeat_seconds=args.heartbeat_seconds,
        nats_url=args.nats_url,
        raw=args.raw,
        uvloop=args.uvloop,
        store=args.store,
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
    return EXIT_OK if report["ok"] else EXIT_FAILED


def _config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RouterConfig:
    if args.heartbeat_interval >= args.lease_ttl:
        parser.error(
            f"--heartbeat-interval ({args.heartbeat_interval:g} s) must be shorter than "
            f"--lease-ttl ({args.lease_ttl:g} s), or every instance would flap UNHEALTHY"
        )
    if args.store == "stream" and args.failover_after * 4 > args.lease_ttl * 5:
        parser.error(
            f"--failover-after ({args.failover_after:g} s) must not be much longer than "
            f"--lease-ttl ({args.lease_ttl:g} s): clients would find no leader for longer "
            "than their leases last"
        )
    return RouterConfig(
        nats_url=args.nats_url or None,
        http_host=args.http_host,
        http_port=args.http_port,
        embedded_nats_port=args.embedded_nats_port,
        store=args.store,
        data_dir=_data_dir(args.data_dir),
        journal=JournalConfig(
            stream=args.stream, replicas=args.replicas, tombstone_ttl=args.tombstone_ttl
        ),
        failover_after=args.failover_after,
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
        store_auth=_store_auth(args, parser),
        reply_prefixes=_reply_prefixes(args),
        admin_token=args.admin_token or None,
        admin_limits=AdminLimits(
            max_connections=args.admin_max_connections,
            head_timeout=args.admin_head_timeout,
            idle_timeout=args.admin_idle_timeout,
        ),
        metrics_max_services=args.metrics_max_services,
        dead_link_after=args.dead_link_after,
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
    """Entry point of the `ipc-router` console script; returns the exit code.

    A reader that closes stdout early (`ipc-router services | head -3`) ends the
    command quietly with `EXIT_BROKEN_PIPE`, whatever it was printing."""
    return ending_quietly_on_a_closed_stdout(lambda: _run(argv))


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    secrets = [getattr(args, name, None) for name in ("admin_token", "nats_password", "nats_token")]
    configure_logging(
        getattr(args, "log_format", "console"),
        getattr(args, "log_level", "warning"),
        secrets=[secret for secret in secrets if secret],
    )
    if args.command == "services":
        return services_command(args)
    if args.command in ("maintenance", "deregister"):
        return operator_command(args)
    if args.command == "bench":
        return _bench(args)
    serve = parser.commands["serve"]
    config = _config(args, serve)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            serve.error("--uvloop needs uvloop: pip install 'ipc-router[speed]'")
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(_serve(config))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
