"""The rule menu (issue 13, item 4): ``groups:`` selection, the 0/1 statistics ``rate``,
``count``, ``fpr_at`` / ``tpr_at`` with exact Clopper-Pearson CIs, and the family-wise
``correction:`` (holm / bonferroni), each through the real engine, sign-check and simulation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from docketml.ledger.verdict.rules import (
    Dataset,
    SourceData,
    clopper_pearson,
    evaluate,
    evaluate_rule,
    family_alphas,
)
from docketml.ledger.verdict.signcheck import _binary_plan, _binary_source, sign_check
from docketml.ledger.verdict.simulate import simulate_protocol
from docketml.protocols.canonical import canonical_json, protocol_sha256
from docketml.protocols.errors import ProtocolErrors
from docketml.protocols.loader import load_protocol_file, load_protocol_text

LIBRARY = Path(__file__).resolve().parents[1] / "protocols" / "library"

HEAD = """
docket: 1
id: menu
title: Rule menu
signals:
  refused: {higher_means: positive}
  abstain_p: {higher_means: positive}
  confidence: {higher_means: negative}
labels: {source: regime, reference: in_domain}
groups: [in_domain, held_out_idk, gibberish]
"""

MENU = (
    HEAD
    + """
hypotheses:
  - {id: H1, statement: refusals, rule: idk_gate}
  - {id: H2, statement: no false positives, rule: fp_at_cut}
  - {id: H3, statement: nine of ten, rule: nine}
  - {id: H4, statement: gibberish flagged, rule: tpr}
  - {id: H5, statement: gibberish abstains, rule: gib_mean}
decision_rules:
  idk_gate: {kind: threshold, statistic: rate, signal: refused, groups: [held_out_idk],
             op: ">=", bound: 0.9, ci: {method: clopper_pearson, level: 0.95}}
  fp_at_cut: {kind: threshold, statistic: fpr_at, signal: abstain_p, cut: 0.775,
              groups: [in_domain], op: "<=", bound: 0.0}
  nine: {kind: threshold, statistic: count, signal: refused, groups: [held_out_idk],
         op: ">=", bound: 9}
  tpr: {kind: threshold, statistic: tpr_at, signal: abstain_p, cut: 0.775, groups: [gibberish],
        op: ">=", bound: 0.5}
  gib_mean: {kind: threshold, statistic: mean, signal: abstain_p, groups: [gibberish],
             op: ">", bound: 0.775}
