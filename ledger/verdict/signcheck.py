"""The mandatory sign-check: does each part of a protocol's math say what its author meant?

``sign_check(protocol, registry)`` returns ``{"passed": bool, "checks": [{"check", "target",
"passed", "expected", "found", "cause"}], "notes": [...]}``; ``docket protocol freeze`` refuses a
protocol unless it passes. Three families of checks:

1. **Derived metrics** (``metric direction``): every ``sign_check`` example is evaluated with the
   metric's safe expression; ``better`` must land strictly on the better side of ``worse`` for
   the declared direction. A metric without examples fails (every metric must be exercised).
2. **Signal polarity** (``signal polarity``): each declared ``higher_means`` is compared with the
   runners' signal registry (name -> what a high value means). A contradiction fails unless the
   signal states ``polarity_override_reason``; it then passes and the reason is reported (and so
   stored with the report). Signals the registry does not know pass as "not checked".
3. **Decision rules** (``rule: true effect`` / ``rule: null`` / ``rule: inverted``): each rule is
   run through the real verdict engine (:mod:`ledger.rules`) on synthetic data shaped like the
   protocol (its groups and labels source, ``n_per_class`` items per class per group, the rule's
   own CI settings with the resamples capped at ``resamples_cap``):

   * ``regime_wins``: true = every candidate separates perfectly (AUROC 1) while the baselines
     sit at chance (AUROC 0.5) -> must be PROVEN; null = every candidate identical to the
     baselines (delta exactly 0 in every resample) -> must be DISPROVEN; inverted = every
     candidate perfectly wrong (AUROC 0) against baselines at about 0.76 -> must not be PROVEN.
   * ``threshold`` on ``auroc``: true = AUROC 1 (op ``>=``/``>``) or 0 (``<=``/``<``); null = a
     signal at chance (AUROC 0.5); inverted = the opposite extreme. On ``mean``/``metric``:
     the statistic sits ``d`` past the bound on the op's side (true), ``d`` short of it (null),
     ``3 d`` short (inverted), ``d = |bound| / 2`` (1 for a zero bound); for a derived metric with a
     direction, "true" means on the metric's better side, so an op that rewards the worse side
     is refused.
   * ``threshold`` on ``rate`` / ``count`` / ``fpr_at`` / ``tpr_at``: 0/1 data
     (:func:`_binary_plan`, :func:`_binary_source`): true = every counted sample on the op's
     side with the smallest size whose Clopper-Pearson far side passes the bound (PARTIAL is
     expected when no size up to ``MAX_BINARY_N`` can, e.g. ``<= 0``; under ``decide:
     observed`` at the null's size, where it must be PROVEN); null = the count nearest
     the bound not past it; inverted = the opposite extreme. Unselected groups and the
     uncounted class get the opposite outcome.
   * ``non_inferiority``: true = the candidate beats the reference (AUROC 1 vs about 0.76, or
     mean ``+d`` in the better direction); null = the candidate at chance against a perfect
     reference (mean: worse by ``margin + d``); inverted = the candidate perfectly wrong (mean:
     worse by ``margin + 3 d``).
   * ``all_of`` / ``any_of``: the listed hypotheses' rules under the same scenario, combined by
     the engine's :func:`ledger.rules.combine`.

   Synthetic scores are deterministic normal quantile grids (``Phi^-1((i + 1/2) / n)``, plus a
   shift for the positives), converted to raw values with the declared polarity so the engine's
   orientation is exercised too.

4. **Job inputs** (``job input``): when the caller passes ``job_checks`` (the CLI passes the
   runners' pre-flight), each job's checkpoint is checked without loading weights: a missing
   ``hf:`` directory, a config that is not a causal LM, remote code not allowed, or a ``probe``
   on a model without router logits fails here, naming the path, instead of when the job runs.

A failing check states what was expected, what came out, and the likely cause in one sentence.

The report also carries (stored with it in ``sign_checks.report_json``):

* ``engine``: the bootstrap engine version (``stats.LATEST_ENGINE`` when it ran). The sign-check
  that freezes a protocol fixes its engine: every verdict of that frozen version runs with this
  version (:func:`docketml.ledger.verdicts.engine_version`), so nobody can pick an engine after
  seeing numbers. The rule checks above run with it too.
* ``null_proven``: the PROVEN rate under the null of each simulable rule at the sign-check's size
  (``n_per_class`` items per class per group), from :func:`ledger.simulate.simulate_protocol`
  with ``NULL_STUDIES`` (100) simulated studies and resamples capped at ``NULL_RESAMPLES_CAP``
  (1000): how
  often the rule as frozen would prove an effect that is not there. Informational (it never
  fails the sign-check); a rule that cannot be simulated is listed with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.stats

from docketml.protocols.expr import ExprError, parse_expr
from docketml.protocols.schema import (
    CombinationRule,
    JobSpec,
    NonInferiorityRule,
    Protocol,
    RegimeWinsRule,
    ThresholdRule,
    signal_family,
)

from ..results import MetricValue
from . import stats
from .rules import (
    BINARY_STATISTICS,
    Dataset,
    SourceData,
    clopper_pearson,
    combine,
    describe_condition,
    evaluate_rule,
)
from .simulate import simulate_protocol

N_PER_CLASS = 30
RESAMPLES_CAP = 2000
STRONG = 8.0  # shift giving perfect separation on the grid
MILD = 1.0  # shift giving AUROC about 0.76
SCENARIOS = ("true effect", "null", "inverted")
SYNTH_GROUP = "all"
MAX_BINARY_N = 1 << 16  # the largest synthetic sample a 0/1 rule's true effect may use
# The stored null PROVEN rate: simulated null studies per rule and their resample cap (kept
# modest so the sign-check stays well under a second or two; the standard error of a rate r is
# sqrt(r (1 - r) / NULL_STUDIES), about 0.02 at r = 0.05).
NULL_STUDIES = 100
NULL_RESAMPLES_CAP = 1000


def _check(
    check: str, target: str, passed: bool, expected: str, found: str, cause: str | None = None
) -> dict[str, Any]:
    return {
        "check": check,
        "target": target,
        "passed": bool(passed),
        "expected": expected,
        "found": found,
        "cause": cause,
    }


# --------------------------------------------------------------------------------------------
# 1. Derived metrics
# --------------------------------------------------------------------------------------------


def check_metrics(protocol: Protocol) -> list[dict[str, Any]]:
    """One check per example of every derived metric (a metric without examples fails)."""
    out = []
    for name, metric in protocol.metrics.items():
        higher = metric.direction == "higher_is_better"
        expected = f"{metric.direction}: better {'>' if higher else '<'} worse"
        if not metric.sign_check:
            out.append(
                _check(
                    "metric direction",
                    name,
                    False,
                    expected,
                    "no sign_check examples",
                    "every derived metric must be exercised on raw-term examples (add a "
                    "sign_check entry with better/worse inputs)",
                )
            )
            continue
        try:
            expr = parse_expr(metric.expr)
        except ExprError as exc:
            out.append(_check("metric direction", name, False, expected, "unparsable", str(exc)))
            continue
        for k, ex in enumerate(metric.sign_check):
            target = f"{name} (example {k + 1})"
            try:
                b = expr.evaluate(ex.better)
                w = expr.evaluate(ex.worse)
            except ExprError as exc:
                out.append(_check("metric direction", target, False, expected, "error", str(exc)))
                continue
            ok = b > w if higher else b < w
            found = f"better = {b:.6g}, worse = {w:.6g}"
            cause = None
            if not ok:
                cause = (
                    f"{metric.expr} scores the 'better' example "
                    + ("equal to" if b == w else ("lower" if b < w else "higher"))
                    + f" than the 'worse' one, so under {metric.direction} the metric rewards the "
                    "opposite of what was meant (flip the expression or the direction)"
                )
            out.append(_check("metric direction", target, ok, expected, found, cause))
    return out


# --------------------------------------------------------------------------------------------
# 2. Signal polarity
# --------------------------------------------------------------------------------------------


def check_polarity(protocol: Protocol, registry: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """Declared ``higher_means`` against the runners' registry. A signal the registry does not
    name is checked against its family's entry (``router_entropy_L3`` against
    ``router_entropy_per_layer``, :data:`~docketml.protocols.schema.SIGNAL_FAMILIES`)."""
    out = []
    for name, spec in protocol.signals.items():
        known = None if registry is None else registry.get(name)
        family = signal_family(name)
        if known is None and registry is not None and family is not None:
            known = registry.get(family)
        if known is None:
            out.append(
                _check(
                    "signal polarity",
                    name,
                    True,
                    "a registry entry",
                    f"declared {spec.higher_means}; not in the signal registry (not checked)",
                )
            )
            continue
        expected = f"higher_means {known} (registry)"
        found = f"higher_means {spec.higher_means}"
        if known == spec.higher_means:
            out.append(_check("signal polarity", name, True, expected, found))
        elif spec.polarity_override_reason:
            out.append(
                _check(
                    "signal polarity",
                    name,
                    True,
                    expected,
                    found + " (overridden)",
                    f"override reason: {spec.polarity_override_reason}",
                )
            )
        else:
            out.append(
                _check(
                    "signal polarity",
                    name,
                    False,
                    expected,
                    found,
                    f"the runners record a high {name} as pointing to the {known} class but "
                    f"the protocol declares {spec.higher_means}, which would flip every AUROC "
                    "of it (fix higher_means or set polarity_override_reason)",
                )
            )
    return out


# --------------------------------------------------------------------------------------------
# 3. Rules on synthetic data
# --------------------------------------------------------------------------------------------


def _grid(n: int) -> np.ndarray:
    return scipy.stats.norm.ppf((np.arange(n) + 0.5) / n)


def _sign(protocol: Protocol, signal: str) -> float:
    spec = protocol.signal_spec(signal)
    return -1.0 if spec is not None and spec.higher_means == "negative" else 1.0


def _labelled_source(
    protocol: Protocol, shifts: Mapping[str, float], n: int, name: str
) -> SourceData:
    """Items of every protocol group, positives shifted by ``shifts[signal]`` (oriented units),
    converted to raw values with each signal's declared polarity."""
    grid = _grid(n)
    labels = protocol.labels
    groups = list(protocol.groups) or [SYNTH_GROUP]
    rows = []
    for g in groups:
        if labels is not None and labels.source == "regime":
            classes = [0 if g == labels.reference else 1]
        else:
            classes = [1, 0]
        for cls in classes:
            for i in range(n):
                item = f"{g}-{'p' if cls else 'n'}{i:03d}"
                for sig, shift in shifts.items():
                    oriented = grid[i] + (shift if cls else 0.0)
                    rows.append((g, item, cls, sig, float(_sign(protocol, sig) * oriented)))
    return SourceData.from_rows(rows, name=name)


