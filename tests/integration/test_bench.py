"""`ipc-router bench` end to end at a tiny size: it starts its own nats-server,
router and echo responder, and reports every phase beside its baseline."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from actors.cli import main
from benchmarks.loadgen import BenchConfig, render_report, reply_status, report_json, run_bench
from protocol import ErrorInfo, RegisterReply, encode_msgpack

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("raw", [False, True], ids=["sdk", "raw"])
async def test_bench_reports_each_phase_beside_the_echo_baseline(raw: bool) -> None:
    config = BenchConfig(instances=300, services=5, concurrency=16, heartbeat_seconds=0.3, raw=raw, progress=False)
    report = await run_bench(config)
    phases = {p["name"]: p for p in report["phases"]}
    assert set(phases) == {"echo-register", "register", "echo-heartbeat", "heartbeat", "echo-query", "query"}
    assert phases["register"]["requests"] == 300
    assert phases["register"]["errors"] == {}
    assert phases["heartbeat"]["errors"] == {}, "heartbeats for registered instances must all be 200"
    assert phases["query"]["errors"] == {}
    for name in ("register", "heartbeat", "query"):
        assert report["ratios"][name]["throughput"] > 0
        assert report["ratios"][name]["p50"] > 0
    out = io.StringIO()
    render_report(report, out)
    assert "ratio to the raw NATS echo round trip" in out.getvalue()
    assert json.loads(report_json(report))["config"]["instances"] == 300


def test_reply_status_reads_the_status_without_decoding_the_reply() -> None:
    assert reply_status(encode_msgpack(RegisterReply(status=201))) == "201"
    assert reply_status(encode_msgpack(RegisterReply(status=409, error=ErrorInfo(code="x", message="y")))) == "409"
    assert reply_status(encode_msgpack(RegisterReply(status=7))) == "7"
    assert reply_status(b"\x80") == "unreadable"


def test_bench_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "-n", "100", "-s", "2", "-c", "8", "-d", "0.2", "--json", "--no-progress"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["instances"] == 100


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("tqdm", "bench needs the bench extra: pip install 'ipc-router[bench]'"),
        ("benchmarks.loadgen", "bench needs the load generator (benchmarks/loadgen.py)"),
    ],
)
def test_bench_without_its_extra_or_module_is_a_one_line_usage_error(
    missing: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delitem(sys.modules, "benchmarks.loadgen")
    monkeypatch.setitem(sys.modules, missing, None)  # None: "import of ... halted"
    assert main(["bench", "-n", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ipc-router: error: {message}")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_router_modules_do_not_import_the_load_generator_or_tqdm() -> None:
    code = (
        "import importlib, pkgutil, sys, actors\n"
        "for m in pkgutil.iter_modules(actors.__path__, 'actors.'):\n"
        "    if m.name != 'actors.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tqdm', 'benchmarks')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_command_runs_from_any_working_directory(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "ipc-router"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "actors"]
    done = subprocess.run(
        [*command, "bench", "-n", "50", "-s", "2", "-c", "4", "-d", "0.2", "--json", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["config"]["instances"] == 50
