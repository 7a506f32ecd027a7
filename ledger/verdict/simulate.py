"""Rule simulation: how often does each verdict come out, as a function of the true effect?

``simulate_protocol(protocol, n_sims=200)`` simulates ``n_sims`` studies per point of a small
table of true effects and runs each study through the verdict engine's own batched cores
(:func:`ledger.rules.contest_stats`, :func:`ledger.rules.decide_regime`, ...; a real verdict is
the same code with one study). Returned::

    {"rules": [{"rule", "kind", "verdicts": [...], "gap_label", "null_gap",
                "points": [{"gap", "rates": {verdict: p}}], "null_proven_rate"}],
     "skipped": [{"rule", "reason"}], "settings": {...}, "notes": [...]}

Data model (binormal, per study):
* every signal is N(0, 1) on the negatives and N(mu, 1) on the positives of its oriented score,
  so its true AUROC is ``Phi(mu / sqrt 2)``; the signals of one item are correlated with
  ``correlation`` (equicorrelated Gaussian), as signals read from one model are.
* ``regime_wins``: the baselines have true AUROC ``base_auroc`` and every candidate
  ``base_auroc + gap`` in every contest group; groups of ``n_per_class`` positives and
  negatives (``regime`` labels: one reference group of negatives shared by every contest, as in
  a real verdict). The null is ``gap = 0``.
* ``threshold`` on ``auroc``: the pooled AUROC is ``bound + gap`` (gap measured towards the op's
  side); on ``mean``: unit-variance values with mean ``bound + gap``; on ``rate`` / ``fpr_at`` /
  ``tpr_at``: binomial counts of the N counted samples (the rule's groups; label-0 / label-1
  for fpr / tpr) with true proportion ``bound + gap`` clipped to [0, 1]; on ``count``: the same
  with ``bound / N + gap``; all decided as the engine decides (Clopper-Pearson, or the
  observed value under ``decide: observed``). Only the
  rule's ``groups:`` count towards N. Null: ``gap = 0`` (the statistic exactly at the bound).
  ``metric`` thresholds read a CI recorded by a job and are not simulated.
* ``non_inferiority``: the reference has true AUROC ``base_auroc`` (mean: 0, unit variance), the
  candidate ``reference + gap`` (gap oriented so positive is better), paired items. Null: ``gap =
  -margin``.
* ``all_of`` / ``any_of`` are not simulated (their parts are).

Fidelity: by default every rule runs with its own ``ci.resamples``, ``ci.level`` and seed
scheme (``derive_group_rngs(ci.seed, ...)``), so the rates are those of the rule as frozen. An
explicit ``resamples`` caps the count (``min(ci.resamples, resamples)``) and the notes say so.
The studies of one point are simulated at once (a leading study axis); with
``paired_bootstrap`` they share one stratified resample set per group, so each study's CI is
exactly the one the engine would compute for it alone. ``engine`` picks the bootstrap engine
version (default ``stats.LATEST_ENGINE``; ``docket protocol simulate`` passes the version a verdict
of the protocol would run with, :func:`docketml.ledger.verdicts.engine_version`).

Sample-size planning (``sizes``): the gap table is run at every size ``n`` (items per class per
group); each rule gets ``by_size`` (the points at each n) and ``required_n`` (per gap, the
smallest n whose PROVEN rate reaches ``POWER_TARGET`` = 0.8, ``None`` if no size does), and
``planning``: that smallest n at the declared margin -- ``regime_wins``: true gap = ``margin``;
``non_inferiority``: true difference 0 (the margin is the null); ``threshold`` has no margin and
gets none -- or at ``effect`` when given.

Pilot data model (``pilot``: a :class:`rules.SourceData`, e.g. a run's observations): instead of
binormal signals, each simulated study draws, per group and per class, ``n`` items with
replacement from the pilot's items of that group and class, keeping every item's signals
together (the empirical joint distribution, so the correlation between candidates and
baselines is the real one). There is one point, the pilot's own effect (``gap`` = ``None``);
there is no null under this model (``null_proven_rate`` = ``None``). ``non_inferiority`` needs
two jobs' data and is not simulated from one pilot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

from docketml.protocols.schema import (
    CombinationRule,
    NonInferiorityRule,
    Protocol,
    RegimeWinsRule,
    ThresholdRule,
)

from . import rules, stats
from .parallel import ordered_map

DEFAULT_GAPS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)
THRESHOLD_GAPS = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.15)
POWER_TARGET = 0.8
BASE_AUROC = 0.75
CORRELATION = 0.5


def _mu(auc: float) -> float:
    """Binormal shift giving true AUROC ``auc``: ``sqrt(2) Phi^-1(auc)`` (auc clipped to
    [0.001, 0.999])."""
    return float(np.sqrt(2.0) * scipy.stats.norm.ppf(np.clip(auc, 0.001, 0.999)))


def _draw(
    rng: np.random.Generator, t: int, s: int, n: int, mu: np.ndarray, rho: float
) -> np.ndarray:
    """(t, s, n) equicorrelated normal scores with per-signal mean ``mu`` (s,)."""
    shared = rng.standard_normal((t, 1, n))
    own = rng.standard_normal((t, s, n))
    return np.sqrt(rho) * shared + np.sqrt(1.0 - rho) * own + np.asarray(mu)[None, :, None]


class PilotError(ValueError):
    """The pilot run lacks what a rule needs (a group, a class, a signal); says what."""


def _resample(rng: np.random.Generator, mat: np.ndarray, t: int, n: int) -> np.ndarray:
    """(t, S, n): ``n`` columns (items) of ``mat`` (S, m) drawn with replacement per study, an
    item's S signals kept together."""
    if mat.shape[1] == 0:
        raise PilotError("the pilot has no items in a class a rule needs")
    idx = rng.integers(0, mat.shape[1], size=(t, n))
    return np.ascontiguousarray(mat[:, idx].transpose(1, 0, 2))


