"""How `ipc-router` reads its command line: the argument parser, the value types of
its options, and the options that also read an `IPC_ROUTER_*` environment variable.

Every usage error is one line after the usage of the command it belongs to, naming
the option (or the variable) and the form or range it accepts:

    ipc-router serve: error: --heartbeat-interval must be more than 0 and at most
    86400 seconds (got '0')

Standard library only (and `protocol`'s constants), so that an install without the
router's extra can parse `ipc-router services` too.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Self
from urllib.parse import urlsplit

from protocol import NAME_PATTERN, SERVICE_NAME_MAX_LENGTH

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = [
    "MAX_SECONDS",
    "CommandLineParser",
    "EnvironmentValue",
    "HostName",
    "HttpUrl",
    "InboxPrefix",
    "InboxPrefixList",
    "NatsUrl",
    "Option",
    "Seconds",
    "ServiceName",
    "StreamName",
    "Token",
    "ValueType",
    "WholeNumber",
    "add_options",
]

MAX_SECONDS = 86_400.0
"""The longest duration any option takes: a day."""


# -- value types -------------------------------------------------------------------------


class ValueType:
    """An option's type: turns the text given into a value, and says what it
    accepts (`accepted`, such as "a port number from 0 to 65535"), both in the error
    for a bad value and for a missing one."""

    accepted = "a value"

    def __call__(self, text: str) -> Any:
        raise NotImplementedError

    def reject(self, text: str) -> NoReturn:
        """Fail for `text`, in the words every option uses."""
        raise argparse.ArgumentTypeError(f"must be {self.accepted} (got {_shown(text)})")


def _shown(text: str) -> str:
    """A value as the error repeats it: quoted when quotes help to see it."""
    return text if text and re.fullmatch(r"[\w.:/+-]+", text) else repr(text)


class WholeNumber(ValueType):
    """A whole number from `minimum` to `maximum` (or more, when `maximum` is None)."""

    def __init__(self, minimum: int, maximum: int | None = None, what: str = "a whole number"):
        self.minimum = minimum
        self.maximum = maximum
        if maximum is None:
            self.accepted = f"{what} of at least {minimum}"
        else:
            self.accepted = f"{what} from {minimum} to {maximum}"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            self.reject(text)
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            self.reject(text)
        return value


class Seconds(ValueType):
    """A duration in seconds, more than 0 and at most `maximum`."""

    def __init__(self, maximum: float = MAX_SECONDS) -> None:
        self.maximum = maximum
        self.accepted = f"more than 0 and at most {maximum:g} seconds"

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            self.reject(text)
        if math.isnan(value) or not 0 < value <= self.maximum:
            self.reject(text)
        return value


NATS_SCHEMES = ("nats", "tls", "ws", "wss")


class NatsUrl(ValueType):
    """One NATS server URL or several, comma-separated (a cluster): each
    `scheme://host[:port]` with a NATS scheme, all websocket or none (as nats-py
    requires). Checked here, so that a typo is an error at once rather than a
    connection retried until it times out."""

    accepted = (
        "a NATS URL, nats://host:port (or tls://, ws://, wss://), several comma-separated "
        "for a cluster"
    )

    def __call__(self, text: str) -> str:
        if not text:
            return text  # none: the default applies
        parts = [part.strip() for part in text.split(",")]
        if not all(_is_server_url(part, NATS_SCHEMES) for part in parts):
            self.reject(text)
        websocket = {urlsplit(part).scheme in ("ws", "wss") for part in parts}
        if len(websocket) > 1:
            raise argparse.ArgumentTypeError(
                f"must be all websocket (ws, wss) or all NATS (nats, tls) URLs (got {text!r})"
            )
        return text


class HttpUrl(ValueType):
    """An admin API base URL: http(s)://host[:port][/path] (a path: behind a proxy)."""

    accepted = "an http:// or https:// URL such as http://127.0.0.1:8080"

    def __call__(self, text: str) -> str:
        if not _is_server_url(text, ("http", "https"), path_allowed=True):
            self.reject(text)
        return text


def _is_server_url(text: str, schemes: Sequence[str], path_allowed: bool = False) -> bool:
    """Whether `text` is `scheme://[user[:password]@]host[:port][/]` (any path, with
    `path_allowed`) with one of `schemes`, a host, and a port (if any) from 1 to 65535."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return False
    return (
        parts.scheme in schemes
        and bool(parts.hostname)
        and (port is None or port > 0)
        and (path_allowed or parts.path in ("", "/"))
        and not parts.query
        and not parts.fragment
    )


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?")


class HostName(ValueType):
    """An address to bind: an IPv4 or IPv6 address, or a host name."""

    accepted = "an IP address or host name, such as 127.0.0.1 or 0.0.0.0"

    def __call__(self, text: str) -> str:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if not _HOST_NAME.fullmatch(text):
                self.reject(text)
        return text


_INBOX_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class InboxPrefix(ValueType):
    """A NATS inbox prefix: subject tokens without wildcards."""

    accepted = "subject tokens without wildcards, such as _INBOX_service"

    def __call__(self, text: str) -> str:
        if not _INBOX_PREFIX.fullmatch(text):
            self.reject(text)
        return text


class InboxPrefixList(ValueType):
    """Inbox prefixes, comma-separated (a trailing `.` of each ignored); empty: none."""

    accepted = "inbox prefixes, comma-separated, such as _INBOX_service,_INBOX_admin"

    def __call__(self, text: str) -> str:
        prefixes = [part.strip().rstrip(".") for part in text.split(",") if part.strip()]
        if not all(_INBOX_PREFIX.fullmatch(prefix) for prefix in prefixes):
            self.reject(text)
        return text


class StreamName(ValueType):
    """A JetStream stream name that is also a single subject token (it is one in
    `$JS.API.STREAM.INFO.<name>`)."""

    accepted = "a stream name: letters, digits, _ and -, at most 255 characters"

    def __call__(self, text: str) -> str:
        if len(text) > 255 or not re.fullmatch(NAME_PATTERN, text):
            self.reject(text)
        return text


class ServiceName(ValueType):
    """A service name as the registry accepts it."""

    accepted = (
        f"a service name of 1-{SERVICE_NAME_MAX_LENGTH} letters, digits, _ or -"
    )

    def __call__(self, text: str) -> str:
        if len(text) > SERVICE_NAME_MAX_LENGTH or not re.fullmatch(NAME_PATTERN, text):
            self.reject(text)
        return text


class Token(ValueType):
    """A bearer token: visible ASCII, as an HTTP header carries it; empty: none."""

    accepted = "visible ASCII characters without spaces (it travels in an HTTP header)"

    def __call__(self, text: str) -> str:
        if not all("!" <= char <= "~" for char in text):
            raise argparse.ArgumentTypeError(f"must be {self.accepted}")  # (never echoed)
        return text


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
