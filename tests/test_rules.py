"""Tests of the verdict engine (ledger/rules.py) on constructed data with known answers.

Independent references: scikit-learn's ``roc_auc_score`` (every AUROC, and the bootstrap CIs
recomputed resample by resample on the resamples the pre-registered seed defines), a
definition-level O(m n) DeLong written here, and numpy loops for bootstrap means. The engine is
never checked against itself alone (except for determinism).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from docketml.ledger.results import MetricValue
from docketml.ledger.verdict import rules, stats
from docketml.ledger.verdict.rules import Dataset, SourceData, evaluate, evaluate_rule
from docketml.protocols.schema import Protocol

GROUPS = ["g1", "g2", "g3"]
VERDICTS = {
    "PROVEN": {"min_wins": 2, "require_any_of": ["g3"]},
    "PARTIAL": {"min_wins": 1},
    "DISPROVEN": {"max_wins": 0},
}


def make_protocol(
    *,
    labels: dict[str, Any] | None = None,
    groups: list[str] | None = None,
    rule: dict[str, Any] | None = None,
    extra_rules: dict[str, Any] | None = None,
    hypotheses: list[dict[str, Any]] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Protocol:
    base_rule = {
        "kind": "regime_wins",
        "candidates": ["c1", "c2"],
        "baselines": ["b1", "b2"],
        "margin": 0.02,
        "ci": {"method": "paired_bootstrap", "level": 0.95, "resamples": 300, "seed": 11},
        "verdicts": VERDICTS,
    }
    if rule:
        base_rule.update(rule)
    return Protocol.model_validate(
        {
            "docket": 1,
            "id": "rules-test",
            "title": "rules test",
            "hypotheses": hypotheses or [{"id": "H1", "statement": "s", "rule": "rw"}],
            "signals": {
                "c1": {"higher_means": "positive"},
                "c2": {"higher_means": "negative"},
                "b1": {"higher_means": "negative", "role": "baseline"},
                "b2": {"higher_means": "positive", "role": "baseline"},
            },
            "labels": labels or {"source": "judged", "positive": "failure"},
            "groups": groups or GROUPS,
            "decision_rules": {"rw": base_rule, **(extra_rules or {})},
            "metrics": metrics or {},
        }
    )


SIGN = {"c1": 1.0, "c2": -1.0, "b1": -1.0, "b2": 1.0}


def judged_rows(
    rng: np.random.Generator, groups: list[str], n_pos: int, n_neg: int, effect: dict[str, float]
) -> list[tuple[str, str, int, str, float]]:
    """Raw rows: oriented score = N(0,1) + effect[signal] * label, stored with the polarity."""
    rows = []
    for g in groups:
        for k in range(n_pos + n_neg):
            lab = 1 if k < n_pos else 0
            for s, e in effect.items():
                oriented = rng.normal() + e * lab
                rows.append((g, f"{g}-{k:03d}", lab, s, SIGN[s] * round(oriented, 1)))
    return rows


def group_arrays(rows: list, group: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and oriented scores of a group in the engine's item order (sorted)."""
    items = sorted({r[1] for r in rows if r[0] == group})
    idx = {it: k for k, it in enumerate(items)}
    labels = np.zeros(len(items), dtype=int)
    scores: dict[str, np.ndarray] = {}
    for g, it, lab, s, v in rows:
        if g == group:
            labels[idx[it]] = lab
            scores.setdefault(s, np.zeros(len(items)))[idx[it]] = SIGN[s] * v
    return labels, scores