"""
)


def load(text: str):
    return load_protocol_text(text).protocol


def errors(text: str) -> str:
    with pytest.raises(ProtocolErrors) as info:
        load_protocol_text(text)
    return str(info.value)


def source(rows: dict[str, dict[str, list[float]]], name: str = "test data") -> SourceData:
    """``rows[group][signal]`` = values of items 0.. of that group (regime labels ignore the
    recorded label)."""
    out = []
    for g, signals in rows.items():
        for sig, values in signals.items():
            for i, v in enumerate(values):
                out.append((g, f"{g}-{i:03d}", None, sig, float(v)))
    return SourceData.from_rows(out, name=name)


def standard_data(refused_idk: list[float], abstain_in: list[float]) -> Dataset:
    return Dataset(
        {
            None: source(
                {
                    "in_domain": {"refused": [0.0] * 10, "abstain_p": abstain_in},
                    "held_out_idk": {"refused": refused_idk, "abstain_p": [0.9] * 10},
                    "gibberish": {"refused": [0.0] * 10, "abstain_p": [0.95] * 9 + [0.1]},
                }
            )
        }
    )


# ------------------------------------------------------------------------------------------
# Clopper-Pearson
# ------------------------------------------------------------------------------------------

CP_TABLE = [
    (k, n)
    for n in (1, 2, 3, 7, 10, 30, 101, 1000, 25_000)
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n})
]


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95, 0.99, 0.999])
def test_clopper_pearson_equals_scipy_binomtest(level: float) -> None:
    ks = np.array([k for k, _ in CP_TABLE])
    ns = np.array([n for _, n in CP_TABLE])
    lo, hi = clopper_pearson(ks, ns, level)  # batched
    for j, (k, n) in enumerate(CP_TABLE):
        ref = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
        assert abs(lo[j] - ref.low) <= 1e-12, (k, n, level)
        assert abs(hi[j] - ref.high) <= 1e-12, (k, n, level)
    assert lo[ks == 0].max() == 0.0 and hi[ks == ns].min() == 1.0


# ------------------------------------------------------------------------------------------
# rate / count / fpr_at / tpr_at and groups:
# ------------------------------------------------------------------------------------------


def test_rate_over_selected_group_with_exact_ci() -> None:
    p = load(MENU)
    ds = standard_data([1.0] * 9 + [0.0], [0.1] * 10)
    res = evaluate_rule(p, "idk_gate", ds)
    ref = scipy.stats.binomtest(9, 10).proportion_ci(confidence_level=0.95, method="exact")
    # only held_out_idk counts: in_domain and gibberish have refused = 0 everywhere
    assert (res["k"], res["n"], res["value"]) == (9, 10, 0.9)
    assert res["ci_low"] == pytest.approx(ref.low, abs=1e-12)
    assert res["ci_high"] == pytest.approx(ref.high, abs=1e-12)
    assert res["verdict"] == "PARTIAL"  # the point is >= 0.9, the CI low (0.555) is not
    assert res["ci"] == {"method": "clopper_pearson", "level": 0.95}
    assert "over groups (held_out_idk)" in res["why"] and "9 of 10 samples" in res["why"]


def test_rate_proven_and_disproven() -> None:
    p = load(MENU.replace("held_out_idk]\n             op", "held_out_idk]\n             op"))
    big = Dataset(
        {
            None: source(
                {
                    "in_domain": {"refused": [0.0] * 3},
                    "held_out_idk": {"refused": [1.0] * 200},
                    "gibberish": {"refused": [0.0] * 3},
                }
            )
        }
    )
    assert evaluate_rule(p, "idk_gate", big)["verdict"] == "PROVEN"  # CI low 0.982 >= 0.9
    low = standard_data([1.0] * 5 + [0.0] * 5, [0.1] * 10)
    assert evaluate_rule(p, "idk_gate", low)["verdict"] == "DISPROVEN"


def test_rate_refuses_a_signal_that_is_not_0_1() -> None:
    p = load(MENU)
    ds = standard_data([1.0] * 8 + [0.5, 0.0], [0.1] * 10)
    res = evaluate_rule(p, "idk_gate", ds)
    assert res["verdict"] == "INCONCLUSIVE"
    assert "counts a 0/1 signal, but 'refused' has 1 value that are neither 0 nor 1" in res["why"]
    assert "first: 0.5 for item 'held_out_idk-008'" in res["why"]


def test_count_nine_of_ten() -> None:
    p = load(MENU)
    res = evaluate_rule(p, "nine", standard_data([1.0] * 9 + [0.0], [0.1] * 10), engine=2)
    lo, hi = clopper_pearson(9, 10, 0.95)
    assert res["value"] == 9.0
    assert res["ci_low"] == pytest.approx(10 * float(lo)) and res["ci_high"] == 10 * float(hi)
    # a count is decided on the observed count (decide: observed, its default under engine 2,
    # every new freeze): 9 of 10 passes
    assert res["decide"] == "observed" and res["verdict"] == "PROVEN"
    res8 = evaluate_rule(p, "nine", standard_data([1.0] * 8 + [0.0] * 2, [0.1] * 10), engine=2)
    assert res8["verdict"] == "DISPROVEN"
    # decide: ci keeps the reading "rate >= 9/10 on its CI": ten samples do not prove it
    on_ci = load(MENU.replace('op: ">=", bound: 9}', 'op: ">=", bound: 9, decide: ci}'))
    res_ci = evaluate_rule(on_ci, "nine", standard_data([1.0] * 9 + [0.0], [0.1] * 10))
    assert res_ci["decide"] == "ci" and res_ci["verdict"] == "PARTIAL"


def test_fpr_at_cut_counts_label_0_samples_at_the_cut() -> None:
    p = load(MENU)
    # in_domain (the reference = label 0): one sample exactly at the cut counts as flagged
    res = evaluate_rule(p, "fp_at_cut", standard_data([1.0] * 10, [0.1] * 9 + [0.775]))
    assert (res["k"], res["n"], res["counted"]) == (1, 10, "label-0 samples")
    assert res["verdict"] == "DISPROVEN"
    clean = evaluate_rule(p, "fp_at_cut", standard_data([1.0] * 10, [0.1] * 9 + [0.774]))
    # 0 of 10 satisfies <= 0.0 at the point, but no CI's high end of a rate is 0: PARTIAL at best
    assert clean["value"] == 0.0 and clean["ci_high"] > 0.0 and clean["verdict"] == "PARTIAL"
    tpr = evaluate_rule(p, "tpr", standard_data([1.0] * 10, [0.1] * 10))
    assert (tpr["k"], tpr["n"], tpr["counted"]) == (9, 10, "label-1 samples")


def test_fpr_at_respects_negative_polarity() -> None:
    text = MENU.replace(
        "fp_at_cut: {kind: threshold, statistic: fpr_at, signal: abstain_p, cut: 0.775,",
        "fp_at_cut: {kind: threshold, statistic: fpr_at, signal: confidence, cut: 0.2,",
    )
    p = load(text)
    conf = [0.9] * 8 + [0.2, 0.1]  # higher_means negative: flagged = confidence <= 0.2
    ds = Dataset(
        {
            None: source(
                {
                    "in_domain": {"confidence": conf},
                    "held_out_idk": {"confidence": [0.1] * 3},
                    "gibberish": {"confidence": [0.1] * 3},
                }
            )
        }
    )
    res = evaluate_rule(p, "fp_at_cut", ds)
    assert (res["k"], res["n"]) == (2, 10)


def test_groups_selection_for_mean_and_non_inferiority() -> None:
    text = (
        HEAD
        + """
