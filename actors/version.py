"""The installed `ipc-router` distribution's version (standard library only, so that
anything may import it)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_version"]


def package_version(fallback: str) -> str:
    """The version of the installed `ipc-router` distribution, or `fallback` when this
    code runs from a source tree that was never installed."""
    try:
        return version("ipc-router")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return fallback