def psi_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUROC from its definition: mean over (positive, negative) pairs of 1 / 0.5 / 0."""
    x, y = scores[labels == 1], scores[labels == 0]
    return float(((x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])).mean())


def sklearn_boot(
    labels: np.ndarray, scores: dict[str, np.ndarray], b: int, rng, sklearn_first: int = 20
) -> dict:
    """Bootstrap AUROCs recomputed on the stratified resamples of ``rng``: roc_auc_score on the
    first ``sklearn_first`` resamples, the pairwise definition on all (checked to agree)."""
    pos_rows, neg_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    pidx, nidx = stats.stratified_resample_indices(len(pos_rows), len(neg_rows), b, rng)
    out = {s: np.empty(b) for s in scores}
    for k in range(b):
        sel = np.r_[pos_rows[pidx[k]], neg_rows[nidx[k]]]
        for s, v in scores.items():
            out[s][k] = psi_auroc(labels[sel], v[sel])
            if k < sklearn_first:
                assert out[s][k] == pytest.approx(roc_auc_score(labels[sel], v[sel]), abs=1e-12)
    return out


def dataset(rows: list, job: str | None = None, **kw: Any) -> Dataset:
    return Dataset({job: SourceData.from_rows(rows, **kw)})


# --------------------------------------------------------------------------------------------
# regime_wins against independent references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["fixed", "per_resample"])
def test_regime_wins_matches_sklearn_bootstrap(mode: str) -> None:
    rng = np.random.default_rng(5)
    effect = {"c1": 1.2, "c2": 0.4, "b1": 0.5, "b2": 0.3}
    rows = judged_rows(rng, GROUPS, 25, 35, effect)
    protocol = make_protocol(rule={"best_baseline": mode})
    res = evaluate_rule(protocol, "rw", dataset(rows))
    gens = stats.derive_group_rngs(11, GROUPS)
    won = []
    for g in GROUPS:
        labels, scores = group_arrays(rows, g)
        full = {s: roc_auc_score(labels, v) for s, v in scores.items()}
        best = max(["b1", "b2"], key=lambda s: (full[s], -["b1", "b2"].index(s)))
        boots = sklearn_boot(labels, scores, 300, gens[g])
        ref = boots[best] if mode == "fixed" else np.maximum(boots["b1"], boots["b2"])
        any_win = False
        for c in ("c1", "c2"):
            row = next(r for r in res["groups"] if r["group"] == g and r["candidate"] == c)
            lo, hi = np.percentile(boots[c] - ref, [2.5, 97.5])
            assert row["auroc"] == pytest.approx(full[c], abs=1e-12)
            assert row["baseline"] == best
            assert row["baseline_auroc"] == pytest.approx(full[best], abs=1e-12)
            assert row["delta"] == pytest.approx(full[c] - full[best], abs=1e-12)
            assert row["ci_low"] == pytest.approx(lo, abs=1e-12)
            assert row["ci_high"] == pytest.approx(hi, abs=1e-12)
            win = bool(full[c] - full[best] >= 0.02 and lo > 0)
            assert row["win"] is win
            any_win |= win
        won.append(any_win)
    assert res["wins"] == sum(won)
    assert res["won_groups"] == [g for g, w in zip(GROUPS, won, strict=True) if w]


def test_per_resample_is_never_more_lenient_than_fixed() -> None:
    rng = np.random.default_rng(8)
    rows = judged_rows(rng, GROUPS, 30, 30, {"c1": 1.0, "c2": 0.8, "b1": 0.7, "b2": 0.7})
    fixed = evaluate_rule(make_protocol(rule={"best_baseline": "fixed"}), "rw", dataset(rows))
    per = evaluate_rule(make_protocol(rule={"best_baseline": "per_resample"}), "rw", dataset(rows))
    for a, b in zip(fixed["groups"], per["groups"], strict=True):
        assert a["delta"] == b["delta"]  # the point estimate is the same in both modes
        assert b["ci_low"] <= a["ci_low"] and b["ci_high"] <= a["ci_high"]


def test_regime_labels_reference_group_is_the_negative_class() -> None:
    rng = np.random.default_rng(2)
    groups = ["in_domain", "ood_a", "ood_b"]
    rows = []
    for g in groups:
        shift = 0.0 if g == "in_domain" else {"ood_a": 1.5, "ood_b": 0.2}[g]
        for k in range(20 if g == "in_domain" else 15):
            for s in ("c1", "c2", "b1", "b2"):
                v = rng.normal() + (shift if s.startswith("c") else 0.1)
                rows.append((g, f"{g}{k}", None, s, SIGN[s] * v))  # labels not recorded
    protocol = make_protocol(
        labels={"source": "regime", "positive": "ood", "reference": "in_domain"},
        groups=groups,
        rule={
            "verdicts": {
                "PROVEN": {"min_wins": 2},
                "PARTIAL": {"min_wins": 1},
                "DISPROVEN": {"max_wins": 0},
            }
        },
    )
    res = evaluate_rule(protocol, "rw", dataset(rows))
    assert res["contests"] == ["ood_a", "ood_b"]  # the reference is not a contest
    ref_vals = {
        s: np.array([v for g, _, _, ss, v in rows if g == "in_domain" and ss == s]) for s in SIGN
    }
    for g in ("ood_a", "ood_b"):
        vals = {s: np.array([v for gg, _, _, ss, v in rows if gg == g and ss == s]) for s in SIGN}
        for c in ("c1", "c2"):
            row = next(r for r in res["groups"] if r["group"] == g and r["candidate"] == c)
            y = np.r_[np.ones(15), np.zeros(20)]
            expected = roc_auc_score(y, SIGN[c] * np.r_[vals[c], ref_vals[c]])
            assert row["auroc"] == pytest.approx(expected, abs=1e-12)
            assert (row["n_pos"], row["n_neg"]) == (15, 20)
    # pooled: the reference against the union of the other groups
    pooled = {p["signal"]: p["auroc"] for p in res["pooled"]}
    allpos = np.r_[[v for g, _, _, s, v in rows if g != "in_domain" and s == "c1"]]
    y = np.r_[np.ones(30), np.zeros(20)]
    assert pooled["c1"] == pytest.approx(roc_auc_score(y, np.r_[allpos, ref_vals["c1"]]), 1e-12)


def test_delong_method_matches_definition_level_delong() -> None:
    rng = np.random.default_rng(3)
    rows = judged_rows(rng, GROUPS, 20, 24, {"c1": 1.3, "c2": 0.6, "b1": 0.4, "b2": 0.5})
    for mode in ("fixed", "per_resample"):
        protocol = make_protocol(
            rule={"ci": {"method": "delong", "level": 0.9}, "best_baseline": mode}
        )
        res = evaluate_rule(protocol, "rw", dataset(rows))
        z = scipy.stats.norm.ppf(0.95)
        for g in GROUPS:
            labels, scores = group_arrays(rows, g)
            names = ["c1", "c2", "b1", "b2"]
            aucs, cov = slow_delong(np.stack([scores[s] for s in names]), labels)
            best = 2 + int(np.argmax(aucs[2:]))
            for ci, c in enumerate(("c1", "c2")):
                row = next(r for r in res["groups"] if r["group"] == g and r["candidate"] == c)

                ivals = {}
                for j in (2, 3):
                    sd = np.sqrt(cov[ci, ci] + cov[j, j] - 2 * cov[ci, j])
                    d = aucs[ci] - aucs[j]
                    ivals[j] = (d - z * sd, d + z * sd)
                if mode == "fixed":
                    lo, hi = ivals[best]
                else:
                    lo = min(ivals[2][0], ivals[3][0])
                    hi = min(ivals[2][1], ivals[3][1])
                assert row["delta"] == pytest.approx(aucs[ci] - aucs[best], abs=1e-12)
                assert row["ci_low"] == pytest.approx(lo, abs=1e-12)
                assert row["ci_high"] == pytest.approx(hi, abs=1e-12)
        assert res["ci"] == {"method": "delong", "level": 0.9, "seed": 0}


def slow_delong(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong (1988) from the definition: placement values by explicit pairwise comparison."""
    pos = labels == 1
    m, n = int(pos.sum()), int((~pos).sum())
    k = scores.shape[0]
    v10, v01, aucs = np.zeros((k, m)), np.zeros((k, n)), np.zeros(k)
    for r in range(k):
        x, y = scores[r, pos], scores[r, ~pos]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        v10[r], v01[r], aucs[r] = psi.mean(axis=1), psi.mean(axis=0), psi.mean()
    s10 = (v10 - aucs[:, None]) @ (v10 - aucs[:, None]).T / (m - 1)
    s01 = (v01 - aucs[:, None]) @ (v01 - aucs[:, None]).T / (n - 1)
    return aucs, s10 / m + s01 / n


