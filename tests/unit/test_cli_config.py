"""What `ipc-router serve`'s options become, read when it starts (not at import)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.cli import _config, build_parser


def serve_config(*argv: str) -> Path | None:
    parser = build_parser()
    return _config(parser.parse_args(["serve", *argv]), parser).data_dir


def test_the_default_data_dir_follows_xdg_data_home_when_serve_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was fixed when actors.cli was first imported: a test's $XDG_DATA_HOME came too
    late, and routers started in-process kept their stream in the real home."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "first"))
    assert serve_config() == tmp_path / "first" / "ipc-router"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "second"))
    assert serve_config() == tmp_path / "second" / "ipc-router"


def test_a_data_dir_given_is_used_and_an_empty_one_means_a_temporary_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert serve_config("--data-dir", "~/registry") == Path.home() / "registry"
    monkeypatch.setenv("IPC_ROUTER_DATA_DIR", "")
    assert serve_config() is None
