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
  side); on ``mean``: unit-variance values with mean ``bound + gap``. Null: ``gap = 0`` (the
  statistic exactly at the bound). ``metric`` thresholds read a CI recorded by a job and are not
  simulated.
* ``non_inferiority``: the reference has true AUROC ``base_auroc`` (mean: 0, unit variance), the
  candidate ``reference + gap`` (gap oriented so positive is better), paired items. Null: ``gap =
  -margin``.
* ``all_of`` / ``any_of`` are not simulated (their parts are).

Speed: the studies of one point are simulated at once (a leading study axis); with
``paired_bootstrap`` they share one stratified resample set per group, and the resamples are
capped at ``resamples`` (default 500, fewer than a verdict's) -- each study's CI is exactly the
one the engine would compute with that many resamples, the cap only adds Monte Carlo noise to the
CI ends.
"""

from __future__ import annotations

from collections.abc import Sequence
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

DEFAULT_GAPS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)
THRESHOLD_GAPS = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.15)
SIM_RESAMPLES = 500
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
    shared_neg = (
        _draw(rng, t, c + k, n, np.zeros(c + k), rho) if labels.source == "regime" else None
    )
    won = np.zeros((t, len(contests)), dtype=bool)
    for j, g in enumerate(contests):
        pos = _draw(rng, t, c + k, n, mu, rho)
        neg = (
            shared_neg if shared_neg is not None else _draw(rng, t, c + k, n, np.zeros(c + k), rho)
        )
        cs = rules.contest_stats(pos, neg, c, rule.ci, rule.best_baseline, gen.get(g), b)
        win = (cs.delta >= rule.margin - rules.MARGIN_TOL) & (cs.lo > 0.0)
        won[:, j] = win.any(axis=1)
    return rules.decide_regime(won, contests, rule.verdicts)


def _pooled_sizes(protocol: Protocol, n: int) -> tuple[int, int]:
    labels = protocol.labels
    groups = max(1, len(protocol.groups))
    if labels is not None and labels.source == "regime":
        return n * (groups - 1), n
    return n * groups, n * groups


def _sim_threshold(
    protocol: Protocol,
    rule: ThresholdRule,
    t: int,
    n: int,
    gap: float,
    b: int,
    rng: np.random.Generator,
    rho: float,
) -> np.ndarray:
    upward = rule.op in (">=", ">")
    target = rule.bound + (gap if upward else -gap)
    gen = stats.derive_group_rngs(rule.ci.seed, [rules.POOLED_STREAM])[rules.POOLED_STREAM]
    if rule.statistic == "auroc":
        n_pos, n_neg = _pooled_sizes(protocol, n)
        pos = rng.standard_normal((t, n_pos)) + _mu(target)
        neg = rng.standard_normal((t, n_neg))
        point, lo, hi = rules._auroc_stat(pos, neg, rule.ci, gen, b)
    else:
        n_pos, n_neg = _pooled_sizes(protocol, n)
        values = rng.standard_normal((t, n_pos + n_neg)) + target
        point, lo, hi = rules._mean_stat(values, rule.ci, gen, b)
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
) -> np.ndarray:
    sign = 1.0 if rule.higher_is_better else -1.0
    gens = stats.derive_group_rngs(rule.ci.seed, list(rules.NI_STREAMS))
    n_pos, n_neg = _pooled_sizes(protocol, n)
    if rule.statistic == "auroc":
        mu = np.array([_mu(base_auroc + sign * gap), _mu(base_auroc)])
        pos = _draw(rng, t, 2, n_pos, mu, rho)
        neg = _draw(rng, t, 2, n_neg, np.zeros(2), rho)
        _, _, lo, _ = rules._ni_auroc(
            pos[:, 0], neg[:, 0], pos[:, 1], neg[:, 1], True, rule.ci, gens, b, sign
        )
        point = sign * (
            rules._point_aurocs(pos[:, 0], neg[:, 0]) - rules._point_aurocs(pos[:, 1], neg[:, 1])
        )
    else:
        vals = _draw(rng, t, 2, n_pos + n_neg, np.array([sign * gap, 0.0]), rho)
        cv, rv, lo, _ = rules._ni_mean(vals[:, 0], vals[:, 1], True, rule.ci, gens, b, sign)
        point = sign * (cv - rv)
    return rules.decide_non_inferiority(point, lo, rule.margin)


def simulate_protocol(
    protocol: Protocol,
    n_sims: int = 200,
    *,
    n_per_class: int = 30,
    gaps: Sequence[float] | None = None,
    resamples: int = SIM_RESAMPLES,
    base_auroc: float = BASE_AUROC,
    correlation: float = CORRELATION,
    seed: int | None = None,
) -> dict[str, Any]:
    """Verdict rates per true effect for every simulable rule (see the module docstring)."""
    if n_sims < 1:
        raise ValueError("n_sims must be at least 1")
    seed = protocol.seed if seed is None else seed
    out_rules: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for r_index, (name, rule) in enumerate(protocol.decision_rules.items()):
        if isinstance(rule, CombinationRule):
            skipped.append({"rule": name, "reason": f"{rule.kind} combines other hypotheses"})
            continue
        if isinstance(rule, ThresholdRule) and rule.statistic == "metric":
            skipped.append({"rule": name, "reason": "a metric's CI is recorded by its job"})
            continue
        b = min(rule.ci.resamples, resamples)
        if isinstance(rule, RegimeWinsRule):
            table = list(gaps) if gaps is not None else list(DEFAULT_GAPS)
            null_gap, label = 0.0, "true AUROC gap, candidate - baseline"
            names = [v for v in rules.TRIED_ORDER if v in rule.verdicts] + ["INCONCLUSIVE"]
        elif isinstance(rule, ThresholdRule):
            table = list(gaps) if gaps is not None else list(THRESHOLD_GAPS)
            null_gap = 0.0
            label = (
                "true AUROC - bound (towards the op)"
                if rule.statistic == "auroc"
                else "true mean - bound, in SDs (towards the op)"
            )
            names = list(rules.TRIED_ORDER)
        else:
            assert isinstance(rule, NonInferiorityRule)
            m = rule.margin
            default = sorted({round(x, 6) for x in (-m - 0.05, -m, -m / 2, 0.0, 0.05)})
            table = list(gaps) if gaps is not None else default
            null_gap = -m
            if null_gap not in table:
                table = sorted(table + [null_gap])
            label = "true difference, candidate - reference (positive = better)"
            names = list(rules.TRIED_ORDER)
        if null_gap not in table:
            table = sorted(table + [null_gap])
        points = []
        null_rate = 0.0
        for g_index, gap in enumerate(table):
            rng = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence([seed, r_index, g_index]))
            )
            if isinstance(rule, RegimeWinsRule):
                idx = _sim_regime(
                    protocol, rule, n_sims, n_per_class, gap, b, rng, base_auroc, correlation
                )
            elif isinstance(rule, ThresholdRule):
                idx = _sim_threshold(protocol, rule, n_sims, n_per_class, gap, b, rng, correlation)
            else:
                idx = _sim_non_inferiority(
                    protocol, rule, n_sims, n_per_class, gap, b, rng, base_auroc, correlation
                )
            rates = _rates(idx, names)
            points.append({"gap": float(gap), "rates": rates})
            if gap == null_gap:
                null_rate = rates["PROVEN"]
        out_rules.append(
            {
                "rule": name,
                "kind": rule.kind,
                "verdicts": names,
                "gap_label": label,
                "null_gap": float(null_gap),
                "points": points,
                "null_proven_rate": float(null_rate),
                "resamples": b if rule.ci.method == "paired_bootstrap" else None,
            }
        )
    return {
        "rules": out_rules,
        "skipped": skipped,
        "settings": {
            "n_sims": n_sims,
            "n_per_class": n_per_class,
            "resamples_cap": resamples,
            "base_auroc": base_auroc,
            "correlation": correlation,
            "seed": seed,
        },
        "notes": [
            f"{n_sims} simulated studies per point; {n_per_class} items per class per group; "
            f"bootstrap resamples capped at {resamples} for speed (the studies of a point share "
            "one resample set per group)",
            f"binormal signals, baseline/reference true AUROC {base_auroc}, within-item "
            f"correlation {correlation}",
        ],
    }


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
        gaps = [p["gap"] for p in sim["points"]]
        for v in sim["verdicts"]:
            ax.plot(
                gaps,
                [p["rates"].get(v, 0.0) for p in sim["points"]],
                marker="o",
                label=v,
                color=colors.get(v),
            )
        ax.axvline(sim["null_gap"], color="#999999", linestyle=":", linewidth=1)
        ax.set_title(
            f"{sim['rule']} ({sim['kind']})\nnull PROVEN rate {sim['null_proven_rate']:.3f}",
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
