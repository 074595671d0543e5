"""benchmarks/failover.py's report: the verdicts against the targets and the printed
table, from a report of the shape the benchmark writes (no processes started)."""

from __future__ import annotations

import copy
from typing import Any

from benchmarks.failover import TARGETS, _summary, _verdicts, render


def _stack(name: str, register: int, heartbeat: int) -> dict[str, Any]:
    def row(throughput: int) -> dict[str, Any]:
        return {
            "throughput": throughput, "echo_throughput": 30_000, "vs_echo": round(throughput / 30_000, 3),
            "p50_ms": 2.0, "echo_p50_ms": 1.5, "p99_ms": 5.0, "errors": {},
        }  # fmt: skip

    return {"name": name, "router_args": [], "register": row(register), "heartbeat": row(heartbeat)}


def _report(takeovers: list[float], *, lost: int = 0, unhealthy: int = 0) -> dict[str, Any]:
    kills = [
        {
            "number": n + 1, "killed_pid": 100 + n, "first_write_s": t, "leadership_taken_s": t - 0.01,
            "new_leader_pid": 200 + n, "term": n, "probes_acknowledged": 1, "replacement_ready_s": 0.8,
            "notes": [],
        }
        for n, t in enumerate(takeovers)
    ]  # fmt: skip
    return {
        "date": "2026-12-01 10:00 UTC",
        "machine": "2 CPUs",
        "load_average_at_end": [1.0, 1.0, 1.0],
        "failover": {
            "kills": len(takeovers),
            "routers": 3,
            "replicas": 3,
            "failover_after_s": 0.5,
            "heartbeating_instances": 200,
            "per_kill": kills,
            "takeover_first_write_s": _summary(takeovers, len(takeovers)),
            "takeover_leadership_taken_s": _summary([t - 0.01 for t in takeovers], len(takeovers)),
            "acknowledged_registrations": 1000,
            "acknowledged_lost_per_router": {"1": lost},
            "acknowledged_lost": lost,
            "registration_failures": 0,
            "registration_failure_samples": [],
            "slowest_acknowledged_registration_s": 1.1,
            "wrongly_unhealthy_events": unhealthy,
            "wrongly_unhealthy_instances": [],
            "heartbeating_not_online_per_router": {"1": 0},
            "revisions_agree": True,
        },
        "throughput": {
            "in_flight": 64,
            "stacks": [
                _stack("(a) memory", 20_000, 25_000),
                _stack("(b) R1", 14_000, 24_000),
                _stack("(c) R3", 6_000, 23_000),
            ],
            "ratios": {
                f"{phase}_{label}_vs_memory{suffix}": value
                for (phase, label), ratio in {
                    ("register", "r1"): 0.7,
                    ("register", "r3"): 0.3,
                    ("heartbeat", "r1"): 0.96,
                    ("heartbeat", "r3"): 0.92,
                }.items()
                for suffix, value in (
                    ("", ratio),
                    ("_range", [ratio - 0.05, ratio + 0.05]),
                    ("_echo_normalised", ratio),
                )
            },
            "rounds": 3,
        },
        "targets": TARGETS,
    }


def test_a_run_within_the_targets_meets_every_one_and_prints_them() -> None:
    report = _report([0.5, 0.55, 0.6])
    report["verdicts"] = _verdicts(report)
    assert all(report["verdicts"].values()), report["verdicts"]
    text = render(report)
    assert "p50 0.55 s, max 0.6 s (3 of 3 measured)" in text
    assert "NOT MET" not in text


def test_a_slow_takeover_a_lost_registration_or_a_false_unhealthy_is_not_met() -> None:
    for report, target in (
        (_report([0.5, 1.2]), "takeover <= 1 s (max)"),
        (_report([0.5], lost=1), "acknowledged registrations lost = 0"),
        (_report([0.5], unhealthy=2), "instances wrongly UNHEALTHY = 0"),
    ):
        verdicts = _verdicts(report)
        assert verdicts[target] is False, (target, verdicts)
        report["verdicts"] = verdicts
        assert f"NOT MET  {target}" in render(report)


def test_a_takeover_not_measured_is_not_met() -> None:
    report = _report([0.5, 0.5])
    unmeasured = copy.deepcopy(report)
    unmeasured["failover"]["takeover_first_write_s"] = _summary([0.5], 2)
    assert _verdicts(unmeasured)["takeover <= 1 s (max)"] is False
    assert _summary([], 3) == {"measured": 0, "of": 3}
