"""The verdict engine: a frozen protocol + in-memory data -> PROVEN / PARTIAL / DISPROVEN /
INCONCLUSIVE per hypothesis, with every number that decided it.

Pure: no database, no clock, no global random state. ``ledger/verdict.py`` loads the data from
the ledger; ``ledger/signcheck.py`` and ``ledger/simulate.py`` feed synthetic data through the
same functions (the batched cores below take a leading "study" axis ``T``; a real verdict is
``T = 1``).

Data model
----------
* :class:`SourceData` is what one data source holds: per group, the items (sorted), their 0/1
  labels (``-1`` = no label) and, per signal, one value per item (``NaN`` = not recorded), plus
  the scalar metrics recorded by the source's runs, and ``problems`` (reasons the source cannot
  be trusted, e.g. a ``silent_noop`` run): any rule reading a source with problems is
  INCONCLUSIVE and says why.
* :class:`Dataset` maps a job name to its source; the key ``None`` is "the chosen runs of every
  job, merged" (used by rules without ``job:``). A rule whose source is absent is INCONCLUSIVE.

Labels (``protocol.labels``)
----------------------------
* ``judged``: each item's own label; every protocol group is a contest between its label-1 and
  label-0 items.
* ``regime``: the group decides; the ``reference`` group's items are the negatives and every
  other group is a contest whose items are the positives against those negatives. The reference
  group itself is not a contest. Recorded labels are ignored.
* Pooled ("cross-group") AUROC: judged = every labelled item of the protocol's groups; regime =
  the reference (negatives) against the union of all other groups (positives).

Signals are oriented by their declared polarity before any AUROC: ``score = value`` when
``higher_means: positive`` and ``-value`` when ``negative``; never auto-flipped.

Rules
-----
``regime_wins`` (per contest group g, candidate c, baselines B)::

    delta_c = AUROC(c) - max_{b in B} AUROC(b)            (full sample, both modes)
    win_c   = delta_c >= margin  and  CI_low(delta_c) > 0
    won_g   = any_c win_c                                 (the candidate family)
    wins    = #{g : won_g}

The verdicts are tried in the order PROVEN, PARTIAL, DISPROVEN; a verdict holds when every
condition it states holds (``wins >= min_wins``, ``wins <= max_wins``, at least one group of
``require_any_of`` won); none holding -> INCONCLUSIVE naming the win count. ``delta >= margin``
is evaluated with a 1e-12 tolerance so that a delta equal to the margin in exact arithmetic is
not lost to float rounding.

CI of ``delta_c`` (level ``ci.level``):

* ``paired_bootstrap``: per contest group one stratified resample set (positives and negatives
  resampled separately, ``ci.resamples`` times) shared by every signal, drawn from the group's
  generator ``ledger.stats.derive_group_rngs(ci.seed, protocol.groups)[g]`` (so adding data to
  one group never changes another group's stream); per resample b the delta is
  ``c_b - b*_b`` (``best_baseline: fixed``: b* = the best baseline on the full sample) or
  ``c_b - max_k b_k,b`` (``per_resample``); percentile interval (numpy "linear").
* ``delong``: ``delta -/+ z sqrt(S_cc + S_bb - 2 S_cb)`` with the DeLong covariance ``S``
  (``ledger.stats.delong_structural``), b = the fixed best baseline. With ``per_resample`` the
  DeLong analogue of ``c - max_k b_k = min_k (c - b_k)`` is used: ``[min_k lo_k, min_k hi_k]``
  over the per-baseline intervals.

``threshold`` (statistic s, op, bound): ``mean`` = mean of the signal's raw values over every item
of the protocol's groups (bootstrap CI of the mean; ``delong`` -> normal CI ``mean -/+ z s/sqrt
n``); ``auroc`` = pooled AUROC (stratified bootstrap CI with generator
``derive_group_rngs(ci.seed, ["pooled"])``, or the DeLong CI); ``metric`` = a metric recorded by
the source (the row with the highest step; its recorded CI, if any), or a derived metric of the
protocol evaluated on the recorded metrics (no CI). With ``>=``/``>``: CI low past the bound ->
PROVEN, else the point past it -> PARTIAL, else DISPROVEN; ``<=``/``<`` use the CI high. Without a
CI the best verdict is PARTIAL (a point alone cannot prove).

``groups:`` (threshold and non_inferiority): only the listed groups' samples enter the
statistic (default: the protocol's groups); under ``regime`` labels a pooled AUROC still takes
its negatives from the reference group.

0/1 statistics (``threshold``; :func:`_binary_outcomes`, :func:`clopper_pearson`): ``rate`` =
k / n over the selected samples of a 0/1 signal (any other value -> INCONCLUSIVE); ``count`` = k
with the rate's interval scaled by n; ``fpr_at`` / ``tpr_at`` = the fraction of label-0 / label-1
samples flagged at ``cut`` (``value >= cut`` for ``higher_means: positive``, ``value <= cut`` for
``negative``). Interval: exact Clopper-Pearson at ``ci.level``. Decision
(:meth:`ThresholdRule.decision`, :func:`decide_binary`): ``ci`` (default of rate, fpr_at,
tpr_at) as every threshold; ``observed`` (default of count) the observed value past the bound ->
PROVEN, else DISPROVEN, the interval reported but not used.

``correction`` (top level): the family's rules are decided at the CI levels of
:func:`family_alphas` (bonferroni: ``1 - alpha / m``; holm: the step-down sequence) and their
results carry ``correction``.

``non_inferiority``: ``d = s(candidate) - s(reference)`` (negated when ``higher_is_better`` is
false), s = pooled AUROC or mean of the signal. CI low of d > -margin -> PROVEN; else
d > -margin -> PARTIAL; else DISPROVEN. When both jobs hold exactly the same items (same
(group, item) keys and labels) the comparison is paired: one stratified resample set drawn from
``derive_group_rngs(ci.seed, ["candidate", "reference"])["candidate"]`` is applied to both
(a mean compares per-item differences; DeLong uses the paired covariance). Otherwise the two
jobs are resampled independently (each from its own generator of that pair; DeLong adds the two
variances).

``all_of`` / ``any_of``: as documented in :class:`protocols.schema.CombinationRule`.

Missing data never disappears: a contest group without both classes, a signal never recorded or
recorded for only some items, a job with no succeeded run, a tainted run, each makes the rule
INCONCLUSIVE with a sentence naming exactly what is missing; groups that could be computed are
still reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.special

from docketml.protocols.expr import ExprError, parse_expr
from docketml.protocols.schema import (
    CISpec,
    CombinationRule,
    Correction,
    NonInferiorityRule,
    Protocol,
    RegimeWinsRule,
    ThresholdRule,
    VerdictThreshold,
)

from ..results import MetricValue
from . import stats

Verdict = Literal["PROVEN", "PARTIAL", "DISPROVEN", "INCONCLUSIVE"]
VERDICTS: tuple[Verdict, ...] = ("PROVEN", "PARTIAL", "DISPROVEN", "INCONCLUSIVE")
TRIED_ORDER: tuple[Verdict, ...] = ("PROVEN", "PARTIAL", "DISPROVEN")
MARGIN_TOL = 1e-12
POOLED_STREAM = "pooled"
BINARY_STATISTICS = ("rate", "count", "fpr_at", "tpr_at")
NI_STREAMS = ("candidate", "reference")

__all__ = [
    "Dataset",
    "GroupSamples",
    "SourceData",
    "VERDICTS",
    "Verdict",
    "combine",
    "contest_stats",
    "decide_binary",
    "decide_non_inferiority",
    "decide_observed",
    "decide_regime",
    "decide_threshold",
    "evaluate",
    "evaluate_rule",
    "rule_sources",
]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSamples:
    """The items of one group: ``items`` sorted; ``labels`` int8 (1, 0, or -1 = no label);
    ``values[signal]`` float64 aligned with ``items`` (NaN = not recorded for that item)."""

    items: tuple[str, ...]
    labels: np.ndarray
    values: dict[str, np.ndarray]


@dataclass
class SourceData:
    """Everything one data source (a job's chosen runs, or every job's merged) holds."""

    groups: dict[str, GroupSamples] = field(default_factory=dict)
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    run_ids: tuple[int, ...] = ()
    problems: tuple[str, ...] = ()
    name: str = "the data"
    nonfinite: dict[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, str, int | None, str, float]],
        metrics: Mapping[str, MetricValue] | None = None,
        *,
        run_ids: Sequence[int] = (),
        problems: Sequence[str] = (),
        name: str = "the data",
    ) -> SourceData:
        """Build from long rows ``(group, item, label, signal, value)`` in priority order: a later
        row overrides an earlier one with the same (group, item, signal), and an item's label is
        that of its latest row (``None`` -> -1, no label). A non-finite value (NaN, inf) counts
        as not recorded and is counted in ``nonfinite`` so that messages can say so."""
        labels: dict[str, dict[str, int]] = {}
        values: dict[tuple[str, str], dict[str, float]] = {}
        for group, item, label, signal, value in rows:
            by_item = labels.get(group)
            if by_item is None:
                by_item = labels[group] = {}
            by_item[item] = -1 if label is None else int(label)
            key = (group, signal)
            column = values.get(key)
            if column is None:
                column = values[key] = {}
            column[item] = float(value)
        nonfinite: dict[tuple[str, str], int] = {}
        for key, column in values.items():
            bad = sum(1 for v in column.values() if not math.isfinite(v))
            if bad:
                nonfinite[key] = bad
        groups: dict[str, GroupSamples] = {}
        for group in sorted(labels):
            items = tuple(sorted(labels[group]))
            lab = np.fromiter((labels[group][i] for i in items), dtype=np.int8, count=len(items))
            vals: dict[str, np.ndarray] = {}
            for g, signal in sorted(k for k in values if k[0] == group):
                column = values[(g, signal)]
                arr = np.fromiter(
                    (column.get(i, math.nan) for i in items), dtype=np.float64, count=len(items)
                )
                arr[~np.isfinite(arr)] = np.nan
                vals[signal] = arr
            groups[group] = GroupSamples(items, lab, vals)
        return cls(
            groups,
            dict(metrics or {}),
            tuple(run_ids),
            tuple(problems),
            name,
            nonfinite,
        )

    def signals(self) -> set[str]:
        return {s for g in self.groups.values() for s in g.values}


@dataclass
class Dataset:
    """Data sources by job name (``None`` = the chosen runs of every job, merged)."""

    sources: dict[str | None, SourceData] = field(default_factory=dict)
    unavailable: dict[str | None, str] = field(default_factory=dict)

    def get(self, job: str | None) -> SourceData | str:
        """The source, or a sentence saying why there is none."""
        if job in self.sources:
            return self.sources[job]
        if job in self.unavailable:
            return self.unavailable[job]
        if job is None:
            return "no succeeded run is bound to this protocol version"
        return f"job {job!r} has no succeeded run bound to this protocol version"


def rule_sources(rule: Any) -> list[str | None]:
    """The data sources (job names; None = all runs merged) a decision rule reads."""
    if isinstance(rule, RegimeWinsRule | ThresholdRule):
        return [rule.job]
    if isinstance(rule, NonInferiorityRule):
        return [rule.candidate_job, rule.reference_job]
    return []


# --------------------------------------------------------------------------------------------
# Shaping samples into contests
# --------------------------------------------------------------------------------------------


def _orient(protocol: Protocol, signal: str) -> float:
    spec = protocol.signal_spec(signal)
    return -1.0 if spec is not None and spec.higher_means == "negative" else 1.0


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _signal_gaps(
    src: SourceData, group: str, gs: GroupSamples, mask: np.ndarray, signals: Sequence[str]
) -> list[str]:
    """Sentences for signals absent or partly recorded among the ``mask`` items of a group."""
    out = []
    n = int(mask.sum())
    for s in signals:
        arr = gs.values.get(s)
        if arr is None:
            out.append(f"signal {s!r} was not recorded in group {group!r} ({src.name})")
            continue
        miss = int(np.isnan(arr[mask]).sum())
        if miss:
            bad = src.nonfinite.get((group, s), 0)
            note = f", {bad} of them non-finite (NaN/inf)" if bad else ""
            out.append(
                f"signal {s!r} is missing for {miss} of {_count(n, 'item')} in group {group!r}"
                f"{note} ({src.name})"
            )
    return out


@dataclass
class _Contest:
    pos: np.ndarray  # (S, n_pos) oriented
    neg: np.ndarray  # (S, n_neg) oriented
    keys: tuple[tuple[str, str, int], ...]  # (group, item, label) of pos then neg


def _contest(
    protocol: Protocol, src: SourceData, group: str, signals: Sequence[str], *, keys: bool = True
) -> _Contest | list[str]:
    """Positives/negatives of one contest group, oriented; or the sentences naming what is
    missing. ``keys=False``: the result's ``keys`` stay empty (no tuple per item)."""
    labels = protocol.labels
    assert labels is not None
    sign = np.array([_orient(protocol, s) for s in signals])[:, None]
    if labels.source == "regime":
        ref = labels.reference
        assert ref is not None
        problems = []
        gp, gr = src.groups.get(group), src.groups.get(ref)
        if gp is None or not gp.items:
            problems.append(f"group {group!r} has no observations ({src.name})")
        if gr is None or not gr.items:
            problems.append(f"reference group {ref!r} has no observations ({src.name})")
        if problems:
            return problems
        assert gp is not None and gr is not None
        problems += _signal_gaps(src, group, gp, np.ones(len(gp.items), bool), signals)
        problems += _signal_gaps(src, ref, gr, np.ones(len(gr.items), bool), signals)
        if problems:
            return problems
        pos = np.stack([gp.values[s] for s in signals]) * sign
        neg = np.stack([gr.values[s] for s in signals]) * sign
        both_keys = (
            tuple((group, i, 1) for i in gp.items) + tuple((ref, i, 0) for i in gr.items)
            if keys
            else ()
        )
        return _Contest(pos, neg, both_keys)
    gs = src.groups.get(group)
    if gs is None or not gs.items:
        return [f"group {group!r} has no observations ({src.name})"]
    unlabelled = int((gs.labels < 0).sum())
    if unlabelled:
        return [f"group {group!r} has {_count(unlabelled, 'item')} without a label ({src.name})"]
    pmask, nmask = gs.labels == 1, gs.labels == 0
    n_pos, n_neg = int(pmask.sum()), int(nmask.sum())
    if n_pos == 0 or n_neg == 0:
        return [
            f"group {group!r} lacks a class: {n_pos} positive ({labels.positive}) and {n_neg} "
            f"negative items ({src.name})"
        ]
    problems = _signal_gaps(src, group, gs, np.ones(len(gs.items), bool), signals)
    if problems:
        return problems
    mat = np.stack([gs.values[s] for s in signals]) * sign
    item_keys = (
        tuple((group, gs.items[i], 1) for i in np.flatnonzero(pmask))
        + tuple((group, gs.items[i], 0) for i in np.flatnonzero(nmask))
        if keys
        else ()
    )
    return _Contest(mat[:, pmask], mat[:, nmask], item_keys)


