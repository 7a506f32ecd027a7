"""``decide: observed | ci`` (docs/protocol.md, "Observed or CI"): a 0/1 rule is decided either
on its observed value (a gate on the declared samples: 9 of 10 passes, 0 false positives
passes) or on its exact Clopper-Pearson interval (a population claim). ``count`` defaults to
``observed``, the proportions to ``ci``. Checked through the real engine, the sign-check and
the simulation, with the intervals cross-checked against ``scipy.stats.binomtest``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from docketml.ledger.verdict.rules import Dataset, SourceData, evaluate, evaluate_rule
from docketml.ledger.verdict.signcheck import sign_check
from docketml.ledger.verdict.simulate import simulate_protocol
from docketml.protocols.canonical import canonical_json
from docketml.protocols.errors import ProtocolErrors
from docketml.protocols.loader import load_protocol_text

GATES = """
docket: 1
id: gates
title: Deploy gates
signals:
  refused: {higher_means: positive}
  abstain_p: {higher_means: positive}
labels: {source: regime, reference: in_domain}
groups: [in_domain, held_out_idk, gibberish]
hypotheses:
  - {id: G1, statement: nine of ten refusals, rule: nine}
  - {id: G2, statement: no in-domain false positive, rule: fp_zero}
  - {id: G3, statement: refusal rate, rule: rate90}
  - {id: G4, statement: every gate, rule: gates}
decision_rules:
  nine: {kind: threshold, statistic: count, signal: refused, groups: [held_out_idk],
         op: ">=", bound: 9}
  fp_zero: {kind: threshold, statistic: fpr_at, signal: abstain_p, cut: 0.775,
            groups: [in_domain], op: "<=", bound: 0.0, decide: observed}
  rate90: {kind: threshold, statistic: rate, signal: refused, groups: [held_out_idk],
           op: ">=", bound: 0.9}
  gates: {kind: all_of, of: [G1, G2]}