def _values_source(
    protocol: Protocol, signal: str, center: float, spread: float, n: int, name: str
) -> SourceData:
    """Raw values ``center + spread * grid`` for every item (labels as the protocol says)."""
    grid = _grid(2 * n)
    labels = protocol.labels
    groups = list(protocol.groups) or [SYNTH_GROUP]
    rows = []
    for g in groups:
        if labels is not None and labels.source == "regime":
            cls_of = [0 if g == labels.reference else 1] * (2 * n)
        elif labels is not None:
            cls_of = [1] * n + [0] * n
        else:
            cls_of = [None] * (2 * n)
        for i in range(2 * n):
            rows.append((g, f"{g}-{i:03d}", cls_of[i], signal, float(center + spread * grid[i])))
    return SourceData.from_rows(rows, name=name)


def _regime_dataset(protocol: Protocol, rule: RegimeWinsRule, scenario: str, n: int) -> Dataset:
    cands = list(rule.candidates)
    bases = protocol.baselines_for(rule)
    if scenario == "true effect":
        shifts = {**{c: STRONG for c in cands}, **{b: 0.0 for b in bases}}
    elif scenario == "null":
        shifts = {s: MILD for s in cands + bases}
    else:
        shifts = {**{c: -STRONG for c in cands}, **{b: MILD for b in bases}}
    return Dataset({rule.job: _labelled_source(protocol, shifts, n, f"synthetic {scenario}")})


