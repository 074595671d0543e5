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
import math
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from actors.admin_cli import AdminApiError, run_services
from actors.app import Router, RouterConfig, run_until_stopped
from actors.errors import StartupError
from actors.http_gateway import AdminLimits
from actors.journal import JournalConfig
from actors.logs import configure_logging
from actors.version import package_version
from protocol import MAX_REQUEST_BYTES, LeasePolicy, RegistryLimits
from sdk.connection import NatsAuth

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["EXIT_BROKEN_PIPE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141
"""The reader of stdout went away (`| head`): 128 + SIGPIPE, what a shell reports for a
tool that SIGPIPE ended."""


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
    if math.isnan(value) or not 0 < value < 86_400:
        raise argparse.ArgumentTypeError(f"seconds must be between 0 and 86400: {text}")
    return value


def _default_data_dir() -> str:
    """$XDG_DATA_HOME/ipc-router, or ~/.local/share/ipc-router."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "ipc-router")


def _data_dir(given: str | None) -> Path | None:
    """`--data-dir` as given, the default when not given; none (a temporary store)
    when given empty."""
    chosen = _default_data_dir() if given is None else given
    return Path(chosen).expanduser() if chosen else None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


# -- options backed by the environment --------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of a command that also reads `IPC_ROUTER_<FLAG>` (`--lease-ttl` reads
    `IPC_ROUTER_LEASE_TTL`): the command line wins over the environment, which wins
    over `default`.

    The help is `help`, the variable in brackets, `note`, then "(default: ...)" when
    there is a default. Defaults are strings, parsed by `parse` like the command line
    and the environment, so a bad environment value is a usage error naming the flag.
    """

    command: str
    flag: str
    help: str = ""
    default: str | None = None
    parse: Callable[[str], object] = str
    choices: tuple[str, ...] | None = None
    note: str = ""
    switch: bool = False
    """A flag without a value; its variable turns it on unless empty, "0" or "false"."""
    group: str | None = None
    """The title of the help section (`GROUPS`) it is listed under, if not "options"."""

    @property
    def env_var(self) -> str:
        """The environment variable that sets it."""
        return "IPC_ROUTER_" + self.flag.removeprefix("--").replace("-", "_").upper()

    @property
    def help_text(self) -> str:
        """Its argparse help (with `%(default)s` for argparse to fill in)."""
        text = f"{self.help} [{self.env_var}]" if self.help else f"[{self.env_var}]"
        text += self.note
        if self.default is not None and not self.switch:
            text += " (default: %(default)s)"
        return text


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
    Option("serve", "--nats-url", "NATS server URL", note="; default: start the bundled nats-server"),
    Option("serve", "--http-host", "admin API bind address", "127.0.0.1"),
    Option("serve", "--http-port", "admin API port", "8080", _port),
    Option(
        "serve", "--embedded-nats-port",
        "port of the bundled nats-server on 127.0.0.1 (0: any free port)", "4222", _port,
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
    Option("serve", "--stream", "name of the registry's JetStream stream", _JOURNAL.stream),
    Option(
        "serve", "--replicas",
        "copies of the stream and the leadership key (3 on a 3-node NATS cluster)",
        str(_JOURNAL.replicas), _positive,
    ),
    Option(
        "serve", "--failover-after",
        "seconds without the leader's renewal before a standby takes over",
        str(_ROUTER.failover_after), _seconds,
    ),
    Option(
        "serve", "--tombstone-ttl",
        "seconds a forgotten instance's tombstone stays in the stream (a router that "
        "falls behind for most of this reads the whole stream again)",
        f"{_JOURNAL.tombstone_ttl:g}", _seconds,
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
        "where this user's replies arrive (a prefix only it may read)", group=NATS_AUTH,
    ),
    Option(
        "serve", "--nats-reply-prefixes",
        "inbox prefixes, comma-separated, of the users whose requests the router answers "
        "(besides _INBOX and its own); a request naming any other reply subject is dropped",
        group=NATS_AUTH,
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
        "where the store user's replies arrive", group=NATS_AUTH,
    ),
    Option(
        "serve", "--admin-token",
        "require 'Authorization: Bearer TOKEN' on the admin API, /healthz aside",
        note=_PREFER_ENV + " (command lines are visible)",
    ),
    Option(
        "serve", "--heartbeat-interval", "how often clients renew, in seconds",
        str(_POLICY.heartbeat_interval), _seconds,
    ),
    Option(
        "serve", "--lease-ttl", "seconds without a heartbeat before an instance is UNHEALTHY",
        str(_POLICY.lease_ttl), _seconds,
    ),
    Option(
        "serve", "--offline-after",
        "further seconds UNHEALTHY before an instance is OFFLINE (then listed "
        "--offline-retention seconds more, then forgotten)",
        str(_POLICY.offline_after), _seconds,
    ),
    Option(
        "serve", "--offline-retention", "seconds an OFFLINE instance stays visible to admins",
        str(_POLICY.offline_retention), _seconds,
    ),
    Option(
        "serve", "--max-instances", "live instances the registry holds before 507 registry_full",
        str(_LIMITS.max_instances), _positive,
    ),
    Option(
        "serve", "--max-instances-per-service",
        "live instances of one service before 507 service_full",
        str(_LIMITS.max_instances_per_service), _positive,
    ),
    Option(
        "serve", "--max-metadata-bytes",
        "encoded metadata size per instance before 400 metadata_too_large",
        str(_LIMITS.max_metadata_bytes), _positive,
    ),
    Option(
        "serve", "--mailbox-size",
        "requests queued for the registry before 503 router_unavailable",
        str(_ROUTER.registry_mailbox_size), _positive,
    ),
    Option(
        "serve", "--admin-max-connections",
        "admin API connections at once (fewer if the descriptor limit leaves less room)",
        str(_ADMIN.max_connections), _positive,
    ),
    Option(
        "serve", "--admin-head-timeout",
        "seconds a new admin connection has to send its request head",
        str(_ADMIN.head_timeout), _seconds,
    ),
    Option(
        "serve", "--admin-idle-timeout",
        "seconds an admin connection may sit idle between requests",
        str(_ADMIN.idle_timeout), _seconds,
    ),
    Option("serve", "--uvloop", "run on uvloop (pip install 'ipc-router[speed]')", switch=True),
    Option("serve", "--log-format", "log output", "console", choices=("console", "json")),
    Option(
        "serve", "--log-level", "log level", "info",
        choices=("debug", "info", "warning", "error"),
    ),
    Option("services", "--admin-token", "the router's admin token"),
    Option("services", "--admin-url", "the router's admin API", "http://127.0.0.1:8080"),
)  # fmt: skip
"""Every environment-backed option, in the order `--help` lists them."""


def _add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the `OPTIONS` of `command` to its parser, reading the environment now."""
    mine = [option for option in OPTIONS if option.command == command]
    groups = {
        title: parser.add_argument_group(title, description)
        for title, description in GROUPS.items()
        if any(option.group == title for option in mine)
    }
    for option in mine:
        target = parser if option.group is None else groups[option.group]
        if option.switch:
            target.add_argument(
                option.flag,
                action="store_true",
                default=os.environ.get(option.env_var, "") not in ("", "0", "false"),
                help=option.help_text,
            )
        else:
            target.add_argument(
                option.flag,
                type=option.parse,
                choices=option.choices,
                default=os.environ.get(option.env_var, option.default),
                help=option.help_text,
            )


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, except that it does not ignore a closed stdout (`--help | head -1`):
    the command then ends like any other whose reader went away."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message and file is sys.stdout:
            file.write(message)
            return
        super()._print_message(message, file)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to check docker-compose.yaml)."""
    parser = _ArgumentParser(
        prog="ipc-router",
        description="Service registration and discovery router over NATS.",
        epilog="Exit codes: 0 done, 1 failed, 2 usage error or port in use, 141 output "
        "closed early (as in `ipc-router services | head`).",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version('unknown')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the router",
        description="Run the router. Without --nats-url it starts the bundled nats-server.",
    )
    _add_options(serve, "serve")
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
    _add_options(services, "services")
    bench = commands.add_parser(
        "bench",
        help="load-test a router against the raw NATS round trip",
        description="Register N instances across S services with C requests in flight, "
        "heartbeat them for D seconds, then query; each phase beside a raw nats-py echo "
        "baseline measured in the same run. Without --nats-url it starts its own "
        "nats-server (JetStream on) and router (log level warning). Its instances have "
        "ids of their own run and are deregistered at the end. A row with errors gets no "
        "ratio, and the command exits 1. Needs the bench extra: "
        "pip install 'ipc-router[bench]'.",
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
    bench.add_argument(
        "--store",
        choices=("stream", "memory"),
        default="stream",
        help="the --store of the router the bench starts, not used with --nats-url "
        "(default: %(default)s)",
    )
    bench.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _nats_auth(
    args: argparse.Namespace, parser: argparse.ArgumentParser, prefix: str = "nats"
) -> NatsAuth:
    """The credentials of the `--nats-*` options (`prefix="store_nats"`: of the
    `--store-nats-*` ones, with the TLS files of `--nats-tls-*`)."""
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
    except ValueError as error:
        parser.error(str(error))


def _store_auth(args: argparse.Namespace, parser: argparse.ArgumentParser) -> NatsAuth | None:
    given = (args.store_nats_user, args.store_nats_token, args.store_nats_creds)
    if not any(given):
        return None
    return _nats_auth(args, parser, "store_nats")


def _reply_prefixes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, ...]:
    given = [p.strip() for p in (args.nats_reply_prefixes or "").split(",") if p.strip()]
    for prefix in given:
        try:
            NatsAuth(inbox_prefix=prefix.rstrip("."))
        except ValueError:
            parser.error(
                f"argument --nats-reply-prefixes: {prefix!r} is not an inbox prefix "
                "(subject tokens without wildcards, such as _INBOX_service)"
            )
    return tuple(given)


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
        reply_prefixes=_reply_prefixes(args, parser),
        admin_token=args.admin_token or None,
        admin_limits=AdminLimits(
            max_connections=args.admin_max_connections,
            head_timeout=args.admin_head_timeout,
            idle_timeout=args.admin_idle_timeout,
        ),
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
    try:
        try:
            return _run(argv)
        finally:
            # Flush here, where a closed pipe can still be handled, rather than at
            # interpreter shutdown, where it would print a traceback. (Also after
            # argparse's --help and --version, which exit through SystemExit.)
            sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_gone():
            raise  # a broken pipe of something else: not ours to hide
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _stdout_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reader went away; also True when
    stdout is no file at all (nothing to ask)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # (io.UnsupportedOperation)
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _discard_stdout() -> None:
    """Send stdout to the null device, so that what is still buffered is dropped at
    exit instead of failing again when the interpreter flushes it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a file (io.UnsupportedOperation)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - open until exit
    finally:
        os.close(devnull)


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