def _protocol_groups(
    protocol: Protocol, src: SourceData, selected: Sequence[str] | None = None
) -> list[str]:
    """The groups whose samples a statistic reads: a rule's ``groups:`` when given, else the
    protocol's groups, else every group the source holds."""
    if selected:
        return list(selected)
    return list(protocol.groups) if protocol.groups else sorted(src.groups)


def _pooled(
    protocol: Protocol,
    src: SourceData,
    signals: Sequence[str],
    selected: Sequence[str] | None = None,
    *,
    keys: bool = True,
) -> _Contest | list[str]:
    """Pooled (cross-group) positives/negatives of the protocol's groups (or the ``selected``
    ones); every group must be present (a missing group is named, never dropped). Under
    ``regime`` labels the reference group always supplies the negatives; ``selected`` chooses
    which other groups supply positives. ``keys=False``: the result's ``keys`` stay empty
    (callers that never pair items skip one tuple per item)."""
    labels = protocol.labels
    if labels is None:
        return ["the protocol has no labels: section, so there are no classes to separate"]
    groups = _protocol_groups(protocol, src, selected)
    if not groups:
        return [f"no observations ({src.name})"]
    problems: list[str] = []
    if labels.source == "regime":
        ref = labels.reference
        assert ref is not None
        parts = []
        for g in groups:
            if g == ref:
                continue
            got = _contest(protocol, src, g, signals, keys=keys)
            if isinstance(got, list):
                problems += [p for p in got if p not in problems]
            else:
                parts.append(got)
        if problems:
            return problems
        if not parts:
            return ["no group other than the reference: nothing to compare"]
        pos = np.concatenate([p.pos for p in parts], axis=1)
        neg = parts[0].neg
        pooled_keys = (
            tuple(k for p in parts for k in p.keys if k[2] == 1)
            + tuple(k for k in parts[0].keys if k[2] == 0)
            if keys
            else ()
        )
        return _Contest(pos, neg, pooled_keys)
    poss, negs, pkeys, nkeys = [], [], [], []
    sign = np.array([_orient(protocol, s) for s in signals])[:, None]
    for g in groups:
        gs = src.groups.get(g)
        if gs is None or not gs.items:
            problems.append(f"group {g!r} has no observations ({src.name})")
            continue
        unlabelled = int((gs.labels < 0).sum())
        if unlabelled:
            problems.append(
                f"group {g!r} has {_count(unlabelled, 'item')} without a label ({src.name})"
            )
            continue
        gaps = _signal_gaps(src, g, gs, np.ones(len(gs.items), bool), signals)
        if gaps:
            problems += gaps
            continue
        mat = np.stack([gs.values[s] for s in signals]) * sign
        pm, nm = gs.labels == 1, gs.labels == 0
        poss.append(mat[:, pm])
        negs.append(mat[:, nm])
        if keys:
            pkeys += [(g, gs.items[i], 1) for i in np.flatnonzero(pm)]
            nkeys += [(g, gs.items[i], 0) for i in np.flatnonzero(nm)]
    if problems:
        return problems
    pos, neg = np.concatenate(poss, axis=1), np.concatenate(negs, axis=1)
    if pos.shape[1] == 0 or neg.shape[1] == 0:
        return [
            f"the pooled data lack a class: {pos.shape[1]} positive and {neg.shape[1]} negative "
            f"items ({src.name})"
        ]
    return _Contest(pos, neg, tuple(pkeys) + tuple(nkeys))