def _unit(bound: float) -> float:
    """The scenario step of a mean/metric threshold: half the bound's size (1 for a 0 bound)."""
    return abs(bound) / 2.0 if bound != 0 else 1.0


def _threshold_plan(protocol: Protocol, rule: ThresholdRule, scenario: str) -> tuple[float, str]:
    """(target statistic value, description) for a threshold scenario."""
    upward = rule.op in (">=", ">")
    if rule.statistic == "auroc":
        value = {
            "true effect": 1.0 if upward else 0.0,
            "null": 0.5,
            "inverted": 0.0 if upward else 1.0,
        }[scenario]
        return value, f"AUROC {value:g}"
    d = _unit(rule.bound)
    better_up = upward
    if rule.statistic == "metric" and rule.metric in protocol.metrics:
        better_up = protocol.metrics[rule.metric].direction == "higher_is_better"
    step = {"true effect": d, "null": -d, "inverted": -3.0 * d}[scenario]
    if scenario == "true effect":
        value = rule.bound + (d if better_up else -d)
    else:
        value = rule.bound + (step if upward else -step)
    return value, f"{rule.statistic} {value:g}"


def _binary_plan(
    rule: ThresholdRule, scenario: str, n: int, groups: int = 1
) -> tuple[int, int, bool]:
    """(N counted samples, k of them 1, edge) of a 0/1 rule's scenario; ``groups`` = how many
    groups the counted samples are spread over (each needs one).

    true effect: every counted sample on the op's side (k = N for ``>=``/``>``, 0 for
    ``<=``/``<``), N the smallest size from ``2 n`` (``count``: from ``groups``, a count's
    interval depending on N) up to ``MAX_BINARY_N`` whose Clopper-Pearson far side passes the
    bound; ``edge`` = no N does (e.g. ``rate <= 0``: the upper end of 0 of N is
    ``1 - a^(1/N) > 0``), and then the best verdict the rule can give is PARTIAL. A rule
    decided on the observed value (``decide: observed``) needs no CI to pass: its true effect
    is every sample on the op's side at the null's N, never an edge. null: N = 2 n
    and the k nearest to the bound that is not past it (e.g. ``rate >= 0.9`` of 60: k = 53).
    inverted: the opposite extreme."""
    upward = rule.op in (">=", ">")
    if scenario == "true effect" and rule.decision() == "observed":
        size = max(2 * n, int(np.ceil(rule.bound)) + 1) if rule.statistic == "count" else 2 * n
        return size, (size if upward else 0), False
    if scenario == "true effect":
        start = max(1, groups) if rule.statistic == "count" else 2 * n
        sizes = np.arange(start, MAX_BINARY_N + 1)
        k = sizes if upward else np.zeros_like(sizes)
        lo, hi = clopper_pearson(k, sizes, rule.ci.level)
        far = lo if upward else hi
        if rule.statistic == "count":
            far = far * sizes
        cmp = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}
        hits = np.flatnonzero(cmp[rule.op](far, rule.bound))
        if hits.size == 0:
            return 2 * n, (2 * n if upward else 0), True
        size = int(sizes[hits[0]])
        return size, (size if upward else 0), False
    size = 2 * n
    if rule.statistic == "count":
        size = max(size, int(np.ceil(rule.bound)) + 1)
    if scenario == "null":
        cmp = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}
        ks = np.arange(size + 1)
        stat = ks.astype(np.float64) if rule.statistic == "count" else ks / size
        short = ks[~cmp[rule.op](stat, rule.bound)]  # the engine's own comparison
        if short.size == 0:
            return size, (0 if upward else size), False
        return size, int(short.max() if upward else short.min()), False
    return size, (0 if upward else size), False