def _rates(idx: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    counts = np.bincount(idx, minlength=len(rules.VERDICTS))
    return {v: float(counts[rules.VERDICTS.index(v)] / len(idx)) for v in names}


def _contests(protocol: Protocol) -> list[str]:
    labels = protocol.labels
    assert labels is not None
    if labels.source == "regime":
        return [g for g in protocol.groups if g != labels.reference]
    return list(protocol.groups)


def _sim_regime(
    protocol: Protocol,
    rule: RegimeWinsRule,
    t: int,
    n: int,
    gap: float,
    b: int,
    rng: np.random.Generator,
    base_auroc: float,
    rho: float,
    pilot: rules.SourceData | None = None,
    engine: int = 1,
) -> np.ndarray:
    baselines = protocol.baselines_for(rule)
    c, k = len(rule.candidates), len(baselines)
    mu = np.array([_mu(base_auroc + gap)] * c + [_mu(base_auroc)] * k)
    contests = _contests(protocol)
    labels = protocol.labels
    assert labels is not None
    gen = (
        stats.derive_group_rngs(rule.ci.seed, list(protocol.groups))
        if rule.ci.method == "paired_bootstrap"
        else {}
    )
    won = np.zeros((t, len(contests)), dtype=bool)
    if pilot is not None:
        signals = list(rule.candidates) + list(baselines)
        shaped = {}
        for g in contests:
            got = rules._contest(protocol, pilot, g, signals)
            if isinstance(got, list):
                raise PilotError("; ".join(got))
            shaped[g] = got
        if labels.source == "regime":
            ref = shaped[contests[0]].neg
            shared_neg = _resample(rng, ref, t, n)
    else:
        shared_neg = (
            _draw(rng, t, c + k, n, np.zeros(c + k), rho) if labels.source == "regime" else None
        )
    for j, g in enumerate(contests):
        if pilot is not None:
            pos = _resample(rng, shaped[g].pos, t, n)
            neg = shared_neg if labels.source == "regime" else _resample(rng, shaped[g].neg, t, n)
        else:
            pos = _draw(rng, t, c + k, n, mu, rho)
            neg = (
                shared_neg
                if shared_neg is not None
                else _draw(rng, t, c + k, n, np.zeros(c + k), rho)
            )
        cs = rules.contest_stats(pos, neg, c, rule.ci, rule.best_baseline, gen.get(g), b, engine)
        win = (cs.delta >= rule.margin - rules.MARGIN_TOL) & (cs.lo > 0.0)
        won[:, j] = win.any(axis=1)
    return rules.decide_regime(won, contests, rule.verdicts)


def _pooled_sizes(
    protocol: Protocol, n: int, selected: Sequence[str] | None = None
) -> tuple[int, int]:
    """(positives, negatives) of the pooled data at ``n`` items per class per group, over the
    rule's ``groups:`` when given (regime labels: the reference always supplies the
    negatives)."""
    labels = protocol.labels
    chosen = list(selected) if selected else list(protocol.groups)
    groups = max(1, len(chosen))
    if labels is not None and labels.source == "regime":
        others = [g for g in chosen if g != labels.reference] if selected else chosen[1:]
        return n * max(1, len(others)), n
    return n * groups, n * groups


def _binary_size(protocol: Protocol, rule: ThresholdRule, n: int) -> int:
    """How many samples a 0/1 rule counts at ``n`` items per class per group: every selected
    item (rate, count), the label-0 (fpr_at) or label-1 (tpr_at) items."""
    n_pos, n_neg = _pooled_sizes(protocol, n, rule.groups)
    labels = protocol.labels
    if rule.statistic in ("rate", "count"):
        if labels is not None and labels.source == "regime" and rule.groups:
            return n * len(rule.groups)
        return n_pos + n_neg
    return n_neg if rule.statistic == "fpr_at" else n_pos


def _sim_binary(
    protocol: Protocol,
    rule: ThresholdRule,
    t: int,
    n: int,
    gap: float,
    rng: np.random.Generator,
    pilot: rules.SourceData | None,
    engine: int = stats.LATEST_ENGINE,
) -> np.ndarray:
    """A 0/1 statistic: binomial counts ``k ~ Bin(N, p)`` with the true proportion ``p = bound
    + gap`` towards the op (``bound / N + gap`` for ``count``), clipped to [0, 1]; or, with a
    pilot, N outcomes resampled from the pilot's own counted outcomes. Decided as the engine
    decides (:func:`rules.decide_binary`: on the Clopper-Pearson interval, or on the observed
    value under ``decide: observed``, where the null's PROVEN rate is ``P(Bin(N, bound) past the
    bound)``, e.g. about 0.5 -- an observed gate is not a test)."""
    size = _binary_size(protocol, rule, n)
    upward = rule.op in (">=", ">")
    if pilot is not None:
        got = rules._binary_outcomes(protocol, pilot, rule)
        if isinstance(got, list):
            raise PilotError("; ".join(got))
        outcomes = got[0]
        if outcomes.size == 0:
            raise PilotError("the pilot has no samples this rule counts")
        k = outcomes[rng.integers(0, outcomes.size, size=(t, size))].sum(axis=1)
    else:
        base = rule.bound / size if rule.statistic == "count" else rule.bound
        p = min(max(base + (gap if upward else -gap), 0.0), 1.0)
        k = rng.binomial(size, p, size=t)
    point, lo, hi = rules._binary_stat(rule.statistic, k, np.full(t, size), rule.ci.level)
    return rules.decide_binary(rule, point, lo, hi, engine)


def _sim_threshold(
    protocol: Protocol,
    rule: ThresholdRule,
    t: int,
    n: int,
    gap: float,
    b: int,
    rng: np.random.Generator,
    rho: float,
    pilot: rules.SourceData | None = None,
    engine: int = 1,
) -> np.ndarray:
    if rule.statistic in rules.BINARY_STATISTICS:
        return _sim_binary(protocol, rule, t, n, gap, rng, pilot, engine)
    upward = rule.op in (">=", ">")
    target = rule.bound + (gap if upward else -gap)
    gen = stats.derive_group_rngs(rule.ci.seed, [rules.POOLED_STREAM])[rules.POOLED_STREAM]
    n_pos, n_neg = _pooled_sizes(protocol, n, rule.groups)
    assert rule.signal is not None
    if rule.statistic == "auroc":
        if pilot is not None:
            got = rules._pooled(protocol, pilot, [rule.signal], rule.groups)
            if isinstance(got, list):
                raise PilotError("; ".join(got))
            pos = _resample(rng, got.pos, t, n_pos)[:, 0]
            neg = _resample(rng, got.neg, t, n_neg)[:, 0]
        else:
            pos = rng.standard_normal((t, n_pos)) + _mu(target)
            neg = rng.standard_normal((t, n_neg))
        point, lo, hi = rules._auroc_stat(pos, neg, rule.ci, gen, b, engine)
    else:
        if pilot is not None:
            got_v = rules._all_values(protocol, pilot, rule.signal, rule.groups)
            if isinstance(got_v, list):
                raise PilotError("; ".join(got_v))
            values = _resample(rng, got_v[0][None, :], t, n_pos + n_neg)[:, 0]
        else:
            values = rng.standard_normal((t, n_pos + n_neg)) + target
        point, lo, hi = rules._mean_stat(values, rule.ci, gen, b, engine)
    return rules.decide_threshold(point, lo, hi, rule.op, rule.bound)


def _sim_non_inferiority(
    protocol: Protocol,
    rule: NonInferiorityRule,
    t: int,
    n: int,
    gap: float,
    b: int,
    rng: np.random.Generator,
    base_auroc: float,
    rho: float,
    engine: int = 1,
) -> np.ndarray:
    sign = 1.0 if rule.higher_is_better else -1.0
    gens = stats.derive_group_rngs(rule.ci.seed, list(rules.NI_STREAMS))
    n_pos, n_neg = _pooled_sizes(protocol, n, rule.groups)
    if rule.statistic == "auroc":
        mu = np.array([_mu(base_auroc + sign * gap), _mu(base_auroc)])
        pos = _draw(rng, t, 2, n_pos, mu, rho)
        neg = _draw(rng, t, 2, n_neg, np.zeros(2), rho)
        _, _, lo, _ = rules._ni_auroc(
            pos[:, 0], neg[:, 0], pos[:, 1], neg[:, 1], True, rule.ci, gens, b, sign, engine
        )
        point = sign * (
            rules._point_aurocs(pos[:, 0], neg[:, 0]) - rules._point_aurocs(pos[:, 1], neg[:, 1])
        )
    else:
        vals = _draw(rng, t, 2, n_pos + n_neg, np.array([sign * gap, 0.0]), rho)
        cv, rv, lo, _ = rules._ni_mean(vals[:, 0], vals[:, 1], True, rule.ci, gens, b, sign, engine)
        point = sign * (cv - rv)
    return rules.decide_non_inferiority(point, lo, rule.margin)


def _table(rule: Any, gaps: Sequence[float] | None) -> tuple[list[float], float, str, list[str]]:
    """(gap table, null gap, gap label, verdict names) of one simulable rule."""
    if isinstance(rule, RegimeWinsRule):
        table = list(gaps) if gaps is not None else list(DEFAULT_GAPS)
        null_gap, label = 0.0, "true AUROC gap, candidate - baseline"
        names = [v for v in rules.TRIED_ORDER if v in rule.verdicts] + ["INCONCLUSIVE"]
    elif isinstance(rule, ThresholdRule):
        table = list(gaps) if gaps is not None else list(THRESHOLD_GAPS)
        null_gap = 0.0
        label = {
            "auroc": "true AUROC - bound (towards the op)",
            "mean": "true mean - bound, in SDs (towards the op)",
            "count": "true rate - bound / N (towards the op)",
        }.get(rule.statistic, f"true {rule.statistic} - bound (towards the op)")
        names = list(rules.TRIED_ORDER)
    else:
        assert isinstance(rule, NonInferiorityRule)
        m = rule.margin
        default = sorted({round(x, 6) for x in (-m - 0.05, -m, -m / 2, 0.0, 0.05)})
        table = list(gaps) if gaps is not None else default
        null_gap = -m
        label = "true difference, candidate - reference (positive = better)"
        names = list(rules.TRIED_ORDER)
    if null_gap not in table:
        table = sorted(table + [null_gap])
    return table, null_gap, label, names


def _planning_gap(rule: Any, effect: float | None) -> tuple[float | None, str]:
    if effect is not None:
        return float(effect), "the given effect"
    if isinstance(rule, RegimeWinsRule):
        return float(rule.margin), "the declared margin (true gap = margin)"
    if isinstance(rule, NonInferiorityRule):
        return 0.0, "no true difference (the declared margin is the null)"
    return None, "a threshold rule declares no margin; see required_n per gap"


def simulate_protocol(
    protocol: Protocol,
    n_sims: int = 200,
    *,
    n_per_class: int = 30,
    sizes: Sequence[int] | None = None,
    gaps: Sequence[float] | None = None,
    resamples: int | None = None,
    base_auroc: float = BASE_AUROC,
    correlation: float = CORRELATION,
    seed: int | None = None,
    pilot: rules.SourceData | None = None,
    effect: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    engine: int = stats.LATEST_ENGINE,
) -> dict[str, Any]:
    """Verdict rates per true effect (and per sample size) for every simulable rule (see the
    module docstring). ``resamples`` = None runs each rule's own ``ci.resamples``; an int caps
    it. ``progress(done, total)`` is called after each simulated point. ``engine`` is the
    bootstrap engine version (``stats.ENGINE_VERSIONS``; the CLI passes the one a verdict of the
    protocol would use) and is reported in ``settings``."""
    engine = stats.check_engine(engine)
    if n_sims < 1:
        raise ValueError("n_sims must be at least 1")
    if resamples is not None and resamples < 1:
        raise ValueError("resamples must be at least 1")
    size_list = [int(x) for x in (sizes if sizes else [n_per_class])]
    if any(x < 2 for x in size_list):
        raise ValueError("every size must be at least 2 items per class")
    seed = protocol.seed if seed is None else seed
    out_rules: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    plan: list[tuple[int, str, Any]] = []
    for r_index, (name, rule) in enumerate(protocol.decision_rules.items()):
        if isinstance(rule, CombinationRule):
            skipped.append({"rule": name, "reason": f"{rule.kind} combines other hypotheses"})
        elif isinstance(rule, ThresholdRule) and rule.statistic == "metric":
            skipped.append({"rule": name, "reason": "a metric's CI is recorded by its job"})
        elif pilot is not None and isinstance(rule, NonInferiorityRule):
            skipped.append(
                {"rule": name, "reason": "non_inferiority needs two jobs' data, a pilot is one"}
            )
        else:
            plan.append((r_index, name, rule))
    tables = {}
    for _r, name, rule in plan:
        table, null_gap, label, names = _table(rule, gaps)
        pg, basis = _planning_gap(rule, effect)
        if pilot is None and len(size_list) > 1 and pg is not None and pg not in table:
            table = sorted(table + [pg])
        if pilot is not None:
            table = [None]  # type: ignore[list-item]
        tables[name] = (table, null_gap, label, names, pg, basis)
    total = sum(len(t[0]) for t in tables.values()) * len(size_list)

    def point(task: tuple[int, Any, int, int, int, float, int]) -> np.ndarray:
        r_index, rule, b, s_index, n, g_index, gap = task
        key = [seed, r_index, g_index] if s_index == 0 else [seed, r_index, g_index, n]
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(key)))
        g = 0.0 if gap is None else gap
        if isinstance(rule, RegimeWinsRule):
            return _sim_regime(
                protocol, rule, n_sims, n, g, b, rng, base_auroc, correlation, pilot, engine
            )
        if isinstance(rule, ThresholdRule):
            return _sim_threshold(protocol, rule, n_sims, n, g, b, rng, correlation, pilot, engine)
        return _sim_non_inferiority(
            protocol, rule, n_sims, n, g, b, rng, base_auroc, correlation, engine
        )

    tasks = []
    for r_index, name, rule in plan:
        b = rule.ci.resamples if resamples is None else min(rule.ci.resamples, resamples)
        for s_index, n in enumerate(size_list):
            for g_index, gap in enumerate(tables[name][0]):
                tasks.append((r_index, rule, b, s_index, n, g_index, gap))
    # Every point has its own generator (keyed by rule, gap, size), so running points on worker
    # processes (ledger.verdict.parallel) changes nothing in the result; consumed in task order.
    results = ordered_map(point, tasks)
    done = 0
    for _r_index, name, rule in plan:
        table, null_gap, label, names, pg, basis = tables[name]
        b = rule.ci.resamples if resamples is None else min(rule.ci.resamples, resamples)
        by_size = []
        for _s_index, n in enumerate(size_list):
            points = []
            null_rate: float | None = None
            for gap in table:
                rates = _rates(next(results), names)
                points.append({"gap": None if gap is None else float(gap), "rates": rates})
                if gap is not None and gap == null_gap:
                    null_rate = rates["PROVEN"]
                done += 1
                if progress is not None:
                    progress(done, total)
            by_size.append({"n": n, "points": points, "null_proven_rate": null_rate})
        required = []
        for j, gap in enumerate(table):
            hit = [s["n"] for s in by_size if s["points"][j]["rates"]["PROVEN"] >= POWER_TARGET]
            required.append(
                {"gap": None if gap is None else float(gap), "n": min(hit) if hit else None}
            )
        entry: dict[str, Any] = {
            "rule": name,
            "kind": rule.kind,
            "verdicts": names,
            "gap_label": "the pilot's own effect" if pilot is not None else label,
            "null_gap": None if pilot is not None else float(null_gap),
            "points": by_size[0]["points"],
            "null_proven_rate": by_size[0]["null_proven_rate"],
            "resamples": b if rule.ci.method == "paired_bootstrap" else None,
            "level": rule.ci.level,
            "ci_method": rule.ci.method,
        }
        if len(size_list) > 1:
            entry["by_size"] = by_size
            entry["required_n"] = required
            hit_n = (
                next((r["n"] for r in required if pilot is None and r["gap"] == pg), None)
                if pg is not None
                else None
            )
            if pilot is not None:
                hit_n, pg = required[0]["n"], None
                basis = "the pilot's own effect"
            entry["planning"] = {
                "gap": pg,
                "basis": basis,
                "power_target": POWER_TARGET,
                "n": hit_n,
            }
        out_rules.append(entry)
    capped = (
        f"bootstrap resamples capped at {resamples} (explicit --resamples; a verdict uses the "
        "rule's own count)"
        if resamples is not None
        else "each rule's own resamples, level and seed scheme (full fidelity)"
    )
    model = (
        f"pilot data model: items resampled per group and class from {pilot.name}, "
        "joint signals per item kept"
        if pilot is not None
        else f"binormal signals, baseline/reference true AUROC {base_auroc}, within-item "
        f"correlation {correlation}"
    )
    sizes_txt = ", ".join(str(x) for x in size_list)
    return {
        "rules": out_rules,
        "skipped": skipped,
        "settings": {
            "n_sims": n_sims,
            "n_per_class": size_list[0],
            "sizes": size_list,
            "resamples_cap": resamples,
            "base_auroc": base_auroc,
            "correlation": correlation,
            "seed": seed,
            "model": "pilot" if pilot is not None else "binormal",
            "pilot": pilot.name if pilot is not None else None,
            "engine": engine,
        },
        "notes": [
            f"{n_sims} simulated studies per point; {sizes_txt} items per class per group; "
            f"{capped}; the studies of a point share one resample set per group; bootstrap "
            f"engine {engine}",
            model,
        ],
    }