# --------------------------------------------------------------------------------------------
# regime_wins: known answers, thresholds, orientation
# --------------------------------------------------------------------------------------------


def sweep_rows(winners: set[str], groups: list[str] = GROUPS, n: int = 20) -> list:
    """Candidate c1 perfect in ``winners``, identical to the baselines elsewhere; baselines at
    chance-ish. Values stored raw (c2 and b1 are 'negative' signals)."""
    rows = []
    for g in groups:
        for k in range(2 * n):
            lab = 1 if k < n else 0
            base = float((k * 7) % n)  # a label-independent score: AUROC 0.5
            c1 = 100.0 + k if (g in winners and lab) else base
            for s, v in (("c1", c1), ("c2", base), ("b1", base), ("b2", base)):
                rows.append((g, f"{g}-{k}", lab, s, SIGN[s] * v))
    return rows


@pytest.mark.parametrize(
    ("winners", "expected"),
    [
        ({"g1", "g2", "g3"}, "PROVEN"),
        ({"g1", "g3"}, "PROVEN"),
        ({"g1", "g2"}, "PARTIAL"),  # min_wins 2 met, but none of require_any_of [g3] won
        ({"g2"}, "PARTIAL"),
        (set(), "DISPROVEN"),
    ],
)
def test_verdict_thresholds(winners: set[str], expected: str) -> None:
    res = evaluate_rule(make_protocol(), "rw", dataset(sweep_rows(winners)))
    assert res["verdict"] == expected
    assert set(res["won_groups"]) == winners
    assert res["wins"] == len(winners)