def _counted_groups(protocol: Protocol, rule: ThresholdRule) -> int:
    """How many groups supply the samples a 0/1 rule counts (regime fpr_at: the reference;
    regime tpr_at: the others)."""
    chosen = list(rule.groups) if rule.groups else (list(protocol.groups) or [SYNTH_GROUP])
    labels = protocol.labels
    if rule.statistic in ("fpr_at", "tpr_at") and labels is not None and labels.source == "regime":
        want_ref = rule.statistic == "fpr_at"
        return max(1, sum(1 for g in chosen if (g == labels.reference) == want_ref))
    return len(chosen)


def _binary_source(
    protocol: Protocol, rule: ThresholdRule, size: int, k: int, name: str
) -> SourceData:
    """Synthetic 0/1 data: ``size`` counted samples, ``k`` of them 1 (for fpr_at/tpr_at: flagged
    at the cut, by the signal's polarity), spread round-robin over the counted groups. A 0/1
    signal stays 0/1. Samples that are not counted (the other class of fpr_at/tpr_at, and every
    group the rule's ``groups:`` leaves out, ``size`` samples each) all get the outcome opposite
    to the op's side, so a rule that counted them would be caught."""
    assert rule.signal is not None
    labels = protocol.labels
    regime = labels is not None and labels.source == "regime"
    all_groups = list(protocol.groups) or [SYNTH_GROUP]
    chosen = list(rule.groups) if rule.groups else all_groups
    upward = rule.op in (">=", ">")
    want: int | None = None
    if rule.statistic in ("fpr_at", "tpr_at"):
        want = 0 if rule.statistic == "fpr_at" else 1
        cut = rule.cut
        assert cut is not None
        sign = _sign(protocol, rule.signal)
        step = max(abs(cut), 1.0)

        def value(one: bool) -> float:  # flagged = oriented value above the oriented cut
            return float(cut + (sign * step if one else -sign * step))

    else:

        def value(one: bool) -> float:
            return 1.0 if one else 0.0

    def group_class(g: str) -> int | None:
        if regime:
            assert labels is not None
            return 0 if g == labels.reference else 1
        return None if labels is None else -1  # -1: judged, set per item

    counted = [g for g in chosen if want is None or not regime or group_class(g) == want]
    rows = []
    for g in all_groups:
        cls = group_class(g)
        if g in counted:
            for j in range(counted.index(g), size, len(counted)):
                lab = cls if cls != -1 else (want if want is not None else j % 2)
                rows.append((g, f"{g}-c{j:05d}", lab, rule.signal, value(j < k)))
        if g not in counted or g not in chosen or (want is not None and not regime):
            extra = size if g not in chosen else 4
            other = None if want is None else 1 - want
            for j in range(extra):
                if g not in chosen:
                    lab = cls if cls != -1 else (want if want is not None else j % 2)
                else:
                    lab = cls if cls != -1 else other
                rows.append((g, f"{g}-x{j:05d}", lab, rule.signal, value(not upward)))
    return SourceData.from_rows(rows, name=name)


