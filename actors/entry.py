"""The `ipc-router` console script's entry point: one clear line, not a traceback,
when the router's dependencies are not installed (a service that installed only the
SDK, `pip install ipc-router`, still gets the script)."""

from __future__ import annotations

import sys

__all__ = ["main"]

_ROUTER_EXTRA = "pip install 'ipc-router[router]'"


def main() -> int:
    """Run `actors.cli.main`, or say which extra is missing."""
    try:
        from actors.cli import main as cli_main
    except ModuleNotFoundError as error:
        print(
            f"ipc-router: error: the router needs its dependencies ({error.name} is not "
            f"installed): {_ROUTER_EXTRA}",
            file=sys.stderr,
        )
        return 2
    return cli_main()