"""


def load(text: str):
    return load_protocol_text(text).protocol


def errors(text: str) -> str:
    with pytest.raises(ProtocolErrors) as info:
        load_protocol_text(text)
    return str(info.value)


def data(refused: list[float], abstain_in: list[float]) -> Dataset:
    rows = []
    for g, signals in {
        "in_domain": {"refused": [0.0] * len(abstain_in), "abstain_p": abstain_in},
        "held_out_idk": {"refused": refused, "abstain_p": [0.9] * len(refused)},
        "gibberish": {"refused": [1.0] * 5, "abstain_p": [0.95] * 5},
    }.items():
        for sig, values in signals.items():
            rows += [(g, f"{g}-{i:03d}", None, sig, float(v)) for i, v in enumerate(values)]
    return Dataset({None: SourceData.from_rows(rows, name="test data")})


def cp(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    ref = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ref.low), float(ref.high)


NINE = [1.0] * 9 + [0.0]
CLEAN = [0.1] * 9 + [0.774]  # no in-domain sample at or above the cut


def test_count_gate_nine_of_ten_is_proven_and_eight_is_disproven() -> None:
    p = load(GATES)
    assert p.decision_rules["nine"].decision() == "observed"  # count's default (engine 2)
    res = evaluate_rule(p, "nine", data(NINE, CLEAN), engine=2)
    lo, hi = cp(9, 10)
    assert (res["k"], res["n"], res["value"], res["decide"]) == (9, 10, 9.0, "observed")
    assert res["verdict"] == "PROVEN"
    # the interval is still reported (n x the rate's exact interval), equal to scipy's
    assert abs(res["ci_low"] - 10 * lo) <= 1e-11 and abs(res["ci_high"] - 10 * hi) <= 1e-11
    assert "shown, not used: decide: observed" in res["why"]
    assert "the observed value is >= 9" in res["why"]
    eight = evaluate_rule(p, "nine", data([1.0] * 8 + [0.0] * 2, CLEAN), engine=2)
    assert eight["verdict"] == "DISPROVEN" and "is not >= 9" in eight["why"]
    assert evaluate_rule(p, "nine", data([1.0] * 10, CLEAN), engine=2)["verdict"] == "PROVEN"


def test_count_keeps_its_ci_reading_under_engine_1() -> None:
    """Protocols frozen before engine versions (engine 1) decided an unstated ``count`` on its
    CI; their recorded verdicts must re-derive unchanged, so engine 1 keeps that default."""
    p = load(GATES)
    assert p.decision_rules["nine"].decision(1) == "ci"
    old = evaluate_rule(p, "nine", data(NINE, CLEAN), engine=1)
    assert (old["decide"], old["verdict"]) == ("ci", "PARTIAL")  # CI low 10 x 0.555 < 9
    explicit = load(GATES.replace('op: ">=", bound: 9}', 'op: ">=", bound: 9, decide: observed}'))
    assert evaluate_rule(explicit, "nine", data(NINE, CLEAN), engine=1)["verdict"] == "PROVEN"


def test_fpr_gate_at_zero_is_provable_when_decided_on_the_observed_value() -> None:
    p = load(GATES)
    res = evaluate_rule(p, "fp_zero", data(NINE, CLEAN))
    assert (res["k"], res["n"], res["value"]) == (0, 10, 0.0)
    assert res["verdict"] == "PROVEN"
    assert res["ci_high"] == pytest.approx(cp(0, 10)[1], abs=1e-12) and res["ci_high"] > 0.0
    one = evaluate_rule(p, "fp_zero", data(NINE, [0.1] * 9 + [0.775]))  # at the cut: flagged
    assert (one["k"], one["verdict"]) == (1, "DISPROVEN")
    # decided on the CI the same data can be PARTIAL at best (the upper end of 0 of n is > 0)
    on_ci = load(GATES.replace("bound: 0.0, decide: observed}", "bound: 0.0}"))
    assert on_ci.decision_rules["fp_zero"].decision() == "ci"
    assert evaluate_rule(on_ci, "fp_zero", data(NINE, CLEAN))["verdict"] == "PARTIAL"
    # and the sign-check says so at freeze time, naming the way out
    check = next(
        c
        for c in sign_check(on_ci)["checks"]
        if (c["target"], c["check"]) == ("fp_zero", "rule: true effect")
    )
    assert check["passed"] and check["expected"].startswith("PARTIAL")
    assert "write decide: observed" in check["found"]


@pytest.mark.parametrize(("k", "n"), [(9, 10), (13, 13), (29, 29), (36, 36), (35, 36), (40, 60)])
def test_rate_on_its_ci_matches_scipy_and_observed_is_the_point(k: int, n: int) -> None:
    p = load(GATES)
    res = evaluate_rule(p, "rate90", data([1.0] * k + [0.0] * (n - k), CLEAN))
    lo, hi = cp(k, n)
    assert abs(res["ci_low"] - lo) <= 1e-12 and abs(res["ci_high"] - hi) <= 1e-12
    expect = "PROVEN" if lo >= 0.9 else ("PARTIAL" if k / n >= 0.9 else "DISPROVEN")
    assert res["decide"] == "ci" and res["verdict"] == expect
    obs = load(GATES.replace('op: ">=", bound: 0.9}', 'op: ">=", bound: 0.9, decide: observed}'))
    got = evaluate_rule(obs, "rate90", data([1.0] * k + [0.0] * (n - k), CLEAN))
    assert got["verdict"] == ("PROVEN" if k / n >= 0.9 else "DISPROVEN")
    assert (got["ci_low"], got["ci_high"]) == (res["ci_low"], res["ci_high"])


def test_the_deploy_gates_combine() -> None:
    p = load(GATES)
    out = {h["id"]: h["verdict"] for h in evaluate(p, data(NINE, CLEAN), engine=2)["hypotheses"]}
    assert out == {"G1": "PROVEN", "G2": "PROVEN", "G3": "PARTIAL", "G4": "PROVEN"}
    bad = {
        h["id"]: h["verdict"] for h in evaluate(p, data(NINE, [0.9] * 10), engine=2)["hypotheses"]
    }
    assert bad["G2"] == "DISPROVEN" and bad["G4"] == "DISPROVEN"


def test_validation_of_decide() -> None:
    on_mean = GATES.replace(
        "rate90: {kind: threshold, statistic: rate,", "rate90: {kind: threshold, statistic: mean,"
    ).replace("bound: 0.9}", "bound: 0.9, decide: observed}")
    msg = errors(on_mean)
    assert "decision_rules.rate90.decide" in msg and "is for the 0/1 statistics" in msg
    assert "decide" in errors(GATES.replace("decide: observed}", "decide: point}"))
    corr = GATES + "correction: {method: holm, family: [G1, G3]}\n"
    msg = errors(corr)
    assert "correction.family[0]" in msg
    assert "decide: observed (the default of statistic count)" in msg
    ok = corr.replace('op: ">=", bound: 9}', 'op: ">=", bound: 9, decide: ci}')
    assert load(ok).correction is not None


def test_decide_is_omitted_from_the_canonical_json_when_unset() -> None:
    plain = canonical_json(load(GATES.replace(", decide: observed}", "}")))
    assert '"decide"' not in plain
    stated = canonical_json(load(GATES))
    assert stated.count('"decide":"observed"') == 1


def test_sign_check_of_observed_gates() -> None:
    report = sign_check(load(GATES))
    assert report["passed"], [c for c in report["checks"] if not c["passed"]]
    found = {(c["target"], c["check"]): c for c in report["checks"]}
    assert found[("fp_zero", "rule: true effect")]["expected"] == "PROVEN"
    assert found[("fp_zero", "rule: true effect")]["found"] == "PROVEN (fpr_at 0 of 60 (0))"
    assert found[("fp_zero", "rule: null")]["found"] == "DISPROVEN (fpr_at 1 of 60 (0.01667))"
    assert found[("nine", "rule: true effect")]["found"] == "PROVEN (count 60 of 60)"
    assert found[("nine", "rule: null")]["found"] == "DISPROVEN (count 8 of 60)"


def test_simulation_of_an_observed_gate_matches_the_binomial() -> None:
    p = load(GATES)
    n_sims, n = 4000, 10
    sim = simulate_protocol(p, n_sims=n_sims, n_per_class=n, resamples=100)
    rules = {r["rule"]: r for r in sim["rules"]}
    nine = rules["nine"]
    # N = 10 counted samples (held_out_idk, n per group); true rate 9/10 + gap; PROVEN iff k >= 9
    for pt in nine["points"]:
        prob = min(max(0.9 + pt["gap"], 0.0), 1.0)
        exact = float(scipy.stats.binom.sf(8, n, prob))
        se = max(np.sqrt(exact * (1 - exact) / n_sims), 1e-3)
        assert abs(pt["rates"]["PROVEN"] - exact) <= 4 * se, (pt, exact)
        assert pt["rates"]["PARTIAL"] == 0.0  # an observed decision has no PARTIAL
    # at no effect an observed gate passes 73.6% of the time: it is a gate, not a test
    assert abs(nine["null_proven_rate"] - float(scipy.stats.binom.sf(8, n, 0.9))) <= 0.03
    fp = rules["fp_zero"]
    null = next(pt for pt in fp["points"] if pt["gap"] == 0.0)
    assert null["rates"]["PROVEN"] == 1.0  # true FP rate exactly 0: never a false positive


CLI_PROTOCOL = """docket: 1
id: gates-cli
title: Deploy gates through the CLI
signals:
  refused: {higher_means: positive}
