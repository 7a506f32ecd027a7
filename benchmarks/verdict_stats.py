"""Benchmark of the verdict-engine statistics core (ledger.stats).

Workload (the paper's rule): 7 groups x (30 positives, 30 negatives), 4 signals per group
(2 candidates + 2 baselines), 10,000 stratified paired bootstrap resamples per group. For
every group we compute the bootstrap AUROCs of all signals, the candidate-minus-baseline
delta for each of the 4 candidate/baseline pairs and its 95% percentile CI, plus the
best-baseline deltas of both pre-registerable modes ("fixed", "per_resample") with CIs.

Compared, in the same run, with:
* ``scipy.stats.bootstrap(..., paired=True, vectorized=True, n_resamples=10000,
  method="percentile")`` computing the same 4 pair deltas (one vector-valued call per group,
  the most favourable way to use it). scipy resamples rows without stratification, so the
  class counts vary between its resamples; its CIs differ slightly for that reason.
* a per-resample scikit-learn ``roc_auc_score`` loop, timed on a slice of resamples per group
  and scaled to 10,000.

Run: ``python benchmarks/verdict_stats.py`` (options: --rounds, --repeats, --sklearn-slice,
--seed). Timings of ours and scipy are interleaved; medians are reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ledger.py would shadow the ledger package when this file runs as a script
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.stats  # noqa: E402
import sklearn  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from docketml.ledger.verdict import stats  # noqa: E402

GROUPS = [f"group{i}" for i in range(1, 8)]
N_POS = N_NEG = 30
RESAMPLES = 10_000
LEVEL = 0.95
CANDIDATES = ("cand_a", "cand_b")
BASELINES = ("base_x", "base_y")
PAIRS = [(c, b) for c in CANDIDATES for b in BASELINES]


def make_data(seed: int) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """Synthetic per-group data; base_y is an integer 0..10 rating (many ties)."""
    rng = np.random.default_rng(seed)
    data = {}
    for g in GROUPS:
        labels = rng.permutation(np.r_[np.ones(N_POS, dtype=int), np.zeros(N_NEG, dtype=int)])
        latent = rng.normal(size=labels.size) + 0.9 * labels
        scores = {
            "cand_a": latent + 0.6 * rng.normal(size=labels.size),
            "cand_b": latent + 1.0 * rng.normal(size=labels.size),
            "base_x": rng.normal(size=labels.size) + 0.5 * labels,
            "base_y": np.clip(
                np.round(2.0 * (latent + 1.2 * rng.normal(size=labels.size)) + 5), 0, 10
            ),
        }
        data[g] = (scores, labels)
    return data


def run_ours(data: dict, seed: int, full_rule: bool = True) -> dict[str, dict]:
    """The stats core for all groups; returns per-group CIs for checking.

    ``full_rule=False`` does exactly scipy's share of the work (bootstrap AUROCs, 4 pair
    deltas, their percentile CIs); ``True`` adds full-sample AUROCs and the best-baseline
    deltas with CIs in both modes, as the verdict engine does."""
    rngs = stats.derive_group_rngs(seed, GROUPS)
    out = {}
    for g in GROUPS:
        scores, labels = data[g]
        boot = stats.stratified_paired_bootstrap(scores, labels, RESAMPLES, rngs[g])
        pair_ci = {(c, b): stats.percentile_ci(boot[c] - boot[b], LEVEL) for c, b in PAIRS}
        best: dict = {}
        if not full_rule:
            out[g] = {"boot": boot, "pair_ci": pair_ci, "best": best}
            continue
        full = {k: stats.auroc(v, labels) for k, v in scores.items()}
        for c in CANDIDATES:
            deltas = stats.best_baseline_deltas(
                boot[c], {b: boot[b] for b in BASELINES}, full[c], {b: full[b] for b in BASELINES}
            )
            best[c] = {
                m: (d.point, stats.percentile_ci(d.distribution, LEVEL)) for m, d in deltas.items()
            }
        out[g] = {"boot": boot, "pair_ci": pair_ci, "best": best}
    return out


def _auroc_rows(labels: np.ndarray, scores: np.ndarray, axis: int) -> np.ndarray:
    """Vectorised AUROC along ``axis`` for resampled (labels, scores) rows, midrank formula."""
    ranks = scipy.stats.rankdata(scores, axis=axis)
    n1 = labels.sum(axis=axis)
    n0 = labels.shape[axis] - n1
    r1 = (ranks * labels).sum(axis=axis)
    return (r1 - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def _scipy_statistic(labels, cand_a, cand_b, base_x, base_y, axis=-1):
    sig = {"cand_a": cand_a, "cand_b": cand_b, "base_x": base_x, "base_y": base_y}
    aucs = {k: _auroc_rows(labels, v, axis) for k, v in sig.items()}
    return np.stack([aucs[c] - aucs[b] for c, b in PAIRS])


def run_scipy(data: dict, seed: int) -> dict[str, dict]:
    out = {}
    for i, g in enumerate(GROUPS):
        scores, labels = data[g]
        res = scipy.stats.bootstrap(
            (labels.astype(float), *(scores[k] for k in (*CANDIDATES, *BASELINES))),
            _scipy_statistic,
            paired=True,
            vectorized=True,
            n_resamples=RESAMPLES,
            method="percentile",
            confidence_level=LEVEL,
            rng=np.random.default_rng(seed + i),
        )
        ci = res.confidence_interval
        out[g] = {p: (float(ci.low[j]), float(ci.high[j])) for j, p in enumerate(PAIRS)}
    return out


def run_sklearn_slice(data: dict, seed: int, n_slice: int) -> tuple[float, float]:
    """Per-resample roc_auc_score loop on ``n_slice`` stratified resamples per group.

    Returns (elapsed seconds, max |ours - sklearn| over the slice) — the same resamples as
    ``run_ours`` (same group generators), so it doubles as a correctness check.
    """
    rngs = stats.derive_group_rngs(seed, GROUPS)
    ours = run_ours(data, seed)
    worst = 0.0
    t0 = time.perf_counter()
    for g in GROUPS:
        scores, labels = data[g]
        pos_rows, neg_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        pos_idx, neg_idx = stats.stratified_resample_indices(N_POS, N_NEG, RESAMPLES, rngs[g])
        for b in range(n_slice):
            rows = np.r_[pos_rows[pos_idx[b]], neg_rows[neg_idx[b]]]
            y = labels[rows]
            aucs = {k: roc_auc_score(y, v[rows]) for k, v in scores.items()}
            _ = [aucs[c] - aucs[bl] for c, bl in PAIRS]
            worst = max(worst, max(abs(aucs[k] - ours[g]["boot"][k][b]) for k in aucs))
    return time.perf_counter() - t0, worst


def timed_interleaved(
    fns: dict[str, Callable[[], object]], repeats: dict[str, int], rounds: int
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, object]]:
    """Time several workloads in alternation (``rounds`` rounds, ``repeats[k]`` runs of each
    per round) so that load from other processes on a shared machine hits all of them alike.

    Returns per workload a list of (wall seconds, process CPU seconds) and the last result.
    """
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    results: dict[str, object] = {}
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(repeats[k]):
                w0, c0 = time.perf_counter(), time.process_time()
                results[k] = fn()
                times[k].append((time.perf_counter() - w0, time.process_time() - c0))
    return times, results


def _summary(samples: list[tuple[float, float]]) -> tuple[float, float, str]:
    wall = [w for w, _ in samples]
    cpu = [c for _, c in samples]
    med_w, med_c = statistics.median(wall), statistics.median(cpu)
    text = (
        f"wall median {med_w:.4f} s (min {min(wall):.4f}, max {max(wall):.4f}); "
        f"CPU median {med_c:.4f} s; n={len(samples)}"
    )
    return med_w, med_c, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of (ours x repeats, scipy x 1)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of ours per round")
    ap.add_argument("--sklearn-slice", type=int, default=200, help="resamples per group")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()

    data = make_data(args.seed)
    print(
        "ledger.stats benchmark: 7 groups x 30 pos / 30 neg, 4 signals "
        f"(2 candidates + 2 baselines), {RESAMPLES:,} resamples per group"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"scikit-learn {sklearn.__version__}, cpus {os.cpu_count()}, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )

    run_ours(data, args.seed)  # warm-up (imports, BLAS init)
    times, results = timed_interleaved(
        {
            "same": lambda: run_ours(data, args.seed, full_rule=False),
            "full": lambda: run_ours(data, args.seed),
            "scipy": lambda: run_scipy(data, args.seed),
        },
        {"same": args.repeats, "full": args.repeats, "scipy": 1},
        rounds=args.rounds,
    )
    ours, sp = results["full"], results["scipy"]
    sk_t, sk_err = run_sklearn_slice(data, args.seed, args.sklearn_slice)
    sk_scaled = sk_t * RESAMPLES / args.sklearn_slice
    same_w, same_c, same_txt = _summary(times["same"])
    full_w, full_c, full_txt = _summary(times["full"])
    sp_w, sp_c, sp_txt = _summary(times["scipy"])

    print()
    print("ours, same work as scipy (stratified paired bootstrap AUROCs with exact ties,")
    print(f"  4 pair deltas + percentile CIs, 7 groups):  {same_txt}")
    print("ours, full rule (+ full-sample AUROCs, best-baseline deltas in both modes + CIs):")
    print(f"  {full_txt}")
    print("scipy.stats.bootstrap(paired=True, vectorized=True, n_resamples=10000,")
    print("  method='percentile'; rows resampled WITHOUT stratification):")
    print(f"  {sp_txt}")
    print(
        f"sklearn roc_auc_score loop: {sk_t:.3f} s wall for {args.sklearn_slice} resamples x 7 "
        f"groups -> scaled to {RESAMPLES:,}: {sk_scaled:.1f} s"
    )
    print()
    print(
        f"speedup vs scipy.stats.bootstrap, same work: {sp_w / same_w:.1f}x wall, "
        f"{sp_c / same_c:.1f}x CPU  (full rule: {sp_w / full_w:.1f}x wall, "
        f"{sp_c / full_c:.1f}x CPU)   goal >= 30x"
    )
    print(f"speedup vs sklearn loop, same work: {sk_scaled / same_w:.0f}x wall")
    print(f"full rule under 0.3 s wall: {'yes' if full_w < 0.3 else 'NO'} ({full_w:.3f} s)")
    print()
    print(f"check: max |ours - roc_auc_score| on the sliced resamples = {sk_err:.2e}")
    diffs = [
        max(
            abs(ours[g]["pair_ci"][p][0] - sp[g][p][0]), abs(ours[g]["pair_ci"][p][1] - sp[g][p][1])
        )
        for g in GROUPS
        for p in PAIRS
    ]
    print(
        f"check: max |CI bound ours - scipy| over 28 pair CIs = {max(diffs):.4f} "
        "(stratified vs unstratified resampling + Monte Carlo error)"
    )
    g0 = GROUPS[0]
    for c in CANDIDATES:
        for mode, (point, (lo, hi)) in ours[g0]["best"][c].items():
            print(
                f"  {g0} {c} vs best baseline [{mode:>12}]: delta {point:+.4f}  "
                f"95% CI [{lo:+.4f}, {hi:+.4f}]"
            )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