hypotheses:
  - {id: H1, statement: m, rule: m}
  - {id: H2, statement: ni, rule: ni}
jobs:
  - {name: a, kind: probe}
  - {name: b, kind: probe}
decision_rules:
  m: {kind: threshold, statistic: mean, signal: abstain_p, groups: [gibberish], op: ">",
      bound: 0.5, ci: {resamples: 200}}
  ni: {kind: non_inferiority, statistic: mean, signal: abstain_p, candidate_job: a,
       reference_job: b, margin: 0.05, groups: [gibberish], ci: {resamples: 200}}
"""
    )
    p = load(text)
    vals = {"in_domain": [0.0] * 4, "held_out_idk": [0.0] * 4, "gibberish": [0.8, 0.9, 1.0, 0.9]}
    ref = {**vals, "gibberish": [0.8, 0.9, 1.0, 0.9], "in_domain": [5.0] * 4}
    ds = Dataset(
        {
            None: source({g: {"abstain_p": v} for g, v in vals.items()}),
            "a": source({g: {"abstain_p": v} for g, v in vals.items()}, "job a"),
            "b": source({g: {"abstain_p": v} for g, v in ref.items()}, "job b"),
        }
    )
    m = evaluate_rule(p, "m", ds)
    assert m["value"] == pytest.approx(0.9) and m["n"] == 4 and m["verdict"] == "PROVEN"
    ni = evaluate_rule(p, "ni", ds)  # in_domain differs by 5.0 but is not selected
    assert ni["difference"] == 0.0 and ni["paired"] is True and ni["verdict"] == "PROVEN"
    assert "over groups (gibberish)" in ni["why"]


def test_validation_errors_name_the_field() -> None:
    bad = MENU.replace("groups: [held_out_idk],\n             op", "groups: [held_out],\n     op")
    msg = errors(bad)
    assert "decision_rules.idk_gate.groups[0]" in msg and "unknown group" in msg
    assert "did you mean 'held_out_idk'" in msg
    assert "needs a cut" in errors(MENU.replace(" cut: 0.775,\n              groups", "\n groups"))
    assert "clopper_pearson" in errors(MENU.replace("method: clopper_pearson", "method: delong"))
    assert "in [0, 1]" in errors(MENU.replace('op: ">=", bound: 0.5}', 'op: ">=", bound: 50}'))
    assert "can never hold" in errors(MENU.replace('"<=", bound: 0.0}', '"<", bound: 0.0}'))
    assert "label-0 samples" in errors(MENU.replace("groups: [in_domain]", "groups: [gibberish]"))
    on_metric = MENU.replace(
        "gib_mean: {kind: threshold, statistic: mean, signal: abstain_p,",
        "gib_mean: {kind: threshold, statistic: metric, metric: acc,",
    )
    assert "decision_rules.gib_mean.groups" in errors(on_metric)


def test_sign_check_passes_with_0_1_synthetic_data() -> None:
    p = load(MENU)
    report = sign_check(p)
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    found = {(c["target"], c["check"]): c for c in report["checks"]}
    assert found[("idk_gate", "rule: true effect")]["found"].startswith("PROVEN (rate 60 of 60")
    edge = found[("fp_at_cut", "rule: true effect")]
    assert edge["expected"].startswith("PARTIAL") and edge["found"].startswith("PARTIAL")
    assert found[("nine", "rule: null")]["found"] == "DISPROVEN (count 8 of 60)"
    for name in ("idk_gate", "nine"):
        rule = p.decision_rules[name]
        for scenario in ("true effect", "null", "inverted"):
            size, k, _ = _binary_plan(rule, scenario, 30)
            src = _binary_source(p, rule, size, k, "x")
            values = np.concatenate([g.values["refused"] for g in src.groups.values()])
            assert set(np.unique(values)) <= {0.0, 1.0}  # a 0/1 signal stays 0/1


JUDGED = """
docket: 1
id: judged
title: judged labels
signals:
  fail: {higher_means: positive}
  conf: {higher_means: negative}