def _threshold_dataset(
    protocol: Protocol, rule: ThresholdRule, scenario: str, n: int
) -> tuple[Dataset, str]:
    if rule.statistic in BINARY_STATISTICS:
        size, k, edge = _binary_plan(rule, scenario, n, _counted_groups(protocol, rule))
        src = _binary_source(protocol, rule, size, k, f"synthetic {scenario}")
        unit = "" if rule.statistic == "count" else f" ({k / size:.4g})"
        desc = f"{rule.statistic} {k} of {size}{unit}"
        if edge:
            desc += (
                "; no sample size lets a CI pass this bound, so PARTIAL is the best verdict "
                "(for a gate on the observed samples write decide: observed)"
            )
        return Dataset({rule.job: src}), desc
    value, desc = _threshold_plan(protocol, rule, scenario)
    name = f"synthetic {scenario}"
    if rule.statistic == "auroc":
        assert rule.signal is not None
        shift = {1.0: STRONG, 0.5: 0.0, 0.0: -STRONG}[value]
        src = _labelled_source(protocol, {rule.signal: shift}, n, name)
    elif rule.statistic == "mean":
        assert rule.signal is not None
        d = _unit(rule.bound)
        src = _values_source(protocol, rule.signal, value, d / 20.0, n, name)
    else:
        assert rule.metric is not None
        d = _unit(rule.bound)
        src = SourceData(
            metrics={rule.metric: MetricValue(rule.metric, value, value - d / 10, value + d / 10)},
            name=name,
        )
    return Dataset({rule.job: src}), desc


def _ni_dataset(
    protocol: Protocol, rule: NonInferiorityRule, scenario: str, n: int
) -> tuple[Dataset, str]:
    name = f"synthetic {scenario}"
    if rule.statistic == "auroc":
        cand, ref = {
            "true effect": (STRONG, MILD),
            "null": (0.0, STRONG),
            "inverted": (-STRONG, STRONG),
        }[scenario]
        csrc = _labelled_source(protocol, {rule.signal: cand}, n, f"{name} candidate")
        rsrc = _labelled_source(protocol, {rule.signal: ref}, n, f"{name} reference")
        auc = {STRONG: "1", MILD: "~0.76", 0.0: "0.5", -STRONG: "0"}
        desc = f"candidate AUROC {auc[cand]} vs reference {auc[ref]}"
    else:
        d = rule.margin if rule.margin > 0 else 1.0
        delta = {"true effect": d, "null": -(rule.margin + d), "inverted": -(rule.margin + 3 * d)}[
            scenario
        ]
        shift = delta if rule.higher_is_better else -delta
        rsrc = _values_source(protocol, rule.signal, 0.0, d / 20.0, n, f"{name} reference")
        csrc = _values_source(protocol, rule.signal, shift, d / 20.0, n, f"{name} candidate")
        desc = f"candidate mean {'better' if delta > 0 else 'worse'} by {abs(delta):g}"
    return Dataset({rule.reference_job: rsrc, rule.candidate_job: csrc}), desc