def test_no_matching_condition_is_inconclusive_and_says_why() -> None:
    protocol = make_protocol(
        rule={"verdicts": {"PROVEN": {"min_wins": 3}, "DISPROVEN": {"max_wins": 0}}}
    )
    res = evaluate_rule(protocol, "rw", dataset(sweep_rows({"g1"})))
    assert res["verdict"] == "INCONCLUSIVE"
    assert "1 of 3 groups won" in res["why"] and "matches no verdict condition" in res["why"]


def test_margin_boundary_is_inclusive() -> None:
    rows = sweep_rows({"g1", "g2", "g3"})
    delta = evaluate_rule(make_protocol(), "rw", dataset(rows))["groups"][0]["delta"]
    at = evaluate_rule(make_protocol(rule={"margin": delta}), "rw", dataset(rows))
    above = evaluate_rule(make_protocol(rule={"margin": delta + 1e-9}), "rw", dataset(rows))
    assert at["groups"][0]["win"] is True
    assert above["groups"][0]["win"] is False


def test_polarity_is_applied_and_never_auto_flipped() -> None:
    rng = np.random.default_rng(4)
    # c1 is declared "positive" but the data carry the opposite: its AUROC must stay below 0.5
    rows = []
    for g in GROUPS:
        for k in range(40):
            lab = int(k < 20)
            for s in ("c1", "c2", "b1", "b2"):
                v = rng.normal() + (-2.0 if s == "c1" else 0.3) * lab
                rows.append((g, f"{g}{k}", lab, s, SIGN[s] * v if s != "c1" else v))
    res = evaluate_rule(make_protocol(), "rw", dataset(rows))
    for r in res["groups"]:
        labels, _ = group_arrays(rows, r["group"])
        raw = np.array(
            [
                v
                for g, it, _, s, v in sorted(rows, key=lambda x: x[1])
                if g == r["group"] and s == r["candidate"]
            ]
        )
        assert r["auroc"] == pytest.approx(roc_auc_score(labels, SIGN[r["candidate"]] * raw))
        if r["candidate"] == "c1":
            assert r["auroc"] < 0.5 and r["win"] is False


# --------------------------------------------------------------------------------------------
# INCONCLUSIVE: missing data is named, never dropped
# --------------------------------------------------------------------------------------------


