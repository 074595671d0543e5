"""Errors that stop the router from starting; the CLI prints them as one line."""

from __future__ import annotations

__all__ = ["PortInUseError", "StartupError"]


class StartupError(RuntimeError):
    """The router cannot start as configured."""


class PortInUseError(StartupError):
    """A port the router needs is already taken by another process."""

    def __init__(self, what: str, host: str, port: int) -> None:
        super().__init__(
            f"{what} port {host}:{port} is already in use; stop what holds it or choose another port"
        )
        self.host = host
        self.port = port