labels: {source: judged}
groups: [a, b, c]
hypotheses:
  - {id: H1, statement: x, rule: r1}
  - {id: H2, statement: x, rule: r2}
  - {id: H3, statement: x, rule: r3}
  - {id: H4, statement: x, rule: r4}
decision_rules:
  r1: {kind: threshold, statistic: fpr_at, signal: conf, cut: 0.3, groups: [a, b], op: "<=",
       bound: 0.1}
  r2: {kind: threshold, statistic: tpr_at, signal: conf, cut: 0.3, groups: [c], op: ">",
       bound: 0.8}
  r3: {kind: threshold, statistic: rate, signal: fail, op: "<", bound: 0.2}
  r4: {kind: threshold, statistic: count, signal: fail, groups: [b], op: "<=", bound: 3}
"""


def test_sign_check_judged_labels_and_small_counts() -> None:
    report = sign_check(load(JUDGED))
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    found = {(c["target"], c["check"]): c["found"] for c in report["checks"]}
    assert found[("r4", "rule: true effect")] == "PROVEN (count 0 of 60)"  # decided as observed
    assert found[("r1", "rule: null")] == "DISPROVEN (fpr_at 7 of 60 (0.1167))"


def test_a_rate_bound_no_data_can_meet_is_refused() -> None:
    text = MENU.replace('op: ">=", bound: 0.9, ci:', 'op: ">", bound: 1.0, ci:')
    assert "decision_rules.idk_gate.op" in errors(text) and "can never hold" in errors(text)


def test_simulation_of_a_rate_rule() -> None:
    text = MENU.replace(
        "bound: 0.9, ci: {method: clopper_pearson", "bound: 0.5, ci: {method: clopper_pearson"
    )
    p = load(text)
    n_sims, n = 2000, 100
    sim = simulate_protocol(p, n_sims=n_sims, n_per_class=n, resamples=100)
    rule = next(r for r in sim["rules"] if r["rule"] == "idk_gate")
    assert rule["gap_label"] == "true rate - bound (towards the op)"
    # exact PROVEN probability: N = 100 samples of the one selected group, k ~ Bin(N, 0.5 + gap)
    ks = np.arange(n + 1)
    lo, _ = clopper_pearson(ks, np.full(n + 1, n), 0.95)
    for pt in rule["points"]:
        exact = float(scipy.stats.binom.pmf(ks, n, 0.5 + pt["gap"])[lo >= 0.5].sum())
        se = max(np.sqrt(exact * (1 - exact) / n_sims), 1e-3)
        assert abs(pt["rates"]["PROVEN"] - exact) <= 4 * se, (pt, exact)
    assert rule["null_proven_rate"] <= 0.025  # the CP low end is a one-sided 2.5% exact test
    assert {r["rule"] for r in sim["rules"]} >= {"idk_gate", "fp_at_cut", "nine", "tpr"}


# ------------------------------------------------------------------------------------------
# Family-wise correction
# ------------------------------------------------------------------------------------------

# Hand-computed (alpha = 0.05). Holm: sort p; reject p_(j) <= 0.05 / (m - j + 1) until the first
# failure. Bonferroni: reject p <= 0.05 / m.
HOLM_TABLE = [
    # p-values                          holm rejects                      bonferroni rejects
    ([0.01, 0.04, 0.03], [True, False, False], [True, False, False]),  # 0.01<=.0167; .03>.025
    ([0.01, 0.02, 0.04], [True, True, True], [True, False, False]),  # .01, .02<=.025, .04<=.05
    ([0.001, 0.013, 0.02, 0.03], [True, True, True, True], [True, False, False, False]),
    ([0.02, 0.001, 0.3], [True, True, False], [False, True, False]),  # .02 <= .025
    ([0.2, 0.3], [False, False], [False, False]),
    (
        [0.004, 0.011, 0.019, 0.07, 0.04],
        [True, True, False, False, False],
        [True, False] + [False] * 3,
    ),
]


@pytest.mark.parametrize(("pvalues", "holm", "bonf"), HOLM_TABLE)
def test_family_decisions_match_holm_and_bonferroni(pvalues, holm, bonf) -> None:
    def oracle(i: int, a: float) -> bool:
        return pvalues[i] <= a

    assert family_alphas("holm", 0.05, len(pvalues), oracle)[1] == holm
    assert family_alphas("bonferroni", 0.05, len(pvalues), oracle)[1] == bonf
    try:
        from statsmodels.stats.multitest import multipletests
    except ImportError:
        return
    assert list(multipletests(pvalues, 0.05, "holm")[0]) == holm
    assert list(multipletests(pvalues, 0.05, "bonferroni")[0]) == bonf


CORRECTED = (
    HEAD
    + """
