"""Bootstrap engine versions (issue 15 item 4).

* Engine 1 reproduces, bit for bit, numbers pinned on main before versions existed
  (``tests/fixtures/engine_v1.json``, built by ``tests/engine_cases.py`` at commit 4c5515f).
* Engine 2 draws differently; it is checked against independent references: its resamples are
  recomputed with scikit-learn's ``roc_auc_score``, and its CIs agree with
  ``scipy.stats.bootstrap`` percentile intervals (stratified: ``paired=False`` over the two
  classes, each class's items keeping their signals together) within Monte Carlo error measured
  from repeated seeds.
* Ledger: the sign-check records the engine a protocol freezes with, verdicts use and store it,
  a protocol frozen before versions keeps engine 1, and the audit re-derives each verdict with
  its recorded engine and flags an engine that differs from the freeze.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from engine_cases import CASES, FIXTURES, run
from sklearn.metrics import roc_auc_score
from sqlalchemy import select

from docketml.ledger.integrity.audit import audit_session
from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.models import ProtocolRow, SignCheckRow, VerdictRow, utcnow
from docketml.ledger.verdict import rules, stats
from docketml.ledger.verdicts import load_dataset, rederive_verdict

PINNED = json.loads(FIXTURES[1].read_text())["cases"]
PINNED_V2 = json.loads(FIXTURES[2].read_text())["cases"]


# --------------------------------------------------------------------------------------------
# Engine 1: bit for bit
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_engine_1_reproduces_the_numbers_pinned_before_versions(case) -> None:
    assert run(case, engine=1) == PINNED[case[0]]
    assert run(case) == PINNED[case[0]]  # the library default is engine 1


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_engine_2_reproduces_the_numbers_pinned_before_engine_3(case) -> None:
    """Engine 2 verdicts recorded before engine 3 (and before the counting and row-selection
    changes that came with it) re-derive bit for bit."""
    assert run(case, engine=2) == PINNED_V2[case[0]]


def test_unknown_engine_versions_are_refused() -> None:
    for bad in (0, 4, True, "2"):
        with pytest.raises(ValueError, match="engine must be one of"):
            stats.check_engine(bad)  # type: ignore[arg-type]
    assert stats.LATEST_ENGINE in stats.ENGINE_VERSIONS and 1 in stats.ENGINE_VERSIONS


def test_engine_2_index_types_are_the_narrowest_that_hold_the_items() -> None:
    assert stats.index_dtype(30, 1) is np.int64
    assert stats.index_dtype(30, 2) is np.int16
    assert stats.index_dtype(32_768, 2) is np.int16  # indices 0..32767
    assert stats.index_dtype(32_769, 2) is np.int32
    pidx, nidx = stats.stratified_resample_indices(40_000, 7, 3, np.random.default_rng(1), 2)
    assert pidx.dtype == np.int32 and nidx.dtype == np.int16
    assert pidx.max() < 40_000 and nidx.max() < 7
    assert stats.index_dtype(30 * 30, 3) is np.int16  # engine 3's pair codes
    assert stats.index_dtype(200 * 200, 3) is np.int32


@pytest.mark.parametrize(("n_pos", "n_neg", "b"), [(30, 30, 1500), (17, 41, 700), (41, 17, 9)])
def test_engine_3_draws_each_resample_as_index_pairs(n_pos: int, n_neg: int, b: int) -> None:
    """The documented draw, rebuilt here from numpy calls: per block one pair code per position
    below min(n_pos, n_neg), divmod by n_neg, then the larger class's remaining positions."""
    got = stats.stratified_resample_indices(n_pos, n_neg, b, np.random.default_rng(5), 3)
    rng, m, big = np.random.default_rng(5), min(n_pos, n_neg), max(n_pos, n_neg)
    rows = max(1, min(1024, 2**20 // big))
    pos_parts, neg_parts = [], []
    for start in range(0, b, rows):
        r = min(rows, b - start)
        codes = rng.integers(0, n_pos * n_neg, size=(r, m), dtype=np.int16)
        p, q = np.divmod(codes, n_neg)
        if big > m:
            rest = rng.integers(0, big, size=(r, big - m), dtype=np.int16)
            p, q = (np.hstack([p, rest]), q) if n_pos > n_neg else (p, np.hstack([q, rest]))
        pos_parts.append(p)
        neg_parts.append(q)
    assert np.array_equal(got[0], np.vstack(pos_parts)) and np.array_equal(
        got[1], np.vstack(neg_parts)
    )
    assert got[0].shape == (b, n_pos) and got[1].shape == (b, n_neg)


def test_engine_3_pairs_are_uniform_and_independent() -> None:
    """Chi-square on the joint frequencies of (positive, negative) index at one position and of
    two positives at two positions: uniform on the product set (independent, uniform margins),
    and the bootstrap's class counts are exactly n per resample."""
    n_pos, n_neg, b = 4, 6, 60_000
    pidx, nidx = stats.stratified_resample_indices(n_pos, n_neg, b, np.random.default_rng(8), 3)
    for a, c, k in (
        (pidx[:, 0], nidx[:, 0], n_neg),
        (pidx[:, 1], nidx[:, 5], n_neg),
        (pidx[:, 0], pidx[:, 3], n_pos),
    ):
        table = np.bincount(a * k + c, minlength=n_pos * k)
        assert scipy.stats.chisquare(table).pvalue > 1e-4
    assert pidx.shape == (b, n_pos) and nidx.shape == (b, n_neg)


# --------------------------------------------------------------------------------------------
# Engine 2: its own contract, checked against scikit-learn
# --------------------------------------------------------------------------------------------


def _group(seed: int, n_pos: int, n_neg: int, signals: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(signals, n) oriented scores with ties, and labels (positives first)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)]
    shift = np.linspace(0.2, 1.2, signals)[:, None] * labels
    return np.round(rng.standard_normal((signals, n_pos + n_neg)) + shift, 1), labels


@pytest.mark.parametrize("engine", [2, 3])
@pytest.mark.parametrize(("n_pos", "n_neg"), [(30, 30), (17, 41), (400, 400)])
def test_engine_2_resamples_recomputed_with_sklearn(n_pos: int, n_neg: int, engine: int) -> None:
    """Engine 2's and engine 3's bootstrap AUROCs are exactly the AUROCs of the resamples that
    ``stratified_resample_indices(..., engine)`` draws from the same seed (pairwise and rank
    kernels), recomputed one by one with scikit-learn."""
    scores, labels = _group(3, n_pos, n_neg)
    b = 1500 if n_pos < 100 else 40
    boots = stats.stratified_paired_bootstrap(
        dict(enumerate(scores)), labels, b, np.random.default_rng(7), engine=engine
    )
    pidx, nidx = stats.stratified_resample_indices(
        n_pos, n_neg, b, np.random.default_rng(7), engine
    )
    assert pidx.dtype == (np.int16 if engine == 2 or n_pos * n_neg < 2**15 else np.int32)
    pos_rows, neg_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    for r in list(range(0, b, max(1, b // 25))):
        sel = np.r_[pos_rows[pidx[r]], neg_rows[nidx[r]]]
        for s in range(scores.shape[0]):
            assert boots[s][r] == pytest.approx(
                roc_auc_score(labels[sel], scores[s][sel]), abs=1e-12
            )
    # and no engine is an earlier one under another name
    for earlier in range(1, engine):
        one = stats.stratified_paired_bootstrap(
            dict(enumerate(scores)), labels, b, np.random.default_rng(7), engine=earlier
        )
        assert not np.array_equal(one[0], boots[0])


def test_engine_2_joint_counts_equal_per_class_bincounts() -> None:
    rng = np.random.default_rng(2)
    for n_pos, n_neg, b in ((30, 30, 1024), (5, 90, 333), (1, 2, 7), (40, 1700, 600)):
        p = rng.integers(0, n_pos, (b, n_pos), dtype=np.int16)
        q = rng.integers(0, n_neg, (b, n_neg), dtype=np.int16)
        counter = stats._JointCounter(n_pos, n_neg, np.float32)
        for _ in range(2):  # buffers reused between blocks
            wp, wq = counter(p, q)
            assert np.array_equal(wp, stats._resample_counts(p, n_pos))
            assert np.array_equal(wq, stats._resample_counts(q, n_neg))
            assert wp.dtype == np.float32 and wp.flags.c_contiguous and wq.flags.c_contiguous


@pytest.mark.parametrize("engine", [2, 3])
def test_engine_2_row_blocks_drawn_once_match_the_per_block_path_bit_for_bit(engine) -> None:
    rng = np.random.default_rng(3)
    k, n_pos, n_neg, b = 3 * rules._ROW_BLOCK + 7, 23, 31, 2100
    pos = np.round(rng.standard_normal((k, n_pos)), 1)
    neg = np.round(rng.standard_normal((k, n_neg)), 1)
    fast_rng, slow_rng = np.random.default_rng(9), np.random.default_rng(9)
    fast = rules._bootstrap_aurocs(pos, neg, b, fast_rng, engine)
    saved = stats.ROWS_CACHE_BYTES
    stats.ROWS_CACHE_BYTES = 0  # type: ignore[misc]  # force the per-block path
    try:
        slow = rules._bootstrap_aurocs(pos, neg, b, slow_rng, engine)
    finally:
        stats.ROWS_CACHE_BYTES = saved
    assert np.array_equal(fast, slow)
    assert fast_rng.bit_generator.state == slow_rng.bit_generator.state


# --------------------------------------------------------------------------------------------
# Engine 2 vs engine 1 vs scipy.stats.bootstrap: statistically equivalent
# --------------------------------------------------------------------------------------------


def _auroc_batch(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC with half credit for ties over the last axis: pos (..., n_pos), neg (..., n_neg)."""
    gt = (pos[..., :, None] > neg[..., None, :]).mean(axis=(-1, -2))
    eq = (pos[..., :, None] == neg[..., None, :]).mean(axis=(-1, -2))
    return gt + 0.5 * eq


def _scipy_delta_ci(scores: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """scipy.stats.bootstrap percentile CI of AUROC(signal 0) - AUROC(signal 2): the two classes
    are separate samples (resampled independently = stratified), an item's signals move
    together (one sample is the (signals, n_class) matrix, resampled along its last axis)."""
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]

    def delta(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
        a = _auroc_batch(p, q)  # (signals, batch)
        return a[0] - a[2]

    res = scipy.stats.bootstrap(
        (pos, neg),
        delta,
        paired=False,
        vectorized=True,
        axis=-1,
        n_resamples=10_000,
        batch=500,
        method="percentile",
        confidence_level=0.95,
        rng=np.random.default_rng(seed),
    )
    return np.array([res.confidence_interval.low, res.confidence_interval.high])


def _engine_delta_ci(scores: np.ndarray, labels: np.ndarray, engine: int, seed: int) -> np.ndarray:
    boots = stats.stratified_paired_bootstrap(
        dict(enumerate(scores)), labels, 10_000, np.random.default_rng(seed), engine
    )
    return np.array(stats.percentile_ci(boots[0] - boots[2], 0.95))


@pytest.mark.slow
def test_engine_2_ci_matches_engine_1_and_scipy_bootstrap_within_monte_carlo_error() -> None:
    """Per engine, the 2.5% / 97.5% endpoints of a paired AUROC difference over 8 seeds of
    10,000 resamples; the Monte Carlo standard deviation of one endpoint, sd, is measured from
    those seeds. The mean over seeds of each engine must be within 4 sd / sqrt(8) * sqrt(2) of
    every other's and within 4 sd of scipy's single 10,000-resample interval (plus sd /
    sqrt(8)). Run for balanced and unbalanced classes (engine 3 pairs positions up to the
    smaller class and draws the rest singly)."""
    k = np.sqrt(8)
    for n_pos, n_neg in ((30, 30), (18, 42)):
        scores, labels = _group(11, n_pos, n_neg)
        est = {
            e: np.array([_engine_delta_ci(scores, labels, e, s) for s in range(8)])
            for e in (1, 2, 3)
        }
        ref = _scipy_delta_ci(scores, labels, 123)
        sd = np.max([v.std(axis=0, ddof=1) for v in est.values()], axis=0)
        assert np.all(sd > 0) and np.all(sd < 0.02)  # Monte Carlo error, not another statistic
        for a in (1, 2):
            for b in range(a + 1, 4):
                assert np.all(np.abs(est[a].mean(0) - est[b].mean(0)) <= 4 * sd * np.sqrt(2) / k)
        for v in est.values():
            assert np.all(np.abs(v.mean(0) - ref) <= 4 * sd * np.sqrt(1 + 1 / k**2))


@pytest.mark.parametrize("engine", [2, 3])
def test_engine_2_bootstrap_of_a_mean_matches_scipy(engine: int) -> None:
    values = np.random.default_rng(4).gamma(2.0, 1.0, 90)
    ci = rules.CISpec(resamples=10_000, seed=0)
    _, lo, hi = rules._mean_stat(values[None], ci, np.random.default_rng(1), 10_000, engine)
    ref = scipy.stats.bootstrap(
        (values,), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(2)
    ).confidence_interval
    se = values.std(ddof=1) / np.sqrt(values.size)
    # endpoint Monte Carlo error at B = 10,000 is about 0.03 se; allow 0.2 se
    assert abs(lo[0] - ref.low) < 0.2 * se and abs(hi[0] - ref.high) < 0.2 * se


@pytest.mark.parametrize("engine", [2, 3])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_engine_2_gives_the_same_decisions_on_the_pinned_cases(case, engine) -> None:
    """Same verdicts, same points (no resampling), CI endpoints within a few Monte Carlo errors
    (0.05 is about 6 standard errors at 200 resamples of a 400 x 400 group, more at 10,000)."""
    got, pinned = run(case, engine=engine), PINNED[case[0]]
    for hid, want in pinned.items():
        assert got[hid]["verdict"] == want["verdict"], hid
        for key in ("value", "difference"):
            if key in want:
                assert got[hid][key] == want[key]
        for a, b in zip(got[hid]["groups"], want["groups"], strict=True):
            assert a["delta"] == b["delta"] and a["auroc"] == b["auroc"]
            assert abs(a["ci_low"] - b["ci_low"]) < 0.05 and abs(a["ci_high"] - b["ci_high"]) < 0.05
        for key in ("ci_low", "ci_high"):
            if key in want:
                assert abs(got[hid][key] - want[key]) < 0.05, (hid, key)


# --------------------------------------------------------------------------------------------
# Ledger: freeze fixes the engine; verdicts store it; the audit re-derives with it
# --------------------------------------------------------------------------------------------

STUDY = """\
docket: 1
id: engines
title: Engine study
hypotheses:
  - {id: H1, statement: s separates the classes, rule: r}
signals:
  s: {higher_means: positive}
labels: {source: judged}
groups: [g1, g2]
decision_rules:
  r:
    kind: threshold
    statistic: auroc
    signal: s
    job: synth
    op: ">="
    bound: 0.6
    ci: {resamples: 500, seed: 1}
jobs:
  - name: synth
    kind: synthetic
    params: {groups: [g1, g2], signals: {s: positive}, n_per_class: 25, effect: 0.8}
"""


def _pre_versions_freeze(url: str) -> None:
    """Freeze ``engines`` the way docket did before engine versions: a sign-check report
    without ``engine`` (the shape of every report stored before this change)."""
    led = open_ledger(url)
    try:
        with led.session() as session:
            store.freeze(session, "engines", lambda p: {"passed": True, "checks": [], "notes": []})
    finally:
        led.engine.dispose()


def _verdict(docket) -> dict:
    r = docket("verdict", "engines", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _recompute(url: str, engine: int) -> dict:
    """The threshold rule evaluated directly on the frozen version's data."""
    led = open_ledger(url)
    try:
        with led.read_session() as session:
            row = session.scalars(select(ProtocolRow).where(ProtocolRow.protocol_id == "engines"))
            row = row.one()
            protocol = store.parse_row(row)
            loaded = load_dataset(session, row, protocol)
            return rules.evaluate(protocol, loaded.dataset, engine=engine)["hypotheses"][0]
    finally:
        led.engine.dispose()


@pytest.mark.parametrize("era", ["versioned", "pre-versions"])
def test_verdict_runs_with_the_engine_its_protocol_froze_with(docket, tmp_path: Path, era) -> None:
    (tmp_path / "engines.yaml").write_text(STUDY, encoding="utf-8")
    assert docket("protocol", "register", "engines.yaml").exit_code == 0
    if era == "versioned":
        r = docket("protocol", "freeze", "engines", "--json")
        assert r.exit_code == 0, r.output
        report = json.loads(r.output)["sign_check"]
        assert report["engine"] == stats.LATEST_ENGINE == 3
        null = report["null_proven"]
        assert null["studies"] == 100 and null["n_per_class"] == 30 and null["engine"] == 3
        assert [x["rule"] for x in null["rules"]] == ["r"] and 0.0 <= null["rules"][0]["rate"] <= 1
        shown = json.loads(docket("protocol", "show", "engines", "--json").output)
        assert shown["sign_check"]["engine"] == 3 and shown["sign_check"]["null_proven"] == null
        human = docket("protocol", "show", "engines").output
        assert "bootstrap engine 3" in human and "PROVEN rate under the null at 30" in human
        want = 3
    else:
        _pre_versions_freeze(docket.url)
        shown = json.loads(docket("protocol", "show", "engines", "--json").output)
        assert shown["sign_check"]["engine"] == 1 and shown["sign_check"]["null_proven"] is None
        want = 1
    sim = docket("protocol", "simulate", "engines", "--runs", "5", "--resamples", "100", "--json")
    assert sim.exit_code == 0, sim.output
    assert json.loads(sim.output)["settings"]["engine"] == want  # what a verdict would use
    assert docket("run", "engines", "--no-progress").exit_code == 0
    out = _verdict(docket)
    assert out["engine"] == want
    h = out["hypotheses"][0]
    mine, other = _recompute(docket.url, want), _recompute(docket.url, 2)
    assert (h["ci_low"], h["ci_high"]) == (mine["ci_low"], mine["ci_high"])  # bit for bit
    assert (h["ci_low"], h["ci_high"]) != (other["ci_low"], other["ci_high"])
    assert h["value"] == mine["value"] == other["value"]
    result = docket("audit", "--json")
    assert result.exit_code == 0 and json.loads(result.output)["findings"] == [], result.output


def test_audit_rederives_with_the_recorded_engine_and_flags_a_forked_one(
    docket, tmp_path: Path
) -> None:
    """A verdict row without ``engine`` (recorded before versions) is re-derived with engine 1;
    a row claiming engine 2 for a protocol frozen with engine 1 is named twice: its engine is not
    the freeze's, and its numbers are not reproduced under the engine it claims."""
    (tmp_path / "engines.yaml").write_text(STUDY, encoding="utf-8")
    assert docket("protocol", "register", "engines.yaml").exit_code == 0
    _pre_versions_freeze(docket.url)
    assert docket("run", "engines", "--no-progress").exit_code == 0
    out = _verdict(docket)
    assert out["engine"] == 1
    led = open_ledger(docket.url)
    try:
        with led.session() as session:
            first = session.scalars(select(VerdictRow)).one()
            details = json.loads(first.details_json)
            legacy = {k: v for k, v in details.items() if k != "engine"}
            forked = {**details, "engine": 2}
            rows = []
            for d in (legacy, forked):
                row = VerdictRow(
                    protocol_pk=first.protocol_pk,
                    protocol_sha256=first.protocol_sha256,
                    computed_at=utcnow(),
                    verdict=first.verdict,
                    details_json=json.dumps(d, sort_keys=True),
                    inputs_sha256=first.inputs_sha256,
                    run_ids_json=first.run_ids_json,
                )
                session.add(row)
                rows.append(row)
            session.flush()
            legacy_id, forked_id = rows[0].id, rows[1].id
            again = rederive_verdict(session, rows[0])
            assert again["engine"] == 1 and again["frozen_engine"] == 1
        with led.read_session() as session:
            report = audit_session(session)
    finally:
        led.engine.dispose()
    by_row: dict[int, list[str]] = {}
    no_leaf = "has no leaf in the Merkle log"
    for f in report.findings:
        assert f.table == "verdicts", f
        by_row.setdefault(f.row, []).append(f.problem)
    # both rows went in behind the log's back, which the audit names; past that, the legacy
    # row re-derives under engine 1 and only the forked one is wrong
    assert all(any(no_leaf in p for p in by_row[r]) for r in (legacy_id, forked_id))
    by_row = {r: [p for p in ps if no_leaf not in p] for r, ps in by_row.items()}
    assert not by_row.get(legacy_id) and first.id not in by_row
    problems = by_row[forked_id]
    assert any("engine 2 but its protocol was frozen with engine 1" in p for p in problems)
    assert any("not re-derived bit for bit under engine 2" in p for p in problems)


def test_sign_check_rows_store_the_engine(docket, tmp_path: Path) -> None:
    (tmp_path / "engines.yaml").write_text(STUDY, encoding="utf-8")
    assert docket("protocol", "register", "engines.yaml").exit_code == 0
    r = docket("protocol", "signcheck", "engines")
    assert r.exit_code == 0 and "PROVEN rate under the null at 30 per class" in r.output
    led = open_ledger(docket.url)
    try:
        with led.read_session() as session:
            report = json.loads(session.scalars(select(SignCheckRow)).one().report_json)
    finally:
        led.engine.dispose()
    assert report["engine"] == 3 and report["null_proven"]["resamples_cap"] == 1000


@pytest.mark.parametrize(("k", "n_pos", "n_neg"), [(130, 30, 30), (64, 7, 50), (300, 12, 9)])
def test_kronecker_kernel_equals_the_pairwise_kernel_bit_for_bit(k, n_pos, n_neg) -> None:
    """The many-rows kernel of the simulator computes the same exact integers as the pairwise
    kernel, from int64 (engine 1) and float32 (engine 2) counts alike."""
    rng = np.random.default_rng(k)
    pos = np.round(rng.standard_normal((k, n_pos)), 1)  # ties included
    neg = np.round(rng.standard_normal((k, n_neg)), 1)
    b = 700
    wp = stats._resample_counts(rng.integers(0, n_pos, (b, n_pos)), n_pos)
    wq = stats._resample_counts(rng.integers(0, n_neg, (b, n_neg)), n_neg)
    want = np.empty((k, b))
    stats._PairwiseComparisons(pos, neg, n_pos, n_neg).accumulate(wp, wq, want)
    for counts in ((wp, wq), (wp.astype(np.float32), wq.astype(np.float32))):
        got = np.empty((k, b))
        stats._KronComparisons(pos, neg, n_pos, n_neg).accumulate(*counts, got)
        assert np.array_equal(got, want)
    # and both are the definition: 2 sum_{c,d} psi over the multiplicities, for one row
    r, s = 3, k - 1
    c2 = 2.0 * (pos[s][:, None] > neg[s][None, :]) + (pos[s][:, None] == neg[s][None, :])
    assert want[s, r] == wp[r] @ c2 @ wq[r]


@pytest.mark.parametrize("engine", [1, 2, 3])
@pytest.mark.parametrize(
    ("t", "n_pos", "n_neg"), [(1, 30, 30), (7, 17, 41), (10, 12, 12), (60, 12, 12)]
)
def test_a_fixed_best_baseline_contest_resamples_only_the_rows_it_reads(t, n_pos, n_neg, engine):
    """With ``best_baseline: fixed`` only the candidates and each study's best baseline are
    bootstrapped; the CIs are bit for bit those of bootstrapping every signal (one shared
    resample set, exact per-row arithmetic), on the one-call, Kronecker and per-block paths."""
    rng = np.random.default_rng(t + n_pos)
    shift = np.array([0.9, 0.3, 0.5, 0.6, 0.1])[None, :, None]
    pos = np.round(rng.standard_normal((t, 5, n_pos)) + shift, 1)
    neg = np.round(rng.standard_normal((t, 5, n_neg)), 1)
    ci = rules.CISpec(resamples=900, seed=0)
    got = rules.contest_stats(pos, neg, 2, ci, "fixed", np.random.default_rng(4), 900, engine)
    every = rules._bootstrap_aurocs(
        pos.reshape(-1, n_pos), neg.reshape(-1, n_neg), 900, np.random.default_rng(4), engine
    ).reshape(t, 5, 900)
    ref = every[np.arange(t), 2 + got.best][:, None, :]
    lo, hi = rules._percentiles(every[:, :2] - ref, 0.95)
    assert np.array_equal(got.lo, lo) and np.array_equal(got.hi, hi)
    assert len(set(got.best.tolist())) > 1 or t == 1  # studies pick different baselines