def test_group_without_both_classes_is_named() -> None:
    rows = [r for r in sweep_rows({"g1", "g2", "g3"}) if not (r[0] == "g2" and r[2] == 0)]
    res = evaluate_rule(make_protocol(), "rw", dataset(rows))
    assert res["verdict"] == "INCONCLUSIVE"
    assert any("group 'g2' lacks a class: 20 positive" in m for m in res["missing"])
    # the other groups are still computed and reported; g2 appears with the reason
    assert {r["group"] for r in res["groups"] if r["auroc"] is not None} == {"g1", "g3"}
    assert all("lacks a class" in r["missing"] for r in res["groups"] if r["group"] == "g2")


def test_signal_never_recorded_or_partly_recorded_is_named() -> None:
    rows = [r for r in sweep_rows({"g1"}) if r[3] != "b2"]
    res = evaluate_rule(make_protocol(), "rw", dataset(rows))
    assert res["verdict"] == "INCONCLUSIVE"
    assert any("signal 'b2' was never recorded" in m for m in res["missing"])
    gone = {"g3-0", "g3-1", "g3-2"}
    rows = [r for r in sweep_rows({"g1"}) if not (r[3] == "c2" and r[1] in gone)]
    res = evaluate_rule(make_protocol(), "rw", dataset(rows))
    assert res["verdict"] == "INCONCLUSIVE"
    assert any(
        "signal 'c2' is missing for 3 of 40 items in group 'g3'" in m for m in res["missing"]
    )


def test_missing_group_missing_job_unlabelled_and_tainted_sources() -> None:
    rows = [r for r in sweep_rows({"g1", "g2", "g3"}) if r[0] != "g3"]
    res = evaluate_rule(make_protocol(), "rw", dataset(rows))
    assert res["verdict"] == "INCONCLUSIVE" and "group 'g3' has no observations" in res["why"]

    protocol = make_protocol(rule={"job": "probe"})
    res = evaluate_rule(protocol, "rw", Dataset())
    assert res["verdict"] == "INCONCLUSIVE" and "job 'probe' has no succeeded run" in res["why"]

    rows = [(g, i, None, s, v) for g, i, _, s, v in sweep_rows({"g1"})]
    res = evaluate_rule(make_protocol(), "rw", dataset(rows))
    assert "group 'g1' has 40 items without a label" in res["why"]

    tainted = dataset(sweep_rows({"g1", "g2", "g3"}), problems=["run #4 is silent_noop: mc_weight"])
    res = evaluate_rule(make_protocol(), "rw", tainted)
    assert res["verdict"] == "INCONCLUSIVE" and "mc_weight" in res["why"]
    assert res["wins"] == 3  # the numbers are still computed and shown

    nan_rows = [
        (g, i, lab, s, float("nan") if (g, s) == ("g1", "b1") and i == "g1-0" else v)
        for g, i, lab, s, v in sweep_rows({"g1"})
    ]
    res = evaluate_rule(make_protocol(), "rw", dataset(nan_rows))
    assert (
        "signal 'b1' is missing for 1 of 40 items in group 'g1', 1 of them non-finite"
        in (res["why"])
    )


def test_regime_reference_missing_is_named() -> None:
    protocol = make_protocol(
        labels={"source": "regime", "positive": "ood", "reference": "g1"},
        rule={"verdicts": {"PROVEN": {"min_wins": 2}, "DISPROVEN": {"max_wins": 0}}},
    )
    rows = [r for r in sweep_rows(set()) if r[0] != "g1"]
    res = evaluate_rule(protocol, "rw", dataset(rows))
    assert res["verdict"] == "INCONCLUSIVE"
    assert "reference group 'g1' has no observations" in res["why"]


# --------------------------------------------------------------------------------------------
# threshold
# --------------------------------------------------------------------------------------------


def threshold_protocol(**rule: Any) -> Protocol:
    return make_protocol(
        extra_rules={"th": {"kind": "threshold", **rule}},
        hypotheses=[{"id": "H1", "statement": "s", "rule": "th"}],
        metrics={
            "gain": {
                "expr": "acc_after - acc_before",
                "direction": "higher_is_better",
                "sign_check": [
                    {
                        "better": {"acc_before": 0.5, "acc_after": 0.7},
                        "worse": {"acc_before": 0.5, "acc_after": 0.4},
                    }
                ],
            }
        },
    )


