"""How `ipc-router` reads its command line: the argument parser, and the options that
also read an `IPC_ROUTER_*` environment variable (the types of their values are in
`actors.cli_values`).

Every usage error is one line after the usage of the command it belongs to, naming
the option (or the variable) and the form or range it accepts:

    ipc-router serve: error: --heartbeat-interval must be more than 0 and at most
    86400 seconds (got 0)

Standard library only, so that an install without the router's extra can parse
`ipc-router services` too.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Self

from actors.cli_values import ValueType

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = ["CommandLineParser", "EnvironmentValue", "Option", "add_options"]


# -- the parser ----------------------------------------------------------------------------


class EnvironmentValue(str):
    """An option's value read from its environment variable: parsed like the command
    line, but an error names the variable."""

    variable: str

    def __new__(cls, text: str, variable: str) -> Self:
        value = super().__new__(cls, text)
        value.variable = variable
        return value


_ARGUMENT_ERROR = re.compile(r"argument (\S+): (.*)", re.DOTALL)
_REQUIRED = "the following arguments are required: "


class CommandLineParser(argparse.ArgumentParser):
    """argparse, with errors of one line that name the option and what it accepts,
    each after the usage of the command it belongs to: a command (`subcommand=True`)
    rejects an option it does not know itself, rather than leave it to the top-level
    parser and its usage.

    It also does not ignore a closed stdout (`--help | head -1`): the command then
    ends like any other whose reader went away."""

    def __init__(self, *args: Any, subcommand: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subcommand = subcommand
        self.commands: dict[str, argparse.ArgumentParser] = {}
        """The parsers of its commands, by name, for errors found after parsing (set
        by whoever adds them)."""

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        namespace, extras = super().parse_known_args(*args, **kwargs)
        if extras and self.subcommand:
            self.error(self._unknown(extras[0]))
        return namespace, extras

    def error(self, message: str) -> NoReturn:
        """Print this command's usage and one line saying what is wrong; exit 2."""
        super().error(self._explain(message))

    def _unknown(self, argument: str) -> str:
        if not argument.startswith("-"):
            return f"unexpected argument {argument!r} (see {self.prog} --help)"
        flag = argument.split("=", 1)[0]
        close = difflib.get_close_matches(flag, list(self._option_string_actions), n=1)
        hint = f"did you mean {close[0]}?" if close else f"see {self.prog} --help"
        return f"{flag} is not an option of {self.prog} ({hint})"

    def _explain(self, message: str) -> str:
        if message.startswith("unrecognized arguments: "):
            return self._unknown(message.removeprefix("unrecognized arguments: ").split()[0])
        if message.startswith(_REQUIRED):
            missing = message.removeprefix(_REQUIRED).split(", ")
            return "; ".join(f"{name} is missing: {self._accepts(name)}" for name in missing)
        matched = _ARGUMENT_ERROR.fullmatch(message)
        if matched is None:
            return message
        names, problem = matched.groups()
        name = max(names.split("/"), key=len)  # --instances, not -n
        if problem.startswith("expected "):
            return f"{name} needs a value: {self._accepts(name)}"
        if problem.startswith("ignored explicit argument "):
            return f"{name} takes no value (got {problem.rsplit(' ', 1)[-1]})"
        return f"{name} {problem}"

    def _accepts(self, name: str) -> str:
        """What the option or positional argument called `name` accepts."""
        action = self._option_string_actions.get(name) or next(
            (a for a in self._actions if name in (a.metavar, a.dest)), None
        )
        if action is None:
            return "see --help"
        if action.choices is not None:
            return "one of " + ", ".join(map(str, action.choices))
        return str(getattr(action.type, "accepted", ValueType.accepted))

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(action, f"must be one of {choices} (got {value!r})")

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        if not isinstance(arg_string, EnvironmentValue):
            return super()._get_value(action, arg_string)
        # A default from the environment: argparse converts it but would blame the
        # option, and would not check its choices.
        flag = max(action.option_strings, key=len)
        try:
            value = super()._get_value(action, str(arg_string))  # (a plain str from here)
            self._check_value(action, value)
        except argparse.ArgumentError as error:
            raise argparse.ArgumentError(
                None, f"{arg_string.variable} (for {flag}) {error.message}"
            ) from None
        return value

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message and file is sys.stdout:
            file.write(message)
            return
        super()._print_message(message, file)


# -- options backed by the environment --------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of a command that also reads `IPC_ROUTER_<FLAG>` (`--lease-ttl` reads
    `IPC_ROUTER_LEASE_TTL`): the command line wins over the environment, which wins
    over `default`.

    The help is `help`, the variable in brackets, `note`, then "(default: ...)" when
    there is a default. Defaults are strings, parsed by `parse` like the command line
    and the environment, so a bad environment value is a usage error naming the
    variable and the flag.
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
    """The title of the help section it is listed under, if not "options"."""

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

    def initial(self) -> str | None:
        """Its value before the command line: the environment's, else the default."""
        given = os.environ.get(self.env_var)
        return self.default if given is None else EnvironmentValue(given, self.env_var)


def add_options(
    parser: argparse.ArgumentParser,
    options: Sequence[Option],
    groups: dict[str, str] | None = None,
) -> None:
    """Add `options` to `parser`, reading the environment now; `groups` are the help
    sections they may name (title: description)."""
    sections = {
        title: parser.add_argument_group(title, description)
        for title, description in (groups or {}).items()
        if any(option.group == title for option in options)
    }
    for option in options:
        target = parser if option.group is None else sections[option.group]
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
                default=option.initial(),
                help=option.help_text,
            )