def _regime_cause(rule: RegimeWinsRule, scenario: str, res: dict[str, Any]) -> str:
    wins, contests = res.get("wins"), res.get("contests", [])
    verdict = res["verdict"]
    conds = {v: describe_condition(c) for v, c in rule.verdicts.items()}
    if verdict == "INCONCLUSIVE" and res.get("missing"):
        return f"the engine could not evaluate the synthetic data: {res['missing'][0]}"
    if scenario == "true effect":
        if wins == len(contests):
            proven = rule.verdicts.get("PROVEN")
            if (
                proven is not None
                and proven.require_any_of
                and not (set(proven.require_any_of) & set(contests))
            ):
                return (
                    f"PROVEN requires one of [{', '.join(proven.require_any_of)}] to win, but none "
                    "of them is a contest group (the reference group never competes)"
                )
            if (
                proven is not None
                and proven.min_wins is not None
                and proven.min_wins > len(contests)
            ):
                return (
                    f"PROVEN needs min_wins {proven.min_wins} but there are only {len(contests)} "
                    "contest groups"
                )
            return (
                f"all {len(contests)} groups were won yet the verdict is {verdict}: PROVEN's "
                f"conditions ({conds.get('PROVEN', 'absent')}) reject a clean sweep, so the "
                "verdict thresholds look inverted"
            )
        if rule.margin > 0.5:
            return (
                f"margin {rule.margin:g} exceeds 0.5, the delta of a perfect candidate over a "
                "chance-level baseline, so no group can ever be won"
            )
        return (
            f"only {wins} of {len(contests)} groups were won by a perfect candidate over "
            "chance-level baselines; check the margin and the CI settings"
        )
    if scenario == "null":
        if wins:
            return (
                f"candidates identical to the baselines won {wins} group(s): the win criterion "
                "accepts a zero difference"
            )
        return (
            f"with 0 wins the verdict is {verdict}: DISPROVEN's conditions "
            f"({conds.get('DISPROVEN', 'absent')}) do not cover 0 wins"
            + (
                f" and PROVEN's ({conds['PROVEN']}) accept it, so the thresholds look inverted"
                if verdict == "PROVEN"
                else ""
            )
        )
    return (
        f"candidates worse than the baselines in every group ({wins} wins) still give PROVEN: "
        f"PROVEN's conditions ({conds.get('PROVEN')}) accept {wins} wins, so the thresholds look "
        "inverted"
    )


def _threshold_cause(
    protocol: Protocol, rule: ThresholdRule, scenario: str, desc: str, res: dict[str, Any]
) -> str:
    verdict = res["verdict"]
    if verdict == "INCONCLUSIVE" and res.get("missing"):
        return f"the engine could not evaluate the synthetic data: {res['missing'][0]}"
    if rule.statistic == "metric" and rule.metric in protocol.metrics and scenario == "true effect":
        direction = protocol.metrics[rule.metric].direction
        upward = rule.op in (">=", ">")
        if (direction == "higher_is_better") != upward:
            return (
                f"op {rule.op!r} on the {direction} metric {rule.metric!r}: PROVEN would mean the "
                "metric got worse"
            )
    if rule.statistic == "auroc" and scenario == "null":
        return (
            f"a signal at chance (AUROC 0.5) satisfies {rule.op} {rule.bound:g}, so the rule "
            "proves a signal that carries no information"
        )
    if rule.statistic == "auroc" and scenario == "true effect":
        return (
            f"the best possible AUROC on the op's side ({desc}) cannot satisfy {rule.op} "
            f"{rule.bound:g}: the bound is unreachable"
        )
    return f"the synthetic {scenario} ({desc}) gives {verdict}: {res.get('why', '')}"


def _ni_cause(rule: NonInferiorityRule, scenario: str, desc: str, res: dict[str, Any]) -> str:
    verdict = res["verdict"]
    if verdict == "INCONCLUSIVE" and res.get("missing"):
        return f"the engine could not evaluate the synthetic data: {res['missing'][0]}"
    if scenario == "true effect" and not rule.higher_is_better:
        return (
            "higher_is_better is false, so the rule rewards the candidate for being worse than "
            "the reference"
        )
    if scenario == "true effect" and rule.candidate_job == rule.reference_job:
        return "candidate_job and reference_job are the same job, so nothing is compared"
    if scenario != "true effect":
        return (
            f"a candidate far worse than the reference ({desc}) is {verdict}: margin "
            f"{rule.margin:g} tolerates it"
        )
    return f"the synthetic {scenario} ({desc}) gives {verdict}: {res.get('why', '')}"


def _expected(scenario: str) -> str:
    return {"true effect": "PROVEN", "null": "DISPROVEN", "inverted": "not PROVEN"}[scenario]


def _ok(scenario: str, verdict: str) -> bool:
    return {
        "true effect": verdict == "PROVEN",
        "null": verdict == "DISPROVEN",
        "inverted": verdict != "PROVEN",
    }[scenario]


