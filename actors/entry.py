"""The `ipc-router` console script's entry point.

With the router's extra installed it is `actors.cli.main`. Without it (a service
that installed only the SDK, `pip install ipc-router`) `--version` and `services`
still work, as they need nothing beyond the standard library, and every other
command says in one line what to install instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

ROUTER_EXTRA = "pip install 'ipc-router[router]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run `actors.cli.main`, or the commands that need no router dependency."""
    try:
        from actors.cli import main as cli_main
    except ModuleNotFoundError as error:
        return sdk_only_main(sys.argv[1:] if argv is None else list(argv), missing=error.name)
    return cli_main(argv)


def sdk_only_main(argv: list[str], missing: str | None) -> int:
    """`ipc-router` where the router's dependencies are not installed (`missing` is
    the first that was not found): `--version`, `services`, `--help`; any other
    command exits 2 with one line naming what to install."""
    from actors.admin_cli import (
        add_operator_commands,
        add_services_command,
        operator_command,
        services_command,
    )
    from actors.cli_output import ending_quietly_on_a_closed_stdout
    from actors.cli_parsing import CommandLineParser
    from actors.version import package_version

    needs = f"needs the router's dependencies ({missing} is not installed): {ROUTER_EXTRA}"
    parser = CommandLineParser(
        prog="ipc-router",
        description="Service registration and discovery router over NATS. This install "
        f"has the SDK only: `serve` and `bench` need {ROUTER_EXTRA}.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version('unknown')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_services_command(commands.add_parser)
    add_operator_commands(commands.add_parser)
    for name in ("serve", "bench"):
        commands.add_parser(name, help=f"(not installed: {ROUTER_EXTRA})", add_help=False)
    # Top-level options take no value: the first word that is not one is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    if command in ("serve", "bench"):
        print(f"ipc-router {command}: error: {needs}", file=sys.stderr)
        return 2

    def run() -> int:
        args = parser.parse_args(argv)
        return operator_command(args) if args.command in ("maintenance", "deregister") else services_command(args)

    return ending_quietly_on_a_closed_stdout(run)