hypotheses:
  - {id: H1, statement: a, rule: r1}
  - {id: H2, statement: b, rule: r2}
  - {id: H3, statement: c, rule: r3}
decision_rules:
  r1: {kind: threshold, statistic: rate, signal: refused, groups: [held_out_idk], bound: 0.5}
  r2: {kind: threshold, statistic: rate, signal: refused, groups: [gibberish], bound: 0.5}
  r3: {kind: threshold, statistic: rate, signal: refused, groups: [in_domain], bound: 0.5}
correction: {method: METHOD, family: [H1, H2, H3]}
"""
)


def _rates_data(k1: int, k2: int, k3: int, n: int = 40) -> Dataset:
    def col(k: int) -> list[float]:
        return [1.0] * k + [0.0] * (n - k)

    return Dataset(
        {
            None: source(
                {
                    "held_out_idk": {"refused": col(k1)},
                    "gibberish": {"refused": col(k2)},
                    "in_domain": {"refused": col(k3)},
                }
            )
        }
    )


def _cp_p(k: int, n: int, bound: float) -> float:
    """The smallest two-sided alpha at which the CP low end of k/n reaches ``bound``: twice
    the one-sided exact p-value P(X >= k | p = bound)."""
    return 2.0 * float(scipy.stats.binom.sf(k - 1, n, bound))


def test_correction_changes_decisions_and_is_shown() -> None:
    ks = (30, 27, 27)  # uncorrected: all PROVEN at level 0.95
    ps = [_cp_p(k, 40, 0.5) for k in ks]
    assert all(p < 0.05 for p in ps)
    plain = load(CORRECTED.replace("correction: {method: METHOD, family: [H1, H2, H3]}\n", ""))
    assert [h["verdict"] for h in evaluate(plain, _rates_data(*ks))["hypotheses"]] == ["PROVEN"] * 3
    for method in ("holm", "bonferroni"):
        p = load(CORRECTED.replace("METHOD", method))
        out = evaluate(p, _rates_data(*ks))["hypotheses"]
        expect = family_alphas(method, 0.05, 3, lambda i, a: ps[i] <= a)[1]
        assert [h["verdict"] == "PROVEN" for h in out] == expect
        assert expect != [True] * 3  # the correction mattered
        for h in out:
            c = h["correction"]
            assert c["method"] == method and c["family"] == ["H1", "H2", "H3"] and c["m"] == 3
            assert f"{method} correction over H1, H2, H3" in h["why"]
        if method == "bonferroni":
            assert all(h["correction"]["level"] == pytest.approx(1 - 0.05 / 3) for h in out)
        else:  # H1 proven at alpha/3; H2, H3 retried at alpha/2 and not proven there
            levels = [h["correction"]["level"] for h in out]
            assert levels == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 2, 1 - 0.05 / 2])
    assert "correction" not in evaluate(plain, _rates_data(*ks))["hypotheses"][0]


def test_correction_validation() -> None:
    msg = errors(CORRECTED.replace("METHOD", "holm").replace("[H1, H2, H3]", "[H1, H9]"))
    assert "correction.family[1]" in msg and "unknown hypothesis" in msg
    msg = errors(CORRECTED.replace("METHOD", "sidak"))
    assert "correction.method" in msg
    text = CORRECTED.replace("METHOD", "holm").replace(
        "groups: [in_domain], bound: 0.5}", "groups: [in_domain], bound: 0.5, ci: {level: 0.9}}"
    )
    assert "different ci.level" in errors(text)


# ------------------------------------------------------------------------------------------
# Hashes of existing protocols are unchanged
# ------------------------------------------------------------------------------------------

PINNED = {
    # sha256 of the shipped files as of the commit before the rule menu; a change here means a
    # protocol hash changed (or the file's text did: then re-pin deliberately)
    "poe_self_speculative.yaml": "7524617e0d03bc76e4d32b5572ed0da811b74a14369269c52d6c4549f72e2aaf",
    "examples/inverted_forgetting.yaml": (
        "e406827589a4f2aec66cc60d818a2cf1a8773f08ff295fe0abebba519e17b462"
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_protocol_sha256_unchanged(name: str) -> None:
    loaded = load_protocol_file(LIBRARY / name)
    assert protocol_sha256(loaded.protocol) == PINNED[name]


def test_new_fields_absent_from_canonical_json_when_unset() -> None:
    text = CORRECTED.replace("correction: {method: METHOD, family: [H1, H2, H3]}\n", "")
    text = text.replace(" groups: [held_out_idk],", "")
    canon = canonical_json(load(text))
    assert '"correction"' not in canon and '"cut"' not in canon
    assert canon.count('"groups"') == 1 + 2  # the protocol's, r2's and r3's
    with_corr = canonical_json(load(CORRECTED.replace("METHOD", "holm")))
    assert '"correction":{"family":["H1","H2","H3"],"method":"holm"}' in with_corr


# ------------------------------------------------------------------------------------------
# Through the CLI: the correction is shown in the verdict text and --json
# ------------------------------------------------------------------------------------------

CLI_PROTOCOL = """docket: 1
id: menu-cli
title: Rule menu through the CLI
signals:
  refused: {higher_means: positive}