def _all_values(
    protocol: Protocol, src: SourceData, signal: str, selected: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[tuple[str, str], ...]] | list[str]:
    """Raw (not oriented) values of ``signal`` over every item of the protocol's groups (or of
    the ``selected`` groups)."""
    groups = _protocol_groups(protocol, src, selected)
    problems: list[str] = []
    vals, keys = [], []
    for g in groups:
        gs = src.groups.get(g)
        if gs is None or not gs.items:
            problems.append(f"group {g!r} has no observations ({src.name})")
            continue
        gaps = _signal_gaps(src, g, gs, np.ones(len(gs.items), bool), [signal])
        if gaps:
            problems += gaps
            continue
        vals.append(gs.values[signal])
        keys += [(g, i) for i in gs.items]
    if problems:
        return problems
    if not vals:
        return [f"no observations ({src.name})"]
    return np.concatenate(vals), tuple(keys)


def _labelled_values(
    protocol: Protocol, src: SourceData, signal: str, selected: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray] | list[str]:
    """Raw values of ``signal`` and 0/1 labels over the items of the selected groups: judged
    labels as recorded (an unlabelled item is a problem); regime labels by group (the reference
    = 0, every other group = 1)."""
    labels = protocol.labels
    if labels is None:
        return ["the protocol has no labels: section, so no sample is label 0 or 1"]
    problems: list[str] = []
    vals, labs = [], []
    for g in _protocol_groups(protocol, src, selected):
        gs = src.groups.get(g)
        if gs is None or not gs.items:
            problems.append(f"group {g!r} has no observations ({src.name})")
            continue
        gaps = _signal_gaps(src, g, gs, np.ones(len(gs.items), bool), [signal])
        if gaps:
            problems += gaps
            continue
        if labels.source == "regime":
            lab = np.full(len(gs.items), 0 if g == labels.reference else 1, dtype=np.int8)
        else:
            unlabelled = int((gs.labels < 0).sum())
            if unlabelled:
                problems.append(
                    f"group {g!r} has {_count(unlabelled, 'item')} without a label ({src.name})"
                )
                continue
            lab = gs.labels
        vals.append(gs.values[signal])
        labs.append(lab)
    if problems:
        return problems
    if not vals:
        return [f"no observations ({src.name})"]
    return np.concatenate(vals), np.concatenate(labs)


def _binary_outcomes(
    protocol: Protocol, src: SourceData, rule: ThresholdRule
) -> tuple[np.ndarray, str] | list[str]:
    """The 0/1 outcomes a ``rate`` / ``count`` / ``fpr_at`` / ``tpr_at`` rule counts, and what
    they are ("samples", "label-0 samples", ...); or the sentences naming what is missing.

    ``rate``/``count``: the signal's raw values, each of which must be exactly 0 or 1.
    ``fpr_at``/``tpr_at``: over the label-0 (fpr) / label-1 (tpr) samples, 1 = flagged at the
    cut, i.e. ``value >= cut`` for ``higher_means: positive`` and ``value <= cut`` for
    ``negative`` (the oriented score ``+/-value`` is ``>=`` the oriented cut)."""
    assert rule.signal is not None
    where = f"in groups ({', '.join(rule.groups)})" if rule.groups else "in the protocol's groups"
    if rule.statistic in ("rate", "count"):
        got = _all_values(protocol, src, rule.signal, rule.groups)
        if isinstance(got, list):
            return got
        values, keys = got
        bad = np.flatnonzero((values != 0.0) & (values != 1.0))
        if bad.size:
            g, item = keys[int(bad[0])]
            return [
                f"statistic {rule.statistic} counts a 0/1 signal, but {rule.signal!r} has "
                f"{_count(int(bad.size), 'value')} that are neither 0 nor 1 {where} (first: "
                f"{values[bad[0]]:g} for item {item!r} of group {g!r}; {src.name})"
            ]
        return values.astype(np.int64), "samples"
    assert rule.cut is not None
    got_l = _labelled_values(protocol, src, rule.signal, rule.groups)
    if isinstance(got_l, list):
        return got_l
    values, labs = got_l
    want = 0 if rule.statistic == "fpr_at" else 1
    chosen = values[labs == want]
    if chosen.size == 0:
        return [f"no label-{want} samples {where} for {rule.statistic} ({src.name})"]
    sign = _orient(protocol, rule.signal)
    flagged = (sign * chosen >= sign * rule.cut).astype(np.int64)
    return flagged, f"label-{want} samples"


