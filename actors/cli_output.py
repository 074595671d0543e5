"""A command's end when whatever reads its output stops reading, as in
`ipc-router services | head -3`: exit 141 without a traceback, the rest dropped.

Standard library only: every `ipc-router` command runs through it, in an install
without the router's extra too."""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable

__all__ = ["EXIT_BROKEN_PIPE", "ending_quietly_on_a_closed_stdout"]

EXIT_BROKEN_PIPE = 141
"""The reader of stdout went away (`| head`): 128 + SIGPIPE, what a shell reports for a
tool that SIGPIPE ended."""


def ending_quietly_on_a_closed_stdout(command: Callable[[], int]) -> int:
    """Run `command` and return its exit code; `EXIT_BROKEN_PIPE` when the reader of
    stdout went away meanwhile, whatever it was printing."""
    try:
        try:
            return command()
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