labels: {source: regime, reference: in_domain}
groups: [in_domain, held_out_idk]
jobs:
  - {name: probe, kind: probe}
hypotheses:
  - {id: G1, statement: nine of ten refusals, rule: nine}
decision_rules:
  nine: {kind: threshold, statistic: count, signal: refused, groups: [held_out_idk],
         op: ">=", bound: 9, job: probe}
"""


def test_verdict_cli_shows_an_observed_gate(docket_sqlite, tmp_path) -> None:
    import json

    proto = tmp_path / "gates.yaml"
    proto.write_text(CLI_PROTOCOL)
    for args in (("protocol", "register", str(proto)), ("protocol", "freeze", "gates-cli")):
        r = docket_sqlite(*args)
        assert r.exit_code == 0, r.output
    rows = [
        {"group": g, "item": f"{g}-{i}", "label": int(g != "in_domain"),
         "signals": {"refused": float(g == "held_out_idk" and i < 9)}}
        for g in ("in_domain", "held_out_idk") for i in range(10)
    ]  # fmt: skip
    data = tmp_path / "probe.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert docket_sqlite("ingest", "gates-cli", str(data), "--job", "probe").exit_code == 0
    r = docket_sqlite("verdict", "gates-cli", "--json")
    assert r.exit_code == 0, r.output
    (g1,) = json.loads(r.output)["hypotheses"]
    assert (g1["verdict"], g1["decide"], g1["k"], g1["n"]) == ("PROVEN", "observed", 9, 10)
    text = " ".join(docket_sqlite("verdict", "gates-cli").output.split())
    assert ">= 9 observed" in text and "(not used)" in text
    assert "9 of 10 samples = 9" in text and "the observed value is >= 9" in text