def _plot_sizes(ax: Any, sim: dict[str, Any]) -> None:
    """PROVEN rate against items per class, one curve per gap, the 80% line dashed."""
    ns = [b["n"] for b in sim["by_size"]]
    for j, point in enumerate(sim["by_size"][0]["points"]):
        gap = point["gap"]
        ax.plot(
            ns,
            [b["points"][j]["rates"]["PROVEN"] for b in sim["by_size"]],
            marker="o",
            label="pilot" if gap is None else f"gap {gap:+.3f}",
        )
    ax.axhline(POWER_TARGET, color="#999999", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_title(f"{sim['rule']} ({sim['kind']}): power by size", fontsize=10)
    ax.set_xlabel("items per class per group", fontsize=9)
    ax.set_ylabel("probability of PROVEN")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def plot_simulation(result: dict[str, Any], path: str | Path) -> None:
    """A PNG with one panel per simulated rule: verdict rate against the true effect."""
    from docketml.extras import require_extra

    require_extra("plots")  # MissingExtra (exit 2) without matplotlib
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = result["rules"]
    n = max(1, len(sims))
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), squeeze=False)
    colors = {
        "PROVEN": "#1a7f37",
        "PARTIAL": "#bf8700",
        "DISPROVEN": "#cf222e",
        "INCONCLUSIVE": "#6e7781",
    }
    for ax, sim in zip(axes[0], sims, strict=False):
        if "by_size" in sim:
            _plot_sizes(ax, sim)
            continue
        gaps = [0.0 if p["gap"] is None else p["gap"] for p in sim["points"]]
        for v in sim["verdicts"]:
            ax.plot(
                gaps,
                [p["rates"].get(v, 0.0) for p in sim["points"]],
                marker="o",
                label=v,
                color=colors.get(v),
            )
        if sim["null_gap"] is not None:
            ax.axvline(sim["null_gap"], color="#999999", linestyle=":", linewidth=1)
        null = sim["null_proven_rate"]
        ax.set_title(
            f"{sim['rule']} ({sim['kind']})\n"
            + ("pilot data model" if null is None else f"null PROVEN rate {null:.3f}"),
            fontsize=10,
        )
        ax.set_xlabel(sim["gap_label"], fontsize=9)
        ax.set_ylabel("probability of verdict")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not sims:
        axes[0][0].text(0.5, 0.5, "no simulable rule", ha="center", va="center")
    s = result.get("settings", {})
    fig.suptitle(
        f"verdict rates, {s.get('n_sims', '?')} simulated studies per point, "
        f"{s.get('n_per_class', '?')} per class per group",
        fontsize=10,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
