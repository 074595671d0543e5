"""`reap_stale_run_dirs`: the run directories of nats-servers whose owner died are
removed, unless their server still runs; what is not ours is left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.embedded_nats import RUN_DIR_PREFIX, reap_stale_run_dirs

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The temporary directory, for this test alone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield tmp_path


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def run_dir(where: Path, name: str, owner: int | None, server: int | None) -> Path:
    path = where / f"{RUN_DIR_PREFIX}{name}"
    (path / "jetstream").mkdir(parents=True)
    if owner is not None:
        (path / "owner.pid").write_text(str(owner))
    if server is not None:
        (path / "server.pid").write_text(str(server))
    return path


def test_only_the_dirs_of_dead_owners_with_no_running_server_are_removed(
    own_tmp: Path, dead_pid: int
) -> None:
    stale = run_dir(own_tmp, "stale", owner=dead_pid, server=dead_pid)
    never_started = run_dir(own_tmp, "never-started", owner=dead_pid, server=None)
    shutting_down = run_dir(own_tmp, "server-runs", owner=dead_pid, server=os.getppid())
    owner_alive = run_dir(own_tmp, "owner-alive", owner=os.getppid(), server=dead_pid)
    mine = run_dir(own_tmp, "mine", owner=os.getpid(), server=dead_pid)
    not_ours = run_dir(own_tmp, "no-owner-file", owner=None, server=None)
    other = own_tmp / "something-else"
    other.mkdir()

    assert reap_stale_run_dirs() == 2
    assert not stale.exists() and not never_started.exists()
    for kept in (shutting_down, owner_alive, mine, not_ours, other):
        assert kept.exists(), kept.name