@pytest.mark.parametrize(
    ("value", "lo", "hi", "op", "bound", "expected"),
    [
        (0.80, 0.76, 0.84, ">=", 0.75, "PROVEN"),
        (0.80, 0.75, 0.84, ">=", 0.75, "PROVEN"),
        (0.80, 0.75, 0.84, ">", 0.75, "PARTIAL"),
        (0.80, 0.70, 0.90, ">=", 0.75, "PARTIAL"),
        (0.70, 0.60, 0.80, ">=", 0.75, "DISPROVEN"),
        (0.20, 0.10, 0.24, "<=", 0.25, "PROVEN"),
        (0.20, 0.10, 0.30, "<", 0.25, "PARTIAL"),
        (0.30, 0.20, 0.40, "<", 0.25, "DISPROVEN"),
        (0.80, None, None, ">=", 0.75, "PARTIAL"),  # no CI: a point alone cannot prove
    ],
)
def test_threshold_metric_op_semantics(value, lo, hi, op, bound, expected) -> None:
    protocol = threshold_protocol(statistic="metric", metric="acc", op=op, bound=bound)
    ds = Dataset({None: SourceData(metrics={"acc": MetricValue("acc", value, lo, hi)})})
    assert evaluate_rule(protocol, "th", ds)["verdict"] == expected


def test_threshold_derived_metric_and_missing_metric() -> None:
    protocol = threshold_protocol(statistic="metric", metric="gain", op=">", bound=0.1)
    ds = Dataset(
        {
            None: SourceData(
                metrics={
                    "acc_before": MetricValue("acc_before", 0.5),
                    "acc_after": MetricValue("acc_after", 0.75),
                }
            )
        }
    )
    res = evaluate_rule(protocol, "th", ds)
    assert res["value"] == pytest.approx(0.25) and res["verdict"] == "PARTIAL"
    ds = Dataset({None: SourceData(metrics={"acc_before": MetricValue("acc_before", 0.5)})})
    res = evaluate_rule(protocol, "th", ds)
    assert res["verdict"] == "INCONCLUSIVE" and "needs acc_after" in res["why"]


def test_threshold_auroc_matches_sklearn_bootstrap() -> None:
    rng = np.random.default_rng(9)
    rows = judged_rows(rng, GROUPS, 12, 18, {"c1": 1.0})
    protocol = threshold_protocol(
        statistic="auroc", signal="c1", op=">=", bound=0.7, ci={"resamples": 200, "seed": 3}
    )
    res = evaluate_rule(protocol, "th", dataset(rows))
    # pooled, in the engine's order: per group (protocol order) positives, then negatives
    pos, neg = [], []
    for g in GROUPS:
        labels, scores = group_arrays(rows, g)
        pos.append(scores["c1"][labels == 1])
        neg.append(scores["c1"][labels == 0])
    y = np.r_[np.ones(36, dtype=int), np.zeros(54, dtype=int)]
    x = np.r_[np.concatenate(pos), np.concatenate(neg)]
    assert res["value"] == pytest.approx(roc_auc_score(y, x), abs=1e-12)
    gen = stats.derive_group_rngs(3, ["pooled"])["pooled"]
    boots = sklearn_boot(y, {"c1": x}, 200, gen)["c1"]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    expected = "PROVEN" if lo >= 0.7 else ("PARTIAL" if res["value"] >= 0.7 else "DISPROVEN")
    assert res["verdict"] == expected


def test_threshold_mean_matches_numpy_bootstrap() -> None:
    rng = np.random.default_rng(10)
    rows = judged_rows(rng, GROUPS, 10, 10, {"b2": 0.5})
    protocol = threshold_protocol(
        statistic="mean", signal="b2", op=">", bound=0.0, ci={"resamples": 500, "seed": 21}
    )
    res = evaluate_rule(protocol, "th", dataset(rows))
    values = np.concatenate(
        [
            [v for g, it, _, s, v in sorted(rows, key=lambda r: r[1]) if g == grp and s == "b2"]
            for grp in GROUPS
        ]
    )
    gen = stats.derive_group_rngs(21, ["pooled"])["pooled"]
    idx = gen.integers(0, len(values), size=(500, len(values)))
    means = np.array([values[row].mean() for row in idx])
    assert res["value"] == pytest.approx(values.mean(), abs=1e-12)
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    # delong on a mean: the normal interval
    protocol = threshold_protocol(
        statistic="mean", signal="b2", op=">", bound=0.0, ci={"method": "delong"}
    )
    res = evaluate_rule(protocol, "th", dataset(rows))
    se = values.std(ddof=1) / np.sqrt(len(values))
    z = scipy.stats.norm.ppf(0.975)
    assert res["ci_low"] == pytest.approx(values.mean() - z * se, abs=1e-12)