def clopper_pearson(
    k: np.ndarray | int, n: np.ndarray | int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial proportion, elementwise:
    ``a = (1 - level) / 2``, low = the ``a`` quantile of Beta(k, n - k + 1) (0 when k = 0),
    high = the ``1 - a`` quantile of Beta(k + 1, n - k) (1 when k = n). Equals
    ``scipy.stats.binomtest(k, n).proportion_ci(level, method="exact")`` (tests/test_rule_menu.py
    checks 1e-12), computed with the regularised incomplete beta inverse instead of a root
    search, and batched."""
    kk = np.asarray(k, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    a = _alpha(level)
    lo = scipy.special.betaincinv(np.where(kk > 0, kk, 1.0), nn - kk + 1.0, a)
    hi = scipy.special.betaincinv(kk + 1.0, np.where(kk < nn, nn - kk, 1.0), 1.0 - a)
    return np.where(kk > 0, lo, 0.0), np.where(kk < nn, hi, 1.0)


def _binary_stat(
    statistic: str, k: np.ndarray, n: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point and Clopper-Pearson CI of a 0/1 statistic for T studies: a proportion ``k / n``
    (rate, fpr_at, tpr_at), or for ``count`` the count ``k`` with the proportion's interval
    scaled by ``n`` (so ``count >= c`` of n decides as ``rate >= c / n``)."""
    lo, hi = clopper_pearson(k, n, level)
    if statistic == "count":
        nn = np.asarray(n, dtype=np.float64)
        return np.asarray(k, dtype=np.float64), lo * nn, hi * nn
    return np.asarray(k, dtype=np.float64) / n, lo, hi


# --------------------------------------------------------------------------------------------
# Batched statistical cores (leading axis T = independent studies; a verdict is T = 1)
# --------------------------------------------------------------------------------------------


def _alpha(level: float) -> float:
    return (1.0 - level) / 2.0


def _percentiles(dist: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along the last axis, exactly ``ledger.stats.percentile_ci``'s rule."""
    a = _alpha(level)
    lo, hi = np.percentile(dist, [100.0 * a, 100.0 * (1.0 - a)], axis=-1, method="linear")
    return lo, hi


# Rows (signals x studies) per call of the stats kernels: the pairwise kernel is fastest with a
# narrow comparison matrix (measured on 2 cores: 800 rows in one call 1.8 s, in blocks of 40 rows
# 0.04 s). Only the simulation has more rows than this; a verdict has 2-10.
_ROW_BLOCK = 40


def _bootstrap_aurocs(
    pos: np.ndarray, neg: np.ndarray, resamples: int, rng: np.random.Generator, engine: int = 1
) -> np.ndarray:
    """(K, B) stratified paired bootstrap AUROCs of every row of ``pos`` (K, n_pos) / ``neg``
    (K, n_neg): ONE resample set, ``stats.stratified_resample_indices(n_pos, n_neg, B, rng)``,
    shared by all rows (``stats.stratified_paired_bootstrap``, which consumes ``rng`` exactly
    so). More than ``_ROW_BLOCK`` rows are processed in blocks, each from a copy of ``rng``'s
    state (so every block sees the same resamples); ``rng`` is then left where one call leaves
    it. When the comparison matrices of all rows fit in memory,
    ``stats.stratified_paired_bootstrap_rows`` gives exactly those numbers, drawing and counting
    the resamples once instead of once per block. ``engine``: the engine version
    (``stats`` module docstring)."""
    k, n_pos = pos.shape
    labels = np.r_[np.ones(n_pos, dtype=np.int8), np.zeros(neg.shape[1], dtype=np.int8)]
    both = np.concatenate([pos, neg], axis=1)
    if k <= _ROW_BLOCK:
        boots = stats.stratified_paired_bootstrap(
            dict(enumerate(both)), labels, resamples, rng, engine
        )
        return np.stack(list(boots.values()))
    cached = stats.stratified_paired_bootstrap_rows(both, n_pos, resamples, rng, _ROW_BLOCK, engine)
    if cached is not None:
        return cached
    out = np.empty((k, resamples))
    state = rng.bit_generator.state
    for start in range(0, k, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, k)
        rng.bit_generator.state = state
        boots = stats.stratified_paired_bootstrap(
            dict(enumerate(both[start:stop])), labels, resamples, rng, engine
        )
        out[start:stop] = np.stack(list(boots.values()))
    return out


# Above this many comparisons per call the point AUROC uses midranks instead of the
# explicit pair comparison (memory).
_PAIRS_DIRECT = 1 << 20


def _point_aurocs(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Exact AUROC (half credit for ties) of each row: ``pos`` (K, n_pos), ``neg`` (K, n_neg).

    ``2 U = sum_ij (2 [x_i > y_j] + [x_i = y_j])`` counted exactly in int64 and divided once by
    ``2 n_pos n_neg`` (for large inputs, the midrank formula of ``ledger.stats.auroc``, which
    gives the same float: both numerators are exact and a division by a power-of-two multiple
    is exact)."""
    k, n_pos = pos.shape
    n_neg = neg.shape[1]
    if k * n_pos * n_neg <= _PAIRS_DIRECT:
        gt = (pos[:, :, None] > neg[:, None, :]).sum(axis=(1, 2), dtype=np.int64)
        eq = (pos[:, :, None] == neg[:, None, :]).sum(axis=(1, 2), dtype=np.int64)
        return (2 * gt + eq) / (2.0 * n_pos * n_neg)
    from scipy.stats import rankdata  # scipy.stats costs 0.6 s to import: only when needed

    ranks = rankdata(np.concatenate([pos, neg], axis=1), method="average", axis=1)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _bootstrapped_rows(t: int, s: int, n_cand: int, best: np.ndarray | None) -> np.ndarray:
    """Rows of the (T S)-row score matrices a contest resamples, study by study: every signal,
    or with a fixed best baseline (``best`` (T,), an index into the baselines) only the
    candidates and that baseline. Leaving rows out changes no number: the rows share one
    resample set drawn the same way whatever the rows are, and each row's resampled AUROC is
    exact integer arithmetic of its own scores (``stats._PairwiseComparisons``)."""
    studies = np.arange(t)[:, None] * s
    if best is None:
        return (studies + np.arange(s)).ravel()
    return np.concatenate(
        [studies + np.arange(n_cand), studies + n_cand + best[:, None]], 1
    ).ravel()


@dataclass
class ContestStats:
    """Per study t and candidate c: AUROCs, the best baseline, the delta and its CI."""

    auroc: np.ndarray  # (T, S) every signal, candidates first
    best: np.ndarray  # (T,) index (into the baselines) of the best full-sample baseline
    delta: np.ndarray  # (T, C)
    lo: np.ndarray  # (T, C)
    hi: np.ndarray  # (T, C)
    best_used: np.ndarray | None = None  # (T, C) per_resample + delong: the binding baseline


def contest_stats(
    pos: np.ndarray,
    neg: np.ndarray,
    n_cand: int,
    ci: CISpec,
    best_baseline: str,
    rng: np.random.Generator | None,
    resamples: int,
    engine: int = 1,
) -> ContestStats:
    """Candidate-vs-best-baseline deltas and CIs of one contest, for T studies at once.

    ``pos`` (T, S, n_pos) and ``neg`` (T, S, n_neg) hold oriented scores, the first ``n_cand``
    signals being the candidates and the rest the baselines. See the module docstring for the
    formulas. With ``paired_bootstrap`` the T studies share one resample set (drawn from
    ``rng`` as ``ledger.stats.stratified_resample_indices`` does), so a study's CI is exactly the
    one it would get alone.
    """
    t, s, n_pos = pos.shape
    n_neg = neg.shape[2]
    pflat, nflat = pos.reshape(t * s, n_pos), neg.reshape(t * s, n_neg)
    covs: list[np.ndarray] = []
    if ci.method == "delong":
        # DeLong's AUCs are _point_aurocs' floats (the same exact Mann-Whitney numerator divided
        # once), so each study's signals are sorted once, not twice; fewer than 2 items in a
        # class raise ValueError here, as delong_structural says
        labels = np.r_[np.ones(n_pos, dtype=np.int8), np.zeros(n_neg, dtype=np.int8)]
        auc = np.empty((t, s))
        for k in range(t):
            auc[k], cov = stats.delong_structural(np.concatenate([pos[k], neg[k]], axis=1), labels)
            covs.append(cov)
    else:
        auc = _point_aurocs(pflat, nflat).reshape(t, s)
    cand, base = auc[:, :n_cand], auc[:, n_cand:]
    best = np.argmax(base, axis=1)  # first on ties = the pre-registered order
    best_auc = base[np.arange(t), best]
    delta = cand - best_auc[:, None]
    if ci.method == "paired_bootstrap":
        assert rng is not None
        rows = _bootstrapped_rows(t, s, n_cand, best if best_baseline == "fixed" else None)
        boots = _bootstrap_aurocs(pflat[rows], nflat[rows], resamples, rng, engine)
        boots = boots.reshape(t, -1, resamples)
        cb, bb = boots[:, :n_cand], boots[:, n_cand:]
        ref = bb if best_baseline == "fixed" else bb.max(axis=1, keepdims=True)
        lo, hi = _percentiles(cb - ref, ci.level)
        return ContestStats(auc, best, delta, lo, hi)
    # DeLong
    z = stats.normal_ppf(1.0 - _alpha(ci.level))
    lo = np.empty((t, n_cand))
    hi = np.empty((t, n_cand))
    used = np.empty((t, n_cand), dtype=int)
    n_base = s - n_cand
    for k in range(t):
        cov = covs[k]
        for c in range(n_cand):
            bases = [best[k]] if best_baseline == "fixed" else list(range(n_base))
            los, his = [], []
            for b in bases:
                j = n_cand + b
                var = cov[c, c] + cov[j, j] - 2.0 * cov[c, j]
                sd = float(np.sqrt(var)) if var > 0 else 0.0
                d = auc[k, c] - auc[k, j]
                los.append(d - z * sd)
                his.append(d + z * sd)
            lo[k, c], hi[k, c] = min(los), min(his)
            used[k, c] = bases[int(np.argmin(los))]
    return ContestStats(auc, best, delta, lo, hi, used)


def _auroc_stat(
    pos: np.ndarray,
    neg: np.ndarray,
    ci: CISpec,
    rng: np.random.Generator | None,
    resamples: int,
    engine: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled AUROC with CI for T studies: ``pos`` (T, n_pos), ``neg`` (T, n_neg)."""
    point = _point_aurocs(pos, neg)
    if ci.method == "paired_bootstrap":
        assert rng is not None
        lo, hi = _percentiles(_bootstrap_aurocs(pos, neg, resamples, rng, engine), ci.level)
        return point, lo, hi
    labels = np.r_[np.ones(pos.shape[1], dtype=np.int8), np.zeros(neg.shape[1], dtype=np.int8)]
    lo, hi = np.empty(len(point)), np.empty(len(point))
    for k in range(len(point)):
        lo[k], hi[k] = stats.delong_ci(np.concatenate([pos[k], neg[k]]), labels, ci.level)
    return point, lo, hi


def _bootstrap_means(
    values: np.ndarray, resamples: int, rng: np.random.Generator, engine: int = 1
) -> np.ndarray:
    """(T, B) bootstrap means of each row of ``values`` (T, n): one index draw
    ``rng.integers(0, n, (B, n), dtype=stats.index_dtype(n, engine))`` (in row blocks of
    ``max(1, 2**22 // n)``) shared by the rows."""
    t, n = values.shape
    out = np.empty((t, resamples))
    step = max(1, (1 << 22) // n)
    dtype = stats.index_dtype(n, engine)
    for start in range(0, resamples, step):
        stop = min(start + step, resamples)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=dtype)
        out[:, start:stop] = values[:, idx].mean(axis=-1)
    return out


def _mean_stat(
    values: np.ndarray,
    ci: CISpec,
    rng: np.random.Generator | None,
    resamples: int,
    engine: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean with CI for T studies: ``values`` (T, n). Bootstrap percentile, or (``delong``) the
    normal interval ``mean -/+ z s / sqrt(n)`` (s with ddof 1)."""
    point = values.mean(axis=1)
    if ci.method == "paired_bootstrap":
        assert rng is not None
        lo, hi = _percentiles(_bootstrap_means(values, resamples, rng, engine), ci.level)
        return point, lo, hi
    n = values.shape[1]
    z = stats.normal_ppf(1.0 - _alpha(ci.level))
    se = values.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(point)
    return point, point - z * se, point + z * se


# --------------------------------------------------------------------------------------------
# Decisions (vectorised over studies)
# --------------------------------------------------------------------------------------------


def describe_condition(cond: VerdictThreshold) -> str:
    parts = []
    if cond.min_wins is not None:
        parts.append(f"min_wins {cond.min_wins}")
    if cond.max_wins is not None:
        parts.append(f"max_wins {cond.max_wins}")
    if cond.require_any_of:
        parts.append("one of [" + ", ".join(cond.require_any_of) + "] won")
    return " and ".join(parts) or "(no condition)"


def decide_regime(
    won: np.ndarray, contests: Sequence[str], verdicts: Mapping[str, VerdictThreshold]
) -> np.ndarray:
    """Verdict index (into :data:`VERDICTS`) per study; ``won`` is (T, G) over ``contests``.

    The first of PROVEN, PARTIAL, DISPROVEN whose stated conditions all hold; else
    INCONCLUSIVE (index 3)."""
    won = np.asarray(won, dtype=bool)
    wins = won.sum(axis=1)
    out = np.full(won.shape[0], 3, dtype=int)
    undecided = np.ones(won.shape[0], dtype=bool)
    for i, name in enumerate(TRIED_ORDER):
        cond = verdicts.get(name)
        if cond is None:
            continue
        ok = np.ones(won.shape[0], dtype=bool)
        if cond.min_wins is not None:
            ok &= wins >= cond.min_wins
        if cond.max_wins is not None:
            ok &= wins <= cond.max_wins
        if cond.require_any_of:
            cols = [contests.index(g) for g in cond.require_any_of if g in contests]
            ok &= won[:, cols].any(axis=1) if cols else False
        hit = ok & undecided
        out[hit] = i
        undecided &= ~hit
    return out


def decide_threshold(
    point: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None, op: str, bound: float
) -> np.ndarray:
    """Verdict index per study: the CI's far side past the bound -> PROVEN (0); only the point
    -> PARTIAL (1); else DISPROVEN (2). ``lo``/``hi`` None = no CI (at most PARTIAL)."""
    cmp = {
        ">=": np.greater_equal,
        ">": np.greater,
        "<=": np.less_equal,
        "<": np.less,
    }[op]
    point = np.asarray(point, dtype=float)
    far = None if (lo is None or hi is None) else (lo if op in (">=", ">") else hi)
    out = np.where(cmp(point, bound), 1, 2)
    if far is not None:
        out = np.where(cmp(np.asarray(far, dtype=float), bound), 0, out)
    return out


def decide_observed(point: np.ndarray, op: str, bound: float) -> np.ndarray:
    """Verdict index per study of a rule decided on its observed value (``decide: observed``):
    the point past the bound -> PROVEN (0), else DISPROVEN (2); no CI, so no PARTIAL."""
    cmp = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}[op]
    return np.where(cmp(np.asarray(point, dtype=float), bound), 0, 2)


def decide_binary(
    rule: ThresholdRule, point: np.ndarray, lo: np.ndarray, hi: np.ndarray, engine: int = 2
) -> np.ndarray:
    """The verdict index of a 0/1-statistic rule: :func:`decide_observed` when
    ``rule.decision(engine)`` is ``observed``, else :func:`decide_threshold` on the
    Clopper-Pearson interval. The one place the two decisions are chosen (engine and
    simulation)."""
    if rule.decision(engine) == "observed":
        return decide_observed(point, rule.op, rule.bound)
    return decide_threshold(point, lo, hi, rule.op, rule.bound)


def decide_non_inferiority(point: np.ndarray, lo: np.ndarray, margin: float) -> np.ndarray:
    """CI low of the oriented difference > -margin -> PROVEN (0); point > -margin -> PARTIAL (1);
    else DISPROVEN (2)."""
    return np.where(lo > -margin, 0, np.where(np.asarray(point) > -margin, 1, 2))


def combine(kind: str, verdicts: Sequence[Verdict]) -> Verdict:
    """``all_of``: PROVEN iff all PROVEN; DISPROVEN if any DISPROVEN; ``any_of``: PROVEN if any
    PROVEN; DISPROVEN iff all DISPROVEN. Otherwise INCONCLUSIVE when one is INCONCLUSIVE, else
    PARTIAL."""
    vs = list(verdicts)
    if kind == "all_of":
        if all(v == "PROVEN" for v in vs):
            return "PROVEN"
        if any(v == "DISPROVEN" for v in vs):
            return "DISPROVEN"
    else:
        if any(v == "PROVEN" for v in vs):
            return "PROVEN"
        if all(v == "DISPROVEN" for v in vs):
            return "DISPROVEN"
    return "INCONCLUSIVE" if any(v == "INCONCLUSIVE" for v in vs) else "PARTIAL"


# --------------------------------------------------------------------------------------------
# Rule evaluation on a Dataset
# --------------------------------------------------------------------------------------------


def _f(x: Any) -> float | None:
    return None if x is None else float(x)


def _resamples(ci: CISpec, cap: int | None) -> int:
    return ci.resamples if cap is None else min(ci.resamples, cap)


def _ci_info(ci: CISpec, resamples: int) -> dict[str, Any]:
    info: dict[str, Any] = {"method": ci.method, "level": ci.level, "seed": ci.seed}
    if ci.method == "paired_bootstrap":
        info["resamples"] = resamples
    return info


def _source(dataset: Dataset, job: str | None) -> tuple[SourceData | None, list[str]]:
    got = dataset.get(job)
    if isinstance(got, str):
        return None, [got]
    return got, list(got.problems)


def _inconclusive(base: dict[str, Any], missing: list[str]) -> dict[str, Any]:
    base["verdict"] = "INCONCLUSIVE"
    base["missing"] = missing
    base["why"] = "; ".join(missing)
    return base


def _eval_regime(
    protocol: Protocol, rule: RegimeWinsRule, dataset: Dataset, cap: int | None, engine: int = 1
) -> dict[str, Any]:
    labels = protocol.labels
    assert labels is not None
    baselines = protocol.baselines_for(rule)
    signals = list(rule.candidates) + baselines
    if labels.source == "regime":
        contests = [g for g in protocol.groups if g != labels.reference]
    else:
        contests = list(protocol.groups)
    b = _resamples(rule.ci, cap)
    out: dict[str, Any] = {
        "metric": rule.metric,
        "margin": rule.margin,
        "best_baseline": rule.best_baseline,
        "ci": _ci_info(rule.ci, b),
        "candidates": list(rule.candidates),
        "baselines": baselines,
        "contests": contests,
        "wins": None,
        "won_groups": [],
        "groups": [],
        "pooled": [],
        "missing": [],
    }
    src, missing = _source(dataset, rule.job)
    if src is None:
        return _inconclusive(out, missing)
    out["runs"] = list(src.run_ids)
    recorded = src.signals()
    for s in signals:
        if s not in recorded:
            missing.append(f"signal {s!r} was never recorded ({src.name})")
    rngs = (
        stats.derive_group_rngs(rule.ci.seed, list(protocol.groups))
        if rule.ci.method == "paired_bootstrap"
        else {}
    )
    won: list[bool] = []
    n_cand = len(rule.candidates)
    for g in contests:
        got = _contest(protocol, src, g, signals, keys=False)
        if not isinstance(got, list) and rule.ci.method == "delong":
            if min(got.pos.shape[1], got.neg.shape[1]) < 2:
                got = [f"group {g!r} has fewer than 2 items in a class (DeLong needs 2)"]
        if isinstance(got, list):
            missing += [m for m in got if m not in missing]
            for c in rule.candidates:
                out["groups"].append(_missing_row(g, c, got))
            won.append(False)
            continue
        cs = contest_stats(
            got.pos[None],
            got.neg[None],
            n_cand,
            rule.ci,
            rule.best_baseline,
            rngs.get(g),
            b,
            engine,
        )
        base_aucs = {bn: float(cs.auroc[0, n_cand + j]) for j, bn in enumerate(baselines)}
        best_name = baselines[int(cs.best[0])]
        any_win = False
        for ci_, c in enumerate(rule.candidates):
            delta, lo, hi = float(cs.delta[0, ci_]), float(cs.lo[0, ci_]), float(cs.hi[0, ci_])
            win = bool(delta >= rule.margin - MARGIN_TOL and lo > 0.0)
            any_win |= win
            row = {
                "group": g,
                "candidate": c,
                "auroc": float(cs.auroc[0, ci_]),
                "baseline": best_name,
                "baseline_auroc": base_aucs[best_name],
                "delta": delta,
                "ci_low": lo,
                "ci_high": hi,
                "win": win,
                "n_pos": int(got.pos.shape[1]),
                "n_neg": int(got.neg.shape[1]),
                "baseline_aurocs": base_aucs,
            }
            if cs.best_used is not None and rule.best_baseline == "per_resample":
                row["ci_binding_baseline"] = baselines[int(cs.best_used[0, ci_])]
            out["groups"].append(row)
        won.append(any_win)
    won_groups = [g for g, w in zip(contests, won, strict=True) if w]
    out["wins"] = len(won_groups)
    out["won_groups"] = won_groups
    out["pooled"] = _pooled_report(protocol, src, signals, baselines)
    if missing:
        return _inconclusive(out, missing)
    idx = int(decide_regime(np.array([won]), contests, rule.verdicts)[0])
    verdict = VERDICTS[idx]
    out["verdict"] = verdict
    wins_txt = f"{len(won_groups)} of {len(contests)} groups won" + (
        f" ({', '.join(won_groups)})" if won_groups else ""
    )
    if verdict == "INCONCLUSIVE":
        conds = "; ".join(
            f"{v}: {describe_condition(rule.verdicts[v])}"
            for v in TRIED_ORDER
            if v in rule.verdicts
        )
        out["why"] = f"{wins_txt}, which matches no verdict condition ({conds})"
    else:
        out["why"] = f"{wins_txt}; {verdict} needs {describe_condition(rule.verdicts[verdict])}"
    return out


def _missing_row(group: str, candidate: str, why: list[str]) -> dict[str, Any]:
    return {
        "group": group,
        "candidate": candidate,
        "auroc": None,
        "baseline": None,
        "baseline_auroc": None,
        "delta": None,
        "ci_low": None,
        "ci_high": None,
        "win": False,
        "missing": "; ".join(why),
    }


def _pooled_report(
    protocol: Protocol, src: SourceData, signals: Sequence[str], baselines: Sequence[str]
) -> list[dict[str, Any]]:
    """Cross-group pooled AUROC per signal with its 95% DeLong CI (informational):
    ``AUC -/+ z sqrt(S_rr)`` clipped to [0, 1], as ``ledger.stats.delong_ci``."""
    got = _pooled(protocol, src, signals, keys=False)
    if isinstance(got, list):
        return [{"signal": s, "auroc": None, "missing": "; ".join(got)} for s in signals]
    n_pos, n_neg = got.pos.shape[1], got.neg.shape[1]
    sds: np.ndarray | None = None
    if min(n_pos, n_neg) >= 2:
        # DeLong's AUCs are _point_aurocs' floats (both divide the same exact Mann-Whitney
        # numerator once), so the pooled sample is sorted once per signal, not twice
        labels = np.r_[np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)]
        both = np.concatenate([got.pos, got.neg], axis=1)
        del got
        aucs, cov = stats.delong_structural(both, labels)
        del both
        sds = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    else:
        aucs = _point_aurocs(got.pos, got.neg)
    z = stats.normal_ppf(0.975)
    rows = []
    for i, s in enumerate(signals):
        row: dict[str, Any] = {
            "signal": s,
            "role": "baseline" if s in baselines else "candidate",
            "auroc": float(aucs[i]),
            "n_pos": int(n_pos),
            "n_neg": int(n_neg),
        }
        if sds is not None:
            lo, hi = aucs[i] - z * sds[i], aucs[i] + z * sds[i]
            row["delong_ci95"] = [float(min(max(lo, 0.0), 1.0)), float(min(max(hi, 0.0), 1.0))]
        rows.append(row)
    return rows


def _metric_value(protocol: Protocol, src: SourceData, name: str) -> MetricValue | str:
    if name in src.metrics:
        return src.metrics[name]
    derived = protocol.metrics.get(name)
    if derived is None:
        recorded = ", ".join(sorted(src.metrics)) or "none"
        return f"metric {name!r} was not recorded ({src.name}; recorded: {recorded})"
    try:
        expr = parse_expr(derived.expr)
    except ExprError as exc:  # refused at validation; defensive
        return f"derived metric {name!r}: {exc}"
    absent = sorted(expr.names - set(src.metrics))
    if absent:
        return (
            f"derived metric {name!r} = {derived.expr} needs {', '.join(absent)}, not recorded "
            f"({src.name})"
        )
    try:
        value = expr.evaluate({k: src.metrics[k].value for k in expr.names})
    except ExprError as exc:
        return f"derived metric {name!r}: {exc}"
    return MetricValue(name, value)


def _eval_threshold(
    protocol: Protocol, rule: ThresholdRule, dataset: Dataset, cap: int | None, engine: int = 1
) -> dict[str, Any]:
    b = _resamples(rule.ci, cap)
    out: dict[str, Any] = {
        "statistic": rule.statistic,
        "signal": rule.signal,
        "metric": rule.metric,
        "selected_groups": list(rule.groups) if rule.groups else None,
        "op": rule.op,
        "bound": rule.bound,
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "wins": None,
        "groups": [],
        "missing": [],
    }
    src, missing = _source(dataset, rule.job)
    if src is None:
        return _inconclusive(out, missing)
    out["runs"] = list(src.run_ids)
    lo = hi = None
    if rule.statistic == "metric":
        assert rule.metric is not None
        got = _metric_value(protocol, src, rule.metric)
        if isinstance(got, str):
            return _inconclusive(out, missing + [got])
        point, lo, hi = got.value, got.ci_low, got.ci_high
        if not all(x is None or np.isfinite(x) for x in (point, lo, hi)):
            return _inconclusive(
                out, missing + [f"metric {rule.metric!r} has a non-finite value or CI ({src.name})"]
            )
        out["ci"] = {"method": "recorded" if lo is not None and hi is not None else "none"}
    elif rule.statistic in BINARY_STATISTICS:
        assert rule.signal is not None
        out["ci"] = {"method": "clopper_pearson", "level": rule.ci.level}
        if rule.cut is not None:
            out["cut"] = rule.cut
        if rule.signal not in src.signals():
            missing.append(f"signal {rule.signal!r} was never recorded ({src.name})")
            return _inconclusive(out, missing)
        got_b = _binary_outcomes(protocol, src, rule)
        if isinstance(got_b, list):
            return _inconclusive(out, missing + got_b)
        outcomes, counted = got_b
        k, n = int(outcomes.sum()), int(outcomes.size)
        p, lo_a, hi_a = _binary_stat(rule.statistic, np.array([k]), np.array([n]), rule.ci.level)
        out["k"], out["n"], out["counted"] = k, n, counted
        out["decide"] = rule.decision(engine)
        point, lo, hi = float(p[0]), float(lo_a[0]), float(hi_a[0])
    else:
        assert rule.signal is not None
        out["ci"] = _ci_info(rule.ci, b)
        if rule.signal not in src.signals():
            missing.append(f"signal {rule.signal!r} was never recorded ({src.name})")
            return _inconclusive(out, missing)
        rng = (
            stats.derive_group_rngs(rule.ci.seed, [POOLED_STREAM])[POOLED_STREAM]
            if rule.ci.method == "paired_bootstrap"
            else None
        )
        if rule.statistic == "auroc":
            got_c = _pooled(protocol, src, [rule.signal], rule.groups)
            if isinstance(got_c, list):
                return _inconclusive(out, missing + got_c)
            if rule.ci.method == "delong" and min(got_c.pos.shape[1], got_c.neg.shape[1]) < 2:
                return _inconclusive(out, missing + ["fewer than 2 items in a class for DeLong"])
            p, lo_a, hi_a = _auroc_stat(got_c.pos, got_c.neg, rule.ci, rng, b, engine)
            out["n_pos"], out["n_neg"] = int(got_c.pos.shape[1]), int(got_c.neg.shape[1])
        else:
            got_v = _all_values(protocol, src, rule.signal, rule.groups)
            if isinstance(got_v, list):
                return _inconclusive(out, missing + got_v)
            p, lo_a, hi_a = _mean_stat(got_v[0][None, :], rule.ci, rng, b, engine)
            out["n"] = int(got_v[0].shape[0])
        point, lo, hi = float(p[0]), float(lo_a[0]), float(hi_a[0])
    out["value"], out["ci_low"], out["ci_high"] = float(point), _f(lo), _f(hi)
    if missing:
        return _inconclusive(out, missing)
    has_ci = lo is not None and hi is not None
    observed = out.get("decide") == "observed"
    if "decide" in out:
        idx = int(decide_binary(rule, np.array([point]), np.array([lo]), np.array([hi]), engine)[0])
    else:
        idx = int(
            decide_threshold(
                np.array([point]),
                np.array([lo]) if has_ci else None,
                np.array([hi]) if has_ci else None,
                rule.op,
                rule.bound,
            )[0]
        )
    verdict = VERDICTS[idx]
    out["verdict"] = verdict
    what = rule.metric if rule.statistic == "metric" else f"{rule.statistic}({rule.signal})"
    if rule.cut is not None:
        what = f"{rule.statistic}({rule.signal}, cut {rule.cut:g})"
    if rule.groups:
        what += f" over groups ({', '.join(rule.groups)})"
    if "k" in out:
        what += f" = {out['k']} of {out['n']} {out['counted']}"
    ci_txt = f"CI [{lo:.4g}, {hi:.4g}]" if has_ci else "no CI recorded"
    if out["ci"].get("method") == "clopper_pearson":
        ci_txt = f"Clopper-Pearson {rule.ci.level:g} CI [{lo:.4g}, {hi:.4g}]"
    side = "low" if rule.op in (">=", ">") else "high"
    if observed:
        ci_txt += " (shown, not used: decide: observed)"
        reason = {
            "PROVEN": f"the observed value is {rule.op} {rule.bound:g}",
            "DISPROVEN": f"the observed value is not {rule.op} {rule.bound:g}",
        }[verdict]
        out["why"] = f"{what} = {point:.4g}, {ci_txt}: {reason}"
        return out
    reason = {
        "PROVEN": f"the CI's {side} end is {rule.op} {rule.bound:g}",
        "PARTIAL": f"the point is {rule.op} {rule.bound:g} but "
        + (f"the CI's {side} end is not" if has_ci else "there is no CI to prove it"),
        "DISPROVEN": f"the point is not {rule.op} {rule.bound:g}",
    }[verdict]
    out["why"] = f"{what} = {point:.4g}, {ci_txt}: {reason}"
    return out


def _eval_non_inferiority(
    protocol: Protocol, rule: NonInferiorityRule, dataset: Dataset, cap: int | None, engine: int = 1
) -> dict[str, Any]:
    b = _resamples(rule.ci, cap)
    out: dict[str, Any] = {
        "statistic": rule.statistic,
        "signal": rule.signal,
        "candidate_job": rule.candidate_job,
        "reference_job": rule.reference_job,
        "margin": rule.margin,
        "higher_is_better": rule.higher_is_better,
        "selected_groups": list(rule.groups) if rule.groups else None,
        "ci": _ci_info(rule.ci, b),
        "candidate_value": None,
        "reference_value": None,
        "difference": None,
        "ci_low": None,
        "ci_high": None,
        "paired": None,
        "wins": None,
        "groups": [],
        "missing": [],
    }
    cand, m1 = _source(dataset, rule.candidate_job)
    ref, m2 = _source(dataset, rule.reference_job)
    missing = m1 + [m for m in m2 if m not in m1]
    if cand is None or ref is None:
        return _inconclusive(out, missing)
    out["runs"] = sorted(set(cand.run_ids) | set(ref.run_ids))
    shaped: list[Any] = []
    for src in (cand, ref):
        if rule.signal not in src.signals():
            missing.append(f"signal {rule.signal!r} was never recorded ({src.name})")
            shaped.append(None)
            continue
        got: Any = (
            _pooled(protocol, src, [rule.signal], rule.groups)
            if rule.statistic == "auroc"
            else _all_values(protocol, src, rule.signal, rule.groups)
        )
        if isinstance(got, list):
            missing += got
            shaped.append(None)
        else:
            shaped.append(got)
    if missing:
        return _inconclusive(out, missing)
    sign = 1.0 if rule.higher_is_better else -1.0
    rngs = stats.derive_group_rngs(rule.ci.seed, list(NI_STREAMS))
    if rule.statistic == "auroc":
        c, r = shaped
        paired = c.keys == r.keys
        if (
            rule.ci.method == "delong"
            and min(c.pos.shape[1], c.neg.shape[1], r.pos.shape[1], r.neg.shape[1]) < 2
        ):
            return _inconclusive(out, ["fewer than 2 items in a class for DeLong"])
        cv, rv, lo, hi = _ni_auroc(
            c.pos, c.neg, r.pos, r.neg, paired, rule.ci, rngs, b, sign, engine
        )
    else:
        (cvals, ckeys), (rvals, rkeys) = shaped
        paired = ckeys == rkeys
        cv, rv, lo, hi = _ni_mean(cvals[None], rvals[None], paired, rule.ci, rngs, b, sign, engine)
    diff = sign * (float(cv[0]) - float(rv[0]))
    out.update(
        candidate_value=float(cv[0]),
        reference_value=float(rv[0]),
        difference=diff,
        ci_low=float(lo[0]),
        ci_high=float(hi[0]),
        paired=bool(paired),
    )
    idx = int(decide_non_inferiority(np.array([diff]), np.array([float(lo[0])]), rule.margin)[0])
    verdict = VERDICTS[idx]
    out["verdict"] = verdict
    orient = "" if rule.higher_is_better else " (lower is better, so reference - candidate)"
    reason = {
        "PROVEN": f"the CI's low end is above -{rule.margin:g}",
        "PARTIAL": f"the point is above -{rule.margin:g} but the CI's low end is not",
        "DISPROVEN": f"the point is not above -{rule.margin:g}",
    }[verdict]
    over = f" over groups ({', '.join(rule.groups)})" if rule.groups else ""
    out["why"] = (
        f"{rule.statistic}({rule.signal}){over}: {rule.candidate_job} {float(cv[0]):.4g} vs "
        f"{rule.reference_job} {float(rv[0]):.4g}, difference{orient} {diff:+.4g} CI "
        f"[{float(lo[0]):+.4g}, {float(hi[0]):+.4g}] ({'paired' if paired else 'independent'}): "
        f"{reason}"
    )
    return out


def _ni_auroc(
    cpos: np.ndarray,
    cneg: np.ndarray,
    rpos: np.ndarray,
    rneg: np.ndarray,
    paired: bool,
    ci: CISpec,
    rngs: Mapping[str, np.random.Generator],
    resamples: int,
    sign: float,
    engine: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched non-inferiority on pooled AUROC: arrays (T, n). Returns candidate AUROC,
    reference AUROC and the CI of ``sign * (candidate - reference)``."""
    gens = list(rngs.values())
    cv, rv = _point_aurocs(cpos, cneg), _point_aurocs(rpos, rneg)
    if ci.method == "paired_bootstrap":
        if paired:
            t = cpos.shape[0]
            both = _bootstrap_aurocs(
                np.concatenate([cpos, rpos]),
                np.concatenate([cneg, rneg]),
                resamples,
                gens[0],
                engine,
            )
            cb, rb = both[:t], both[t:]
        else:
            cb = _bootstrap_aurocs(cpos, cneg, resamples, gens[0], engine)
            rb = _bootstrap_aurocs(rpos, rneg, resamples, gens[1], engine)
        lo, hi = _percentiles(sign * (cb - rb), ci.level)
        return cv, rv, lo, hi
    z = stats.normal_ppf(1.0 - _alpha(ci.level))
    t = cpos.shape[0]
    lo, hi = np.empty(t), np.empty(t)
    for k in range(t):
        cl = np.r_[np.ones(cpos.shape[1], np.int8), np.zeros(cneg.shape[1], np.int8)]
        if paired:
            mat = np.stack([np.r_[cpos[k], cneg[k]], np.r_[rpos[k], rneg[k]]])
            _, cov = stats.delong_structural(mat, cl)
            var = cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]
        else:
            rl = np.r_[np.ones(rpos.shape[1], np.int8), np.zeros(rneg.shape[1], np.int8)]
            var = stats.delong_variance(np.r_[cpos[k], cneg[k]], cl) + stats.delong_variance(
                np.r_[rpos[k], rneg[k]], rl
            )
        sd = float(np.sqrt(var)) if var > 0 else 0.0
        d = sign * (cv[k] - rv[k])
        lo[k], hi[k] = d - z * sd, d + z * sd
    return cv, rv, lo, hi


def _ni_mean(
    cvals: np.ndarray,
    rvals: np.ndarray,
    paired: bool,
    ci: CISpec,
    rngs: Mapping[str, np.random.Generator],
    resamples: int,
    sign: float,
    engine: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Batched non-inferiority on means: (T, n) arrays. Paired = the mean of per-item
    differences; independent = difference of independently bootstrapped means."""
    gens = list(rngs.values())
    cv, rv = cvals.mean(axis=1), rvals.mean(axis=1)
    if paired:
        _, lo, hi = _mean_stat(sign * (cvals - rvals), ci, gens[0], resamples, engine)
        return cv, rv, lo, hi
    if ci.method == "paired_bootstrap":
        cb = _bootstrap_means(cvals, resamples, gens[0], engine)
        rb = _bootstrap_means(rvals, resamples, gens[1], engine)
        lo, hi = _percentiles(sign * (cb - rb), ci.level)
        return cv, rv, lo, hi
    z = stats.normal_ppf(1.0 - _alpha(ci.level))
    se = np.sqrt(
        cvals.var(axis=1, ddof=1) / cvals.shape[1] + rvals.var(axis=1, ddof=1) / rvals.shape[1]
    )
    d = sign * (cv - rv)
    return cv, rv, d - z * se, d + z * se


def evaluate_rule(
    protocol: Protocol,
    rule_name: str,
    dataset: Dataset,
    *,
    resamples_cap: int | None = None,
    level: float | None = None,
    engine: int = 1,
) -> dict[str, Any]:
    """Evaluate one non-combination decision rule; the dict has ``verdict``, ``why``, ``missing``
    and the rule's numbers. ``resamples_cap`` lowers ``ci.resamples`` (sign-check, simulation);
    a verdict never sets it. ``level`` replaces ``ci.level`` (the family-wise correction of
    :func:`evaluate`; the bootstrap seed scheme is unchanged, so only the interval moves).
    ``engine``: the bootstrap engine version (``stats.ENGINE_VERSIONS``; 1 = every verdict
    recorded before versions existed)."""
    engine = stats.check_engine(engine)
    rule = protocol.decision_rules[rule_name]
    if level is not None and not isinstance(rule, CombinationRule):
        rule = rule.model_copy(update={"ci": rule.ci.model_copy(update={"level": level})})
    if isinstance(rule, RegimeWinsRule):
        out = _eval_regime(protocol, rule, dataset, resamples_cap, engine)
    elif isinstance(rule, ThresholdRule):
        out = _eval_threshold(protocol, rule, dataset, resamples_cap, engine)
    elif isinstance(rule, NonInferiorityRule):
        out = _eval_non_inferiority(protocol, rule, dataset, resamples_cap, engine)
    else:
        raise ValueError(f"rule {rule_name!r} is a combination; use evaluate()")
    return {"rule": rule_name, "kind": rule.kind, **out}


def family_alphas(
    method: str, alpha: float, m: int, proven_at: Callable[[int, float], bool]
) -> tuple[list[float], list[bool]]:
    """The family-wise correction: per member i of m, the alpha its CI is finally decided at and
    whether it is PROVEN there. ``proven_at(i, a)`` = member i is PROVEN with CI level ``1 - a``
    (monotone: a larger a gives a narrower interval).

    ``bonferroni``: every member at ``alpha / m``. ``holm`` (step-down): every member not yet
    PROVEN is tried at ``alpha / (m - r)``, r = members PROVEN at earlier steps (r = 0 first);
    when a step proves none, the rest stay decided at that step's alpha. With
    ``p_i = inf{a : proven_at(i, a)}`` this rejects exactly the hypotheses Holm's procedure on the
    p-values rejects (sorted p_(j) <= alpha / (m - j + 1) up to the first failure)."""
    if method == "bonferroni":
        a = alpha / m
        return [a] * m, [bool(proven_at(i, a)) for i in range(m)]
    used = [alpha / m] * m
    proven = [False] * m
    remaining = list(range(m))
    r = 0
    while remaining:
        a = alpha / (m - r)
        newly = [i for i in remaining if proven_at(i, a)]
        for i in remaining:
            used[i] = a
        if not newly:
            break
        for i in newly:
            proven[i] = True
        remaining = [i for i in remaining if i not in newly]
        r += len(newly)
    return used, proven


def _corrected(
    protocol: Protocol,
    correction: Correction,
    dataset: Dataset,
    cap: int | None,
    engine: int = 1,
) -> dict[str, dict[str, Any]]:
    """Results of the correction family's hypotheses (by id), each decided at its corrected CI
    level (:func:`family_alphas`) and carrying a ``correction`` entry."""
    rule_of = {h.id: h.rule for h in protocol.hypotheses}
    family = list(correction.family)
    m = len(family)
    level0 = protocol.decision_rules[rule_of[family[0]]].ci.level  # type: ignore[union-attr]
    alpha = 1.0 - level0
    cache: dict[tuple[int, float], dict[str, Any]] = {}

    def run(i: int, a: float) -> dict[str, Any]:
        key = (i, a)
        if key not in cache:
            cache[key] = evaluate_rule(
                protocol,
                rule_of[family[i]],
                dataset,
                resamples_cap=cap,
                level=1.0 - a,
                engine=engine,
            )
        return cache[key]

    used, _ = family_alphas(
        correction.method, alpha, m, lambda i, a: run(i, a)["verdict"] == "PROVEN"
    )
    out = {}
    for i, hid in enumerate(family):
        res = dict(run(i, used[i]))
        info = {
            "method": correction.method,
            "family": family,
            "m": m,
            "declared_level": level0,
            "level": 1.0 - used[i],
        }
        res["correction"] = info
        res["why"] = (
            f"{res['why']} ({correction.method} correction over {', '.join(family)}: CI level "
            f"{info['level']:.6g} instead of {level0:g})"
        )
        out[hid] = res
    return out


def evaluate(
    protocol: Protocol,
    dataset: Dataset,
    *,
    resamples_cap: int | None = None,
    engine: int = 1,
) -> dict[str, Any]:
    """Every hypothesis of ``protocol`` on ``dataset``.

    Returns ``{"verdict": <the primary hypothesis's verdict>, "primary": id, "hypotheses":
    [{"id", "statement", "rule", "kind", "verdict", "why", "missing", "wins", "groups", ...}]}``
    in the protocol's hypothesis order. Each rule is evaluated once even if several hypotheses
    name it. Deterministic: the same inputs give bit-for-bit the same output. The hypotheses of
    ``protocol.correction.family`` are decided at their corrected CI levels and carry
    ``correction: {method, family, m, declared_level, level}`` (also stated in ``why``).
    ``engine`` is the bootstrap engine version (``stats.ENGINE_VERSIONS``), returned as
    ``engine``; the caller decides it (a recorded verdict: the one its protocol was frozen with).
    """
    engine = stats.check_engine(engine)
    by_rule: dict[str, dict[str, Any]] = {}
    by_hyp: dict[str, dict[str, Any]] = {}
    corrected = (
        _corrected(protocol, protocol.correction, dataset, resamples_cap, engine)
        if protocol.correction is not None
        else {}
    )
    hyps = {h.id: h for h in protocol.hypotheses}

    def hyp_result(hid: str) -> dict[str, Any]:
        if hid in by_hyp:
            return by_hyp[hid]
        h = hyps[hid]
        rule = protocol.decision_rules[h.rule]
        if isinstance(rule, CombinationRule):
            subs = [hyp_result(x) for x in rule.of]
            verdict = combine(rule.kind, [s["verdict"] for s in subs])
            parts = ", ".join(f"{s['id']} {s['verdict']}" for s in subs)
            res: dict[str, Any] = {
                "rule": h.rule,
                "kind": rule.kind,
                "of": list(rule.of),
                "verdict": verdict,
                "why": f"{rule.kind}({parts}) -> {verdict}",
                "missing": [m for s in subs for m in s.get("missing", [])],
                "wins": None,
                "groups": [],
            }
        elif hid in corrected:
            res = corrected[hid]
        else:
            if h.rule not in by_rule:
                by_rule[h.rule] = evaluate_rule(
                    protocol, h.rule, dataset, resamples_cap=resamples_cap, engine=engine
                )
            res = dict(by_rule[h.rule])
        full = {"id": hid, "statement": h.statement, **res}
        by_hyp[hid] = full
        return full

    results = [hyp_result(h.id) for h in protocol.hypotheses]
    primary = protocol.primary_hypothesis()
    return {
        "verdict": by_hyp[primary]["verdict"],
        "primary": primary,
        "engine": engine,
        "hypotheses": results,
    }


def headline_rule(protocol: Protocol, job: str) -> str | None:
    """The rule whose point estimate is ``job``'s headline statistic (for ``select: median_of``):
    the first ``threshold`` or ``regime_wins`` rule, in declaration order, with ``job:`` naming
    ``job``; None if there is none (the protocol cross-check refuses median_of then)."""
    for name, rule in protocol.decision_rules.items():
        if isinstance(rule, ThresholdRule | RegimeWinsRule) and rule.job == job:
            return name
    return None


def headline_statistic(protocol: Protocol, job: str, source: SourceData) -> float | None:
    """``job``'s headline statistic on one replicate's data: the point estimate of
    :func:`headline_rule` evaluated on ``source`` alone -- for ``threshold`` its ``value`` (the
    mean, pooled AUROC or metric), for ``regime_wins`` the mean over its group rows of ``delta``
    (candidate AUROC minus the best baseline's). None when the rule cannot be evaluated on it.
    Point estimates do not depend on resampling, so the bootstrap is capped at 100 resamples."""
    name = headline_rule(protocol, job)
    if name is None:
        return None
    result = evaluate_rule(protocol, name, Dataset(sources={job: source}), resamples_cap=100)
    if result["kind"] == "threshold":
        value = result.get("value")
    else:
        deltas = [r["delta"] for r in result.get("groups", []) if r.get("delta") is not None]
        value = float(np.mean(deltas)) if deltas else None
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)
