"""Rule simulation: the paper's rule rarely proves a null, power rises with the gap, --out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from docketml.ledger.verdict.simulate import simulate_protocol
from docketml.protocols.loader import load_protocol_file

ROUTER = (
    Path(__file__).resolve().parents[1] / "protocols" / "library" / "router_entropy_metacog.yaml"
)


def test_null_proven_rate_is_low_and_power_rises_with_the_gap() -> None:
    protocol = load_protocol_file(ROUTER).protocol
    result = simulate_protocol(protocol, n_sims=120, gaps=[0.0, 0.1, 0.2], resamples=1000)
    by_rule = {r["rule"]: r for r in result["rules"]}
    gates = {"gate_gibberish", "gate_in_domain_fp", "gate_heldout_refusals"}
    assert set(by_rule) == {"regime_wins", "splice_transfers", "corollary_auroc"} | gates
    rw = by_rule["regime_wins"]
    proven = [p["rates"]["PROVEN"] for p in rw["points"]]
    assert rw["null_proven_rate"] == proven[0] <= 0.05
    assert proven[0] < proven[1] < proven[2] and proven[2] >= 0.8
    for point in rw["points"]:
        assert abs(sum(point["rates"].values()) - 1.0) < 1e-12
    # one-sided 95% rules at the null: PROVEN about 2.5% of the time (0.1 leaves room for the
    # Monte Carlo error of 120 studies and the percentile bootstrap's small-sample coverage)
    assert by_rule["corollary_auroc"]["null_proven_rate"] <= 0.1
    assert by_rule["splice_transfers"]["null_gap"] == -0.05
    assert by_rule["splice_transfers"]["null_proven_rate"] <= 0.1
    assert by_rule["gate_gibberish"]["null_proven_rate"] <= 0.1
    # the observed gates are not tests: count >= 9 of N = 30 (one group, 30 items) at a true
    # rate of 9/30 + gap passes with the binomial probability P(k >= 9), about 0.59 at the null
    refusals = by_rule["gate_heldout_refusals"]
    for point in refusals["points"]:
        exact = float(scipy.stats.binom.sf(8, 30, 0.3 + point["gap"]))
        se = max((exact * (1 - exact) / 120) ** 0.5, 1e-3)
        assert abs(point["rates"]["PROVEN"] - exact) <= 4 * se
        assert point["rates"]["PARTIAL"] == 0.0
    # a true in-domain false-positive rate of 0 never flags a sample: PROVEN in every study
    assert {p["rates"]["PROVEN"] for p in by_rule["gate_in_domain_fp"]["points"]} == {1.0}
    assert any("capped at 1000 (explicit --resamples" in n for n in result["notes"])
    assert {r["resamples"] for r in result["rules"]} == {1000}


def test_simulation_is_deterministic() -> None:
    protocol = load_protocol_file(ROUTER).protocol
    a = simulate_protocol(protocol, n_sims=20, gaps=[0.0, 0.15])
    b = simulate_protocol(protocol, n_sims=20, gaps=[0.0, 0.15])
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    # by default every rule runs as frozen: its own 10,000 resamples
    assert {r["resamples"] for r in a["rules"]} == {10_000}
    assert any("full fidelity" in n for n in a["notes"]) and a["settings"]["resamples_cap"] is None


def test_simulate_command_writes_a_png(docket_sqlite, tmp_path: Path) -> None:
    assert docket_sqlite("protocol", "register", str(ROUTER)).exit_code == 0
    png = tmp_path / "power.png"
    r = docket_sqlite(
        "protocol",
        "simulate",
        "router-entropy-metacog",
        "--runs",
        "20",
        "--out",
        str(png),
        "--json",
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["plot"] == str(png) and data["settings"]["n_sims"] == 20
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    human = docket_sqlite(
        "protocol", "simulate", "router-entropy-metacog", "--runs", "10", "--n", "15"
    )
    assert human.exit_code == 0
    assert "PROVEN rate under the null" in human.output and "15 items per class" in human.output
    assert np.isfinite(data["rules"][0]["null_proven_rate"])


@pytest.mark.parametrize("engine", [1, 2, 3])
def test_points_on_worker_processes_match_serial_bit_for_bit(monkeypatch, engine):
    """Points run on two forked workers (DOCKET_WORKERS=2) give exactly the serial (=1) result,
    and the workers really ran them (the points' process ids differ from this process's)."""
    from docketml.ledger.verdict import parallel

    protocol = load_protocol_file(ROUTER).protocol
    runs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("DOCKET_WORKERS", workers)
        runs[workers] = simulate_protocol(
            protocol, n_sims=12, gaps=[0.0, 0.1, 0.2], resamples=200, engine=engine
        )
    assert runs["1"] == runs["2"]
    monkeypatch.setenv("DOCKET_WORKERS", "2")
    pids = set(parallel.ordered_map(lambda _: os.getpid(), range(8)))
    assert os.getpid() not in pids and len(pids) >= 1
    assert list(parallel.ordered_map(lambda x: x * x, list(range(20)))) == [
        x * x for x in range(20)
    ]


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5"])
def test_a_malformed_docket_workers_is_refused_naming_it(monkeypatch, raw):
    from docketml.ledger.verdict import parallel

    monkeypatch.setenv("DOCKET_WORKERS", raw)
    with pytest.raises(ValueError, match="DOCKET_WORKERS"):
        parallel.worker_count(4)


def _blas_threads(_: object) -> list[int]:
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_share_the_cpus_between_their_blas_threads(monkeypatch, workers):
    """Each forked worker runs at most cpus // workers BLAS threads (never cpus each: two
    workers with two gemm threads apiece oversubscribed two cores); the serial path (one worker,
    this process) keeps the process's own setting."""
    from docketml.ledger.verdict import parallel

    monkeypatch.setenv("DOCKET_WORKERS", str(workers))
    seen = list(parallel.ordered_map(_blas_threads, range(4)))
    cpus = parallel._usable_cpus()
    if workers == 1:
        assert seen == [_blas_threads(None)] * 4
    else:
        want = max(1, cpus // workers)
        assert seen and all(threads and set(threads) == {want} for threads in seen), seen


def test_worker_count_is_bounded_by_the_tasks(monkeypatch):
    from docketml.ledger.verdict import parallel

    monkeypatch.setenv("DOCKET_WORKERS", "3")
    assert parallel.worker_count(2) == 2
    assert parallel.worker_count(5) == 3


def test_simulate_command_refuses_a_malformed_docket_workers(docket_sqlite, monkeypatch) -> None:
    """Exit 2 naming DOCKET_WORKERS and what was expected, before any simulation."""
    assert docket_sqlite("protocol", "register", str(ROUTER)).exit_code == 0
    monkeypatch.setenv("DOCKET_WORKERS", "lots")
    r = docket_sqlite("protocol", "simulate", "router-entropy-metacog", "--runs", "5")
    assert r.exit_code == 2, r.output
    assert "DOCKET_WORKERS='lots'" in r.output and "integer >= 1" in r.output
    assert "Traceback" not in r.output