labels: {source: regime, reference: in_domain}
groups: [in_domain, held_out_idk, gibberish]
jobs:
  - {name: probe, kind: probe}
hypotheses:
  - {id: H1, statement: held-out refusals, rule: r1}
  - {id: H2, statement: gibberish refusals, rule: r2}
decision_rules:
  r1: {kind: threshold, statistic: rate, signal: refused, groups: [held_out_idk], bound: 0.5,
       job: probe}
  r2: {kind: threshold, statistic: rate, signal: refused, groups: [gibberish], bound: 0.5,
       job: probe}
correction: {method: bonferroni, family: [H1, H2]}
"""


def test_verdict_cli_shows_the_correction(docket_sqlite, tmp_path: Path) -> None:
    import json

    proto = tmp_path / "menu.yaml"
    proto.write_text(CLI_PROTOCOL)
    for args in (("protocol", "register", str(proto)), ("protocol", "freeze", "menu-cli")):
        r = docket_sqlite(*args)
        assert r.exit_code == 0, r.output
    rows = []
    for g, k in (("in_domain", 0), ("held_out_idk", 27), ("gibberish", 40)):
        for i in range(40):
            rows.append(
                {
                    "group": g,
                    "item": f"{g}-{i:02d}",
                    "label": 0 if g == "in_domain" else 1,
                    "signals": {"refused": 1.0 if i < k else 0.0},
                }
            )
    data = tmp_path / "probe.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = docket_sqlite("ingest", "menu-cli", str(data), "--job", "probe")
    assert r.exit_code == 0, r.output
    r = docket_sqlite("verdict", "menu-cli", "--json")
    assert r.exit_code == 0, r.output
    h1, h2 = json.loads(r.output)["hypotheses"]
    # 27 of 40: PROVEN at 0.95 (p = 0.038) but not at the Bonferroni level 1 - 0.05/2
    assert h1["verdict"] == "PARTIAL" and h2["verdict"] == "PROVEN"
    assert h1["correction"]["level"] == pytest.approx(0.975) and h1["correction"]["m"] == 2
    text = " ".join(docket_sqlite("verdict", "menu-cli").output.split())
    assert "bonferroni correction over H1, H2: CI level 0.975 instead of 0.95" in text
    assert "rate(refused) over groups (held_out_idk) = 27 of 40 samples" in text


def test_pilot_simulation_of_a_rate_rule_resamples_the_counted_outcomes() -> None:
    p = load(MENU)
    pilot = standard_data([1.0] * 10, [0.1] * 10).sources[None]  # held_out_idk: 10 of 10
    sim = simulate_protocol(p, n_sims=50, n_per_class=200, resamples=100, pilot=pilot)
    rule = next(r for r in sim["rules"] if r["rule"] == "idk_gate")
    # every resampled study is 200 of 200 ones: CI low 0.982 >= 0.9
    assert rule["points"][0]["rates"]["PROVEN"] == 1.0
    fp = next(r for r in sim["rules"] if r["rule"] == "fp_at_cut")
    assert fp["points"][0]["rates"]["PARTIAL"] == 1.0  # 0 flagged, but <= 0.0 is never PROVEN


def test_auroc_over_selected_groups_keeps_the_reference_negatives() -> None:
    text = MENU.replace(
        "gib_mean: {kind: threshold, statistic: mean, signal: abstain_p, groups: [gibberish],",
        "gib_mean: {kind: threshold, statistic: auroc, signal: abstain_p, groups: [gibberish],",
    )
    p = load(text)
    ds = Dataset(
        {
            None: source(
                {
                    "in_domain": {"abstain_p": [0.1, 0.2, 0.3, 0.4]},
                    "held_out_idk": {"abstain_p": [0.0, 0.0, 0.0, 0.0]},  # not selected
                    "gibberish": {"abstain_p": [0.9, 0.8, 0.7, 0.6]},
                }
            )
        }
    )
    res = evaluate_rule(p, "gib_mean", ds)
    assert res["value"] == 1.0 and (res["n_pos"], res["n_neg"]) == (4, 4)
