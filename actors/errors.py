"""Errors that stop the router from starting; the CLI prints them as one line."""

from __future__ import annotations

__all__ = ["PORT_OPTIONS", "FatalError", "PortInUseError", "StartupError"]

PORT_OPTIONS = {"HTTP": "--http-port", "NATS": "--embedded-nats-port"}
"""The `ipc-router serve` option that moves each port, by what the port is for."""


class StartupError(RuntimeError):
    """The router cannot start as configured."""


class FatalError(RuntimeError):
    """An actor cannot go on, and starting it again would not help (its stream cannot
    be read, say): its supervisor stops every child and the process exits 1, for an
    orchestrator to start it afresh."""


class PortInUseError(StartupError):
    """A port the router needs is already taken by another process."""

    def __init__(self, what: str, host: str, port: int) -> None:
        """`what` names the port ("HTTP", "NATS"); the message names the command-line
        option that changes it, the one `PORT_OPTIONS` gives for `what`."""
        self.option = PORT_OPTIONS.get(what)
        where = f"choose another with {self.option}" if self.option else "choose another port"
        super().__init__(
            f"{what} port {host}:{port} is already in use; stop what holds it or {where}"
        )
        self.host = host
        self.port = port