def _rule_scenario(
    protocol: Protocol, name: str, scenario: str, n: int, cap: int, engine: int = 1
) -> tuple[str, str, Callable[[], str]]:
    """(verdict, description of the synthetic data, cause-builder) of one rule in a scenario."""
    rule = protocol.decision_rules[name]
    if isinstance(rule, RegimeWinsRule):
        res = evaluate_rule(
            protocol,
            name,
            _regime_dataset(protocol, rule, scenario, n),
            resamples_cap=cap,
            engine=engine,
        )
        desc = {
            "true effect": "candidates AUROC 1 vs baselines 0.5",
            "null": "candidates identical to baselines",
            "inverted": "candidates AUROC 0 vs baselines ~0.76",
        }[scenario]
        desc += f"; {res.get('wins')} of {len(res.get('contests', []))} groups won"
        return res["verdict"], desc, lambda: _regime_cause(rule, scenario, res)
    if isinstance(rule, ThresholdRule):
        ds, desc = _threshold_dataset(protocol, rule, scenario, n)
        res = evaluate_rule(protocol, name, ds, resamples_cap=cap, engine=engine)
        return (
            res["verdict"],
            desc,
            lambda: _threshold_cause(protocol, rule, scenario, desc, res),
        )
    if isinstance(rule, NonInferiorityRule):
        ds, desc = _ni_dataset(protocol, rule, scenario, n)
        res = evaluate_rule(protocol, name, ds, resamples_cap=cap, engine=engine)
        return res["verdict"], desc, lambda: _ni_cause(rule, scenario, desc, res)
    assert isinstance(rule, CombinationRule)
    rule_of = {h.id: h.rule for h in protocol.hypotheses}
    subs = [(h, _rule_scenario(protocol, rule_of[h], scenario, n, cap, engine)) for h in rule.of]
    verdict = combine(rule.kind, [s[1][0] for s in subs])
    desc = ", ".join(f"{h} {s[0]}" for h, s in subs)
    return (
        verdict,
        desc,
        lambda: f"{rule.kind}({desc}) combines to {verdict}",
    )


def check_rules(
    protocol: Protocol,
    n_per_class: int = N_PER_CLASS,
    resamples_cap: int = RESAMPLES_CAP,
    engine: int = stats.LATEST_ENGINE,
) -> list[dict[str, Any]]:
    """Three scenario checks per decision rule, through the real engine (version ``engine``)."""
    out = []
    for name in protocol.decision_rules:
        for scenario in SCENARIOS:
            try:
                verdict, desc, cause = _rule_scenario(
                    protocol, name, scenario, n_per_class, resamples_cap, engine
                )
            except Exception as exc:  # a crash of the engine is a failed check, never a pass
                out.append(
                    _check(
                        f"rule: {scenario}",
                        name,
                        False,
                        _expected(scenario),
                        "error",
                        f"the engine raised {type(exc).__name__}: {exc}",
                    )
                )
                continue
            ok = _ok(scenario, verdict)
            expected = _expected(scenario)
            rule = protocol.decision_rules[name]
            if (
                scenario == "true effect"
                and isinstance(rule, ThresholdRule)
                and rule.statistic in BINARY_STATISTICS
                and _binary_plan(rule, scenario, n_per_class, _counted_groups(protocol, rule))[2]
            ):
                # no sample size lets the CI pass the bound (e.g. rate <= 0): PARTIAL is the best
                ok, expected = verdict == "PARTIAL", "PARTIAL (the best a CI allows at this bound)"
            out.append(
                _check(
                    f"rule: {scenario}",
                    name,
                    ok,
                    expected,
                    f"{verdict} ({desc})",
                    None if ok else cause(),
                )
            )
    return out


def check_jobs(
    protocol: Protocol, job_checks: Callable[[JobSpec], list[tuple[str, str | None]]] | None
) -> list[dict[str, Any]]:
    """Family 4: what the runners can check about each job before it runs (its checkpoint);
    ``job_checks(job)`` returns ``[(subject, problem_or_None)]`` (runners.jobs.preflight)."""
    if job_checks is None:
        return []
    out = []
    for job in protocol.jobs:
        for subject, problem in job_checks(job):
            out.append(
                _check(
                    "job input",
                    job.name,
                    problem is None,
                    f"{subject} usable by a {job.kind!r} job",
                    "usable" if problem is None else "not usable",
                    problem,
                )
            )
    return out