# --------------------------------------------------------------------------------------------
# non_inferiority
# --------------------------------------------------------------------------------------------


def ni_protocol(**rule: Any) -> Protocol:
    spec = {
        "kind": "non_inferiority",
        "statistic": "auroc",
        "signal": "c1",
        "candidate_job": "cand",
        "reference_job": "ref",
        "margin": 0.05,
        "ci": {"resamples": 250, "seed": 4},
        **rule,
    }
    p = make_protocol(
        extra_rules={"ni": spec}, hypotheses=[{"id": "H1", "statement": "s", "rule": "ni"}]
    )
    return p


def test_non_inferiority_paired_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(12)
    ref_rows = judged_rows(rng, GROUPS, 15, 15, {"c1": 1.2})
    cand_rows = [(g, i, lab, s, v + 0.3 * rng.normal()) for g, i, lab, s, v in ref_rows]
    ds = Dataset({"cand": SourceData.from_rows(cand_rows), "ref": SourceData.from_rows(ref_rows)})
    res = evaluate_rule(ni_protocol(), "ni", ds)
    assert res["paired"] is True

    def pooled(rows: list) -> tuple[np.ndarray, np.ndarray]:
        pos, neg = [], []
        for g in GROUPS:
            labels, scores = group_arrays(rows, g)
            pos.append(scores["c1"][labels == 1])
            neg.append(scores["c1"][labels == 0])
        return np.r_[np.concatenate(pos), np.concatenate(neg)], np.r_[np.ones(45), np.zeros(45)]

    xc, y = pooled(cand_rows)
    xr, _ = pooled(ref_rows)
    diff = roc_auc_score(y, xc) - roc_auc_score(y, xr)
    assert res["difference"] == pytest.approx(diff, abs=1e-12)
    gen = stats.derive_group_rngs(4, ["candidate", "reference"])["candidate"]
    boots = sklearn_boot(y.astype(int), {"c": xc, "r": xr}, 250, gen)
    lo, hi = np.percentile(boots["c"] - boots["r"], [2.5, 97.5])
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)


def test_non_inferiority_known_answers_and_independence() -> None:
    rng = np.random.default_rng(13)
    rows = judged_rows(rng, GROUPS, 15, 15, {"c1": 1.0})
    same = Dataset({"cand": SourceData.from_rows(rows), "ref": SourceData.from_rows(rows)})
    res = evaluate_rule(ni_protocol(), "ni", same)
    assert res["difference"] == 0.0 and res["ci_low"] == 0.0 and res["verdict"] == "PROVEN"
    # a candidate at chance against a good reference: DISPROVEN
    flat = [(g, i, lab, s, float(k % 7)) for k, (g, i, lab, s, v) in enumerate(rows)]
    worse = Dataset({"cand": SourceData.from_rows(flat), "ref": SourceData.from_rows(rows)})
    assert evaluate_rule(ni_protocol(), "ni", worse)["verdict"] == "DISPROVEN"
    # different items -> independent resampling, said so
    other = [(g, i + "x", lab, s, v) for g, i, lab, s, v in rows]
    indep = Dataset({"cand": SourceData.from_rows(other), "ref": SourceData.from_rows(rows)})
    res = evaluate_rule(ni_protocol(), "ni", indep)
    assert res["paired"] is False and "independent" in res["why"]
    assert res["difference"] == 0.0 and res["ci_low"] < 0.0
    # lower is better: the orientation flips
    res = evaluate_rule(ni_protocol(higher_is_better=False), "ni", worse)
    assert res["difference"] > 0 and res["verdict"] == "PROVEN"


