"""Sample-size planning (--n 15,30,60) and pilot data models (--pilot run:ID) of the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.stats

from docketml.ledger.verdict.simulate import POWER_TARGET, _resample, simulate_protocol
from docketml.protocols.loader import load_protocol_text

YAML = """\
docket: 1
id: power-test
title: power test
seed: 5
hypotheses:
  - {id: H1, statement: the entropy flags OOD, rule: rw}
  - {id: H2, statement: the entropy separates, rule: th}
signals:
  s_pos: {higher_means: positive}
  s_conf: {higher_means: negative, role: baseline}
labels: {source: regime, positive: ood, negative: in_domain, reference: in_domain}
groups: [in_domain, ood_a, ood_b]
decision_rules:
  rw:
    kind: regime_wins
    candidates: [s_pos]
    margin: 0.02
    ci: {resamples: 200, seed: 1}
    verdicts:
      PROVEN: {min_wins: 2}
      PARTIAL: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
  th:
    kind: threshold
    statistic: auroc
    signal: s_pos
    op: ">="
    bound: 0.7
    ci: {resamples: 200, seed: 1}
jobs:
  - {name: probe, kind: synthetic}
"""


def protocol():
    return load_protocol_text(YAML, "power.yaml").protocol


def test_power_rises_with_n_and_the_null_rarely_proves() -> None:
    sizes = [10, 40, 160]
    result = simulate_protocol(protocol(), n_sims=80, sizes=sizes, gaps=[0.0, 0.15])
    by_rule = {r["rule"]: r for r in result["rules"]}
    assert result["settings"]["sizes"] == sizes and result["settings"]["resamples_cap"] is None
    for name in ("rw", "th"):
        rule = by_rule[name]
        assert rule["resamples"] == 200 and [b["n"] for b in rule["by_size"]] == sizes
        clear = [b["points"][-1]["rates"]["PROVEN"] for b in rule["by_size"]]
        assert clear[0] < clear[1] < clear[2] and clear[2] >= 0.9, (name, clear)
        for block in rule["by_size"]:
            # a 95% two-sided percentile CI: about 2.5% PROVEN at the null; 80 studies give a
            # binomial standard error of 1.7%, so 0.1 is loose but a broken null would fail it
            assert block["null_proven_rate"] <= 0.1, (name, block)
        # required_n re-derived from the table: the smallest n reaching 80% PROVEN
        for j, req in enumerate(rule["required_n"]):
            hits = [
                b["n"] for b in rule["by_size"] if b["points"][j]["rates"]["PROVEN"] >= POWER_TARGET
            ]
            assert req["n"] == (min(hits) if hits else None)
    # regime_wins plans at its declared margin (gap 0.02, added to the table): not reached
    plan = by_rule["rw"]["planning"]
    assert plan["gap"] == 0.02 and plan["n"] is None
    assert by_rule["th"]["planning"]["gap"] is None


def test_threshold_power_matches_a_normal_approximation() -> None:
    """Independent reference: with n positives and n negatives of a binormal pair at AUROC A,
    the AUROC's SD is about Hanley-McNeil's; power ~ Phi((A - bound)/sd - z_0.975)."""
    p = protocol()
    n, gap = 60, 0.08
    result = simulate_protocol(p, n_sims=200, sizes=[n], gaps=[gap])
    th = next(r for r in result["rules"] if r["rule"] == "th")
    got = next(pt for pt in th["points"] if pt["gap"] == gap)["rates"]["PROVEN"]
    a = 0.7 + gap
    n_pos, n_neg = 2 * n, n  # regime labels: two OOD groups against one reference group
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    expected = scipy.stats.norm.cdf(gap / np.sqrt(var) - scipy.stats.norm.ppf(0.975))
    assert abs(got - expected) < 0.12, (got, expected)


def test_resample_keeps_each_items_signals_together() -> None:
    rng = np.random.default_rng(0)
    row = np.arange(6, dtype=float)
    mat = np.stack([row, 10.0 * row])
    out = _resample(rng, mat, 5, 7)
    assert out.shape == (5, 2, 7)
    assert np.array_equal(out[:, 1], out[:, 0] * 10.0)
    assert set(out[:, 0].ravel()) <= set(mat[0])


def _pilot_rows(shift: float, n: int = 40, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for g in ("in_domain", "ood_a", "ood_b"):
        for i in range(n):
            s = 0.0 if g == "in_domain" else shift
            base = rng.standard_normal()
            rows.append(
                {
                    "group": g,
                    "item": f"{g}-{i}",
                    "signals": {"s_pos": s + base, "s_conf": -(0.2 * s + base)},
                }
            )
    return rows


def _ingest(docket, tmp_path: Path, rows: list[dict], name: str) -> int:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = docket("ingest", "power-test", str(path), "--json")
    assert r.exit_code == 0, r.output
    return int(json.loads(r.output)["run_id"])


def test_pilot_run_drives_the_simulation(docket_sqlite, tmp_path: Path) -> None:
    proto = tmp_path / "power.yaml"
    proto.write_text(YAML)
    assert docket_sqlite("protocol", "register", str(proto)).exit_code == 0
    assert docket_sqlite("protocol", "freeze", "power-test").exit_code == 0
    strong = _ingest(docket_sqlite, tmp_path, _pilot_rows(1.5), "strong")
    none = _ingest(docket_sqlite, tmp_path, _pilot_rows(0.0, seed=1), "none")

    def run(ref: str) -> dict:
        r = docket_sqlite(
            "protocol", "simulate", "power-test", "--pilot", ref, "--runs", "40", "--json"
        )
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    got = run(f"run:{strong}")
    assert got["settings"]["model"] == "pilot" and f"run #{strong}" in got["settings"]["pilot"]
    assert any("pilot data model" in n for n in got["notes"])
    rw = next(r for r in got["rules"] if r["rule"] == "rw")
    assert [p["gap"] for p in rw["points"]] == [None] and rw["null_proven_rate"] is None
    assert rw["points"][0]["rates"]["PROVEN"] >= 0.9
    flat = next(r for r in run(str(none))["rules"] if r["rule"] == "rw")
    assert flat["points"][0]["rates"]["PROVEN"] <= 0.2

    bad = docket_sqlite("protocol", "simulate", "power-test", "--pilot", "run:999")
    assert bad.exit_code == 2 and "no run #999" in bad.output


def test_cli_sizes_and_explicit_cap(docket_sqlite, tmp_path: Path) -> None:
    proto = tmp_path / "power.yaml"
    proto.write_text(YAML)
    assert docket_sqlite("protocol", "register", str(proto)).exit_code == 0
    r = docket_sqlite(
        "protocol", "simulate", "power-test", "--n", "10,20", "--runs", "10", "--resamples", "50"
    )
    assert r.exit_code == 0, r.output
    assert "n = 10 per class, resamples 50" in r.output and "n = 20 per class" in r.output
    assert "capped at 50 (explicit --resamples" in r.output
    assert "smallest n reaching 80% PROVEN, by gap: " in r.output
    assert "at gap +0.020 (the declared margin" in r.output
    bad = docket_sqlite("protocol", "simulate", "power-test", "--n", "10,x")
    assert bad.exit_code == 2 and "--n" in bad.output


def test_row_blocks_drawn_once_match_the_per_block_path_bit_for_bit() -> None:
    from docketml.ledger.verdict import rules, stats

    rng = np.random.default_rng(3)
    k, n_pos, n_neg, b = 3 * rules._ROW_BLOCK + 7, 23, 31, 2100
    pos = np.round(rng.standard_normal((k, n_pos)), 1)  # ties included
    neg = np.round(rng.standard_normal((k, n_neg)), 1)
    fast_rng, slow_rng = np.random.default_rng(9), np.random.default_rng(9)
    fast = rules._bootstrap_aurocs(pos, neg, b, fast_rng)
    saved = stats.ROWS_CACHE_BYTES
    stats.ROWS_CACHE_BYTES = 0  # type: ignore[misc]  # force the per-block path
    try:
        slow = rules._bootstrap_aurocs(pos, neg, b, slow_rng)
    finally:
        stats.ROWS_CACHE_BYTES = saved
    assert np.array_equal(fast, slow)
    assert fast_rng.bit_generator.state == slow_rng.bit_generator.state
    # and each row is the public per-signal bootstrap of that row alone
    labels = np.r_[np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)]
    one = stats.stratified_paired_bootstrap(
        {"s": np.r_[pos[50], neg[50]]}, labels, b, np.random.default_rng(9)
    )["s"]
    assert np.array_equal(one, fast[50])