def null_proven_rates(
    protocol: Protocol,
    n_per_class: int = N_PER_CLASS,
    resamples_cap: int = NULL_RESAMPLES_CAP,
    n_studies: int = NULL_STUDIES,
    engine: int = stats.LATEST_ENGINE,
) -> dict[str, Any]:
    """The PROVEN rate under the null of every simulable rule at ``n_per_class`` items per class
    per group: :func:`ledger.simulate.simulate_protocol` run at the null point only (regime_wins:
    true gap 0; threshold: the statistic exactly at the bound; non_inferiority: true difference
    ``-margin``), ``n_studies`` studies, resamples ``min(ci.resamples, resamples_cap)``, the
    protocol's seed. Returns ``{"n_per_class", "studies", "resamples_cap", "engine", "rules":
    [{"rule", "kind", "rate", "null_gap", "resamples"}], "skipped": [{"rule", "reason"}]}``;
    ``rate`` is a fraction of ``studies`` (Monte Carlo standard error ``sqrt(r (1 - r) /
    studies)``). A simulation that cannot run is reported in ``error``, never raised."""
    out: dict[str, Any] = {
        "n_per_class": n_per_class,
        "studies": n_studies,
        "resamples_cap": resamples_cap,
        "engine": engine,
        "rules": [],
        "skipped": [],
    }
    try:
        sim = simulate_protocol(
            protocol,
            n_sims=n_studies,
            n_per_class=n_per_class,
            gaps=[],
            resamples=resamples_cap,
            engine=engine,
        )
    except Exception as exc:  # informational: never turns a sign-check into a crash
        out["error"] = f"the null simulation raised {type(exc).__name__}: {exc}"
        return out
    out["rules"] = [
        {
            "rule": r["rule"],
            "kind": r["kind"],
            "rate": r["null_proven_rate"],
            "null_gap": r["null_gap"],
            "resamples": r["resamples"],
        }
        for r in sim["rules"]
    ]
    out["skipped"] = sim["skipped"]
    return out


def describe_null(null: Mapping[str, Any] | None) -> str | None:
    """One sentence for the stored null PROVEN rates (None when the report has none, i.e. it
    predates them), e.g. ``PROVEN rate under the null at 30 per class (200 simulated studies,
    resamples <= 2000): regime_wins 0.000, corollary_auroc 0.045``."""
    if not null:
        return None
    head = (
        f"PROVEN rate under the null at {null['n_per_class']} per class ({null['studies']} "
        f"simulated studies, resamples <= {null['resamples_cap']})"
    )
    if null.get("error"):
        return f"{head}: not computed ({null['error']})"
    parts = [f"{r['rule']} {r['rate']:.3f}" for r in null.get("rules", []) if r["rate"] is not None]
    parts += [f"{s['rule']} not simulated ({s['reason']})" for s in null.get("skipped", [])]
    return f"{head}: " + (", ".join(parts) if parts else "no simulable rule")


def sign_check(
    protocol: Protocol,
    registry: Mapping[str, str] | None = None,
    *,
    n_per_class: int = N_PER_CLASS,
    resamples_cap: int = RESAMPLES_CAP,
    job_checks: Callable[[JobSpec], list[tuple[str, str | None]]] | None = None,
    null_studies: int = NULL_STUDIES,
) -> dict[str, Any]:
    """Run every check (see the module docstring); ``passed`` is True iff all pass.
    ``job_checks`` (given by the CLI from the runners) adds family 4, the job inputs. The report
    records ``engine`` (the engine version the protocol freezes with) and ``null_proven``
    (:func:`null_proven_rates`; ``null_studies = 0`` skips it)."""
    engine = stats.LATEST_ENGINE
    checks = check_metrics(protocol) + check_polarity(protocol, registry)
    checks += check_rules(protocol, n_per_class, resamples_cap, engine)
    checks += check_jobs(protocol, job_checks)
    notes = [
        f"rules ran through the verdict engine (version {engine}) on synthetic data: "
        f"{n_per_class} items per class per group, bootstrap resamples capped at "
        f"{resamples_cap} (the verdict uses the protocol's own count)"
    ]
    if registry is None:
        notes.append("no signal registry given: signal polarities were not checked")
    report: dict[str, Any] = {
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
        "notes": notes,
        "engine": engine,
    }
    if null_studies > 0:
        null = null_proven_rates(protocol, n_per_class, NULL_RESAMPLES_CAP, null_studies, engine)
        report["null_proven"] = null
        line = describe_null(null)
        if line:
            notes.append(line)
    notes.append(
        f"verdicts of this version, once frozen, run with bootstrap engine {engine} "
        "(recorded here, not chosen at verdict time)"
    )
    return report