def test_non_inferiority_mean_paired_uses_per_item_differences() -> None:
    rng = np.random.default_rng(14)
    rows = judged_rows(rng, ["g1"], 10, 10, {"b2": 0.0})
    cand = [(g, i, lab, s, v - 0.01) for g, i, lab, s, v in rows]
    protocol = ni_protocol(statistic="mean", signal="b2", margin=0.05)
    protocol = protocol.model_copy(update={"groups": ["g1"]})
    ds = Dataset({"cand": SourceData.from_rows(cand), "ref": SourceData.from_rows(rows)})
    res = evaluate_rule(protocol, "ni", ds)
    assert res["paired"] is True
    assert res["difference"] == pytest.approx(-0.01, abs=1e-12)
    # paired differences are constant, so every bootstrap mean is -0.01
    assert res["ci_low"] == pytest.approx(-0.01, abs=1e-12) and res["verdict"] == "PROVEN"


# --------------------------------------------------------------------------------------------
# combinations, determinism
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "parts", "expected"),
    [
        ("all_of", ["PROVEN", "PROVEN"], "PROVEN"),
        ("all_of", ["PROVEN", "DISPROVEN", "INCONCLUSIVE"], "DISPROVEN"),
        ("all_of", ["PROVEN", "INCONCLUSIVE"], "INCONCLUSIVE"),
        ("all_of", ["PROVEN", "PARTIAL"], "PARTIAL"),
        ("any_of", ["DISPROVEN", "PROVEN", "INCONCLUSIVE"], "PROVEN"),
        ("any_of", ["DISPROVEN", "DISPROVEN"], "DISPROVEN"),
        ("any_of", ["DISPROVEN", "INCONCLUSIVE"], "INCONCLUSIVE"),
        ("any_of", ["DISPROVEN", "PARTIAL"], "PARTIAL"),
    ],
)
def test_combination_truth_table(kind: str, parts: list[str], expected: str) -> None:
    assert rules.combine(kind, parts) == expected  # type: ignore[arg-type]


def test_combination_through_evaluate_and_primary() -> None:
    protocol = make_protocol(
        extra_rules={
            "th": {"kind": "threshold", "statistic": "metric", "metric": "acc", "bound": 0.5},
            "both": {"kind": "all_of", "of": ["H1", "H2"]},
            "either": {"kind": "any_of", "of": ["H1", "H2"]},
        },
        hypotheses=[
            {"id": "H1", "statement": "s", "rule": "rw"},
            {"id": "H2", "statement": "s", "rule": "th"},
            {"id": "H3", "statement": "s", "rule": "both"},
            {"id": "H4", "statement": "s", "rule": "either"},
        ],
    )
    src = SourceData.from_rows(
        sweep_rows({"g1", "g3"}), {"acc": MetricValue("acc", 0.1, 0.05, 0.15)}
    )
    out = evaluate(protocol, Dataset({None: src}))
    got = {h["id"]: h["verdict"] for h in out["hypotheses"]}
    assert got == {"H1": "PROVEN", "H2": "DISPROVEN", "H3": "DISPROVEN", "H4": "PROVEN"}
    assert out["verdict"] == "PROVEN" and out["primary"] == "H1"


def test_deterministic_bit_for_bit_and_independent_of_row_order() -> None:
    rng = np.random.default_rng(20)
    rows = judged_rows(rng, GROUPS, 30, 30, {"c1": 0.8, "c2": 0.6, "b1": 0.5, "b2": 0.4})
    protocol = make_protocol(rule={"ci": {"resamples": 2000, "seed": 99}})
    a = json.dumps(evaluate(protocol, dataset(rows)), sort_keys=True)
    b = json.dumps(evaluate(protocol, dataset(rows)), sort_keys=True)
    shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    c = json.dumps(evaluate(protocol, dataset(shuffled)), sort_keys=True)
    assert a == b == c
    other_seed = make_protocol(rule={"ci": {"resamples": 2000, "seed": 100}})
    assert json.dumps(evaluate(other_seed, dataset(rows)), sort_keys=True) != a
