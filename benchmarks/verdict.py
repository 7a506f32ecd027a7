"""Benchmark of the verdict engine end to end (ledger.rules on in-memory data).

Workload (the paper's rule): 7 groups x (30 positives, 30 negatives) with judged labels, 2
candidates + 2 baselines, ``regime_wins`` with margin 0.02, best baseline fixed, 95% stratified
paired bootstrap with 10,000 resamples. "Ours" is ``ledger.rules.evaluate`` on the protocol and a
``SourceData`` built from long rows: shaping the data, orienting the signals, the bootstrap, the
deltas vs the best baseline, the CIs, the wins, the verdict and the pooled AUROCs with DeLong CIs.
It is timed under engine 1 (every verdict recorded before engine versions), engine 2 and engine
3 (the engine new protocols freeze with; ``ledger.verdict.stats`` module docstring).

Compared, in the same run:
* the floor: a plain numpy loop-free kernel of the same rule (``floor_kernel``): per group, the
  oriented (4, 30) score matrices are given; ONE ``integers`` call per class draws all 10,000
  resamples (int16), one bincount per class counts them, one float32 matmul with the pairwise
  comparison matrix and one einsum give every resample's AUROCs, then the deltas vs the fixed
  best baseline and their percentile CIs. No data shaping, no validation, no point estimates,
  no pooled AUROCs, no verdict: the least numpy work the 14 CIs take.
* ``scipy.stats.bootstrap(..., paired=True, vectorized=True, n_resamples=10000,
  method="percentile")`` doing the same statistical work: per group, the CI of each candidate's
  AUROC minus the best baseline's (one vector-valued call per group; scipy resamples rows without
  stratification, so its class counts vary between resamples).
* a per-resample scikit-learn ``roc_auc_score`` loop on the engine's own resamples, timed on a
  slice and scaled to 10,000; on that slice it also re-derives the engine's CIs (run with the
  slice's resample count) as a correctness check.

Run: ``python benchmarks/verdict.py`` (options: --repeats, --scipy-repeats, --sklearn-slice,
--clock wall|cpu; the candidates are timed interleaved, round by round).
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

from docketml.ledger.verdict import rules, stats  # noqa: E402
from docketml.protocols.schema import Protocol  # noqa: E402

GROUPS = [f"group{i}" for i in range(1, 8)]
N_POS = N_NEG = 30
RESAMPLES = 10_000
CANDIDATES = ["cand_a", "cand_b"]
BASELINES = ["base_x", "base_y"]
SIGNALS = CANDIDATES + BASELINES


def make_protocol(resamples: int = RESAMPLES, seed: int = 1234) -> Protocol:
    return Protocol.model_validate(
        {
            "docket": 1,
            "id": "bench-paper-rule",
            "title": "the paper's rule, 7 groups",
            "hypotheses": [{"id": "H1", "statement": "candidates win", "rule": "rw"}],
            "signals": {
                "cand_a": {"higher_means": "positive"},
                "cand_b": {"higher_means": "negative"},
                "base_x": {"higher_means": "negative", "role": "baseline"},
                "base_y": {"higher_means": "positive", "role": "baseline"},
            },
            "labels": {"source": "judged", "positive": "failure"},
            "groups": GROUPS,
            "decision_rules": {
                "rw": {
                    "kind": "regime_wins",
                    "candidates": CANDIDATES,
                    "baselines": BASELINES,
                    "margin": 0.02,
                    "ci": {
                        "method": "paired_bootstrap",
                        "level": 0.95,
                        "resamples": resamples,
                        "seed": seed,
                    },
                    "verdicts": {
                        "PROVEN": {"min_wins": 4, "require_any_of": ["group5", "group6"]},
                        "PARTIAL": {"min_wins": 1},
                        "DISPROVEN": {"max_wins": 0},
                    },
                }
            },
        }
    )


def make_rows(seed: int) -> list[tuple[str, str, int, str, float]]:
    """Long rows; base_y is an integer 0..10 rating (many ties); cand_b and base_x are
    confidences (high = negative class), stored raw as a runner would."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in GROUPS:
        labels = np.r_[np.ones(N_POS, dtype=int), np.zeros(N_NEG, dtype=int)]
        latent = rng.normal(size=labels.size) + 0.9 * labels
        raw = {
            "cand_a": latent + 0.6 * rng.normal(size=labels.size),
            "cand_b": -(latent + 1.0 * rng.normal(size=labels.size)),
            "base_x": -(rng.normal(size=labels.size) + 0.5 * labels),
            "base_y": np.clip(
                np.round(2.0 * (latent + 1.2 * rng.normal(size=labels.size)) + 5), 0, 10
            ),
        }
        for i, lab in enumerate(labels):
            for s in SIGNALS:
                rows.append((g, f"{g}-{i:03d}", int(lab), s, float(raw[s][i])))
    return rows


def oriented(rows: list, group: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-signal oriented scores and labels of one group, items sorted (the engine's order)."""
    sign = {"cand_a": 1.0, "cand_b": -1.0, "base_x": -1.0, "base_y": 1.0}
    items = sorted({r[1] for r in rows if r[0] == group})
    idx = {it: k for k, it in enumerate(items)}
    labels = np.zeros(len(items), dtype=int)
    scores = {s: np.zeros(len(items)) for s in SIGNALS}
    for g, it, lab, s, v in rows:
        if g == group:
            labels[idx[it]] = lab
            scores[s][idx[it]] = sign[s] * v
    return scores, labels


def run_ours(protocol: Protocol, rows: list, engine: int = 1) -> dict:
    src = rules.SourceData.from_rows(rows, name="bench")
    return rules.evaluate(protocol, rules.Dataset({None: src}), engine=engine)


def _auroc_rows(labels: np.ndarray, scores: np.ndarray, axis: int) -> np.ndarray:
    ranks = scipy.stats.rankdata(scores, axis=axis)
    n1 = labels.sum(axis=axis)
    n0 = labels.shape[axis] - n1
    return ((ranks * labels).sum(axis=axis) - n1 * (n1 + 1) / 2.0) / (n1 * n0)


def run_scipy(rows: list, seed: int) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for i, g in enumerate(GROUPS):
        scores, labels = oriented(rows, g)
        full = {s: roc_auc_score(labels, scores[s]) for s in BASELINES}
        best = max(BASELINES, key=lambda s: full[s])

        def statistic(lab, ca, cb, bb, axis=-1):
            ref = _auroc_rows(lab, bb, axis)
            return np.stack([_auroc_rows(lab, ca, axis) - ref, _auroc_rows(lab, cb, axis) - ref])

        res = scipy.stats.bootstrap(
            (labels.astype(float), scores["cand_a"], scores["cand_b"], scores[best]),
            statistic,
            paired=True,
            vectorized=True,
            n_resamples=RESAMPLES,
            method="percentile",
            confidence_level=0.95,
            rng=np.random.default_rng(seed + i),
        )
        ci = res.confidence_interval
        out[g] = [(float(ci.low[j]), float(ci.high[j])) for j in range(2)]
    return out


def run_sklearn_slice(rows: list, n_slice: int, seed: int) -> tuple[float, float]:
    """Time a roc_auc_score loop over ``n_slice`` of the engine's resamples per group; return
    (seconds, max |engine CI - sklearn-loop CI|) with the engine run at ``n_slice`` resamples."""
    rngs = stats.derive_group_rngs(seed, GROUPS)
    per_group = {}
    t0 = time.perf_counter()
    for g in GROUPS:
        scores, labels = oriented(rows, g)
        pos_rows, neg_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
        pidx, nidx = stats.stratified_resample_indices(N_POS, N_NEG, n_slice, rngs[g])
        boots = np.empty((len(SIGNALS), n_slice))
        for b in range(n_slice):
            sel = np.r_[pos_rows[pidx[b]], neg_rows[nidx[b]]]
            for k, s in enumerate(SIGNALS):
                boots[k, b] = roc_auc_score(labels[sel], scores[s][sel])
        per_group[g] = (scores, labels, boots)
    elapsed = time.perf_counter() - t0
    ours = run_ours(make_protocol(resamples=n_slice, seed=seed), rows)["hypotheses"][0]
    worst = 0.0
    for row in ours["groups"]:
        scores, labels, boots = per_group[row["group"]]
        full = {s: roc_auc_score(labels, scores[s]) for s in BASELINES}
        best = BASELINES.index(max(BASELINES, key=lambda s: full[s]))
        dist = boots[SIGNALS.index(row["candidate"])] - boots[2 + best]
        lo, hi = np.percentile(dist, [2.5, 97.5])
        worst = max(worst, abs(lo - row["ci_low"]), abs(hi - row["ci_high"]))
    return elapsed, worst


def floor_kernel(
    groups: list[tuple[np.ndarray, np.ndarray, int]], seed: int, resamples: int = RESAMPLES
) -> list[np.ndarray]:
    """The floor (module docstring): per group ``(pos (4, n_pos), neg (4, n_neg), best)`` with
    oriented scores (signals in SIGNALS order, best = index of the best baseline), the (2, 2)
    percentile CIs [candidate][low, high] of candidate - best baseline."""
    out = []
    for i, (pos, neg, best) in enumerate(groups):
        rng = np.random.default_rng(seed + i)
        n_pos, n_neg = pos.shape[1], neg.shape[1]
        c2 = 2.0 * (pos[:, :, None] > neg[:, None, :]) + (pos[:, :, None] == neg[:, None, :])
        c2 = np.ascontiguousarray(c2.astype(np.float32).transpose(1, 0, 2)).reshape(n_pos, -1)
        ip = rng.integers(0, n_pos, (resamples, n_pos), dtype=np.int16)
        iq = rng.integers(0, n_neg, (resamples, n_neg), dtype=np.int16)
        rows = np.arange(resamples)[:, None]
        wp = np.bincount((ip + rows * n_pos).ravel(), minlength=resamples * n_pos)
        wq = np.bincount((iq + rows * n_neg).ravel(), minlength=resamples * n_neg)
        wp = wp.reshape(resamples, n_pos).astype(np.float32)
        wq = wq.reshape(resamples, n_neg).astype(np.float32)
        part = (wp @ c2).reshape(resamples, len(SIGNALS), n_neg)
        auc = np.einsum("bsj,bj->sb", part, wq) / (2.0 * n_pos * n_neg)
        delta = auc[:2] - auc[2 + best]
        out.append(np.percentile(delta, [2.5, 97.5], axis=-1).T)
    return out


def floor_inputs(rows: list) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """The floor's given inputs: per group the oriented score matrices and the best baseline."""
    groups = []
    for g in GROUPS:
        scores, labels = oriented(rows, g)
        mat = np.stack([scores[s] for s in SIGNALS])
        full = [roc_auc_score(labels, scores[s]) for s in BASELINES]
        groups.append((mat[:, labels == 1], mat[:, labels == 0], int(np.argmax(full))))
    return groups


def timed_round_robin(
    fns: dict[str, Callable[[], object]], repeats: dict[str, int], clock: Callable[[], float]
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Time every ``fns[name]`` ``repeats[name]`` times, interleaved (round r runs each function
    that still has repeats left), so a change of machine load hits all of them alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    results: dict[str, object] = {}
    for r in range(max(repeats.values())):
        for name, fn in fns.items():
            if r < repeats[name]:
                t0 = clock()
                results[name] = fn()
                times[name].append(clock() - t0)
    return times, results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs of ours (median shown)")
    ap.add_argument("--scipy-repeats", type=int, default=3)
    ap.add_argument("--sklearn-slice", type=int, default=100, help="resamples per group")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: process_time (steadier on a loaded machine)",
    )
    args = ap.parse_args()

    protocol = make_protocol(seed=args.seed)
    rows = make_rows(args.seed)
    print(
        "verdict engine benchmark: regime_wins, 7 groups x 30 pos / 30 neg, 2 candidates + "
        f"2 baselines, {RESAMPLES:,} stratified paired resamples per group"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"scikit-learn {sklearn.__version__}, cpus {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}, clock {args.clock}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; timings interleaved"
    )
    given = floor_inputs(rows)
    run_ours(protocol, rows)  # warm-up
    run_ours(protocol, rows, engine=2)
    run_ours(protocol, rows, engine=3)
    floor_kernel(given, args.seed)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times, results = timed_round_robin(
        {
            "v1": lambda: run_ours(protocol, rows),
            "v2": lambda: run_ours(protocol, rows, engine=2),
            "v3": lambda: run_ours(protocol, rows, engine=3),
            "floor": lambda: floor_kernel(given, args.seed),
            "scipy": lambda: run_scipy(rows, args.seed),
        },
        {"v1": args.repeats, "v2": args.repeats, "v3": args.repeats, "floor": args.repeats}
        | {"scipy": args.scipy_repeats},
        clock,
    )
    ours_t, v2_t, v3_t, floor_t, scipy_t = (times[k] for k in ("v1", "v2", "v3", "floor", "scipy"))
    ours, ours2, ours3, floor_ci, sp = (results[k] for k in ("v1", "v2", "v3", "floor", "scipy"))
    sk_t, sk_err = run_sklearn_slice(rows, args.sklearn_slice, args.seed)
    sk_scaled = sk_t * RESAMPLES / args.sklearn_slice
    ours_med, scipy_med = statistics.median(ours_t), statistics.median(scipy_t)
    v2_med, floor_med = statistics.median(v2_t), statistics.median(floor_t)
    v3_med = statistics.median(v3_t)
    h1 = ours["hypotheses"][0]  # type: ignore[index]
    h2 = ours2["hypotheses"][0]  # type: ignore[index]
    h3 = ours3["hypotheses"][0]  # type: ignore[index]
    print()
    print(
        f"ours engine 1 rules.evaluate (whole verdict, in-memory rows): median {ours_med:.4f} s "
        f"(min {min(ours_t):.4f}, max {max(ours_t):.4f}, n={args.repeats})"
    )
    print(
        f"ours engine 2 rules.evaluate (whole verdict, in-memory rows): median {v2_med:.4f} s "
        f"(min {min(v2_t):.4f}, max {max(v2_t):.4f}, n={args.repeats})"
    )
    print(
        f"ours engine 3 rules.evaluate (whole verdict, in-memory rows): median {v3_med:.4f} s "
        f"(min {min(v3_t):.4f}, max {max(v3_t):.4f}, n={args.repeats})"
    )
    print(
        f"floor  plain numpy loop-free kernel (the 14 CIs only): median {floor_med:.4f} s "
        f"(min {min(floor_t):.4f}, max {max(floor_t):.4f}, n={args.repeats})"
    )
    print(
        "scipy.stats.bootstrap(paired=True, vectorized=True, percentile; NOT stratified): "
        f"median {scipy_med:.3f} s (n={args.scipy_repeats})"
    )
    print(
        f"sklearn roc_auc_score loop: {sk_t:.3f} s for {args.sklearn_slice} resamples x 7 groups "
        f"-> scaled to {RESAMPLES:,}: {sk_scaled:.1f} s"
    )
    print()
    print(
        f"speedup vs scipy.stats.bootstrap: engine 1 {scipy_med / ours_med:.1f}x, engine 2 "
        f"{scipy_med / v2_med:.1f}x, engine 3 {scipy_med / v3_med:.1f}x, floor "
        f"{scipy_med / floor_med:.1f}x   (goal: engine 3 >= 30x)"
    )
    print(
        f"time / floor:                     engine 1 {ours_med / floor_med:.2f}x, engine 2 "
        f"{v2_med / floor_med:.2f}x, engine 3 {v3_med / floor_med:.2f}x   (goal: engine 3 <= 2x)"
    )
    print(f"speedup vs sklearn loop:          engine 1 {sk_scaled / ours_med:.0f}x")
    slowest = max(ours_med, v2_med, v3_med)
    print(f"ours under 0.3 s:                 {'yes' if slowest < 0.3 else 'NO'}")
    print()
    print(f"verdict engine 1 {h1['verdict']}: {h1['why']}")
    print(f"verdict engine 2 {h2['verdict']}: {h2['why']}")
    print(f"verdict engine 3 {h3['verdict']}: {h3['why']}")
    for name, h in (("engine 2", h2), ("engine 3", h3)):
        worst = max(
            abs(a[k] - b[k])
            for a, b in zip(h1["groups"], h["groups"], strict=True)
            for k in ("ci_low", "ci_high")
        )
        print(f"check: max |CI bound engine 1 - {name}| over 14 deltas = {worst:.4f} (Monte Carlo)")
    fl = max(
        abs(r[k] - floor_ci[GROUPS.index(r["group"])][CANDIDATES.index(r["candidate"])][j])  # type: ignore[index]
        for r in h3["groups"]
        for j, k in enumerate(("ci_low", "ci_high"))
    )
    print(f"check: max |CI bound engine 3 - floor| over 14 deltas = {fl:.4f} (Monte Carlo)")
    print(
        f"check: max |engine CI - sklearn-loop CI| at {args.sklearn_slice} resamples = {sk_err:.2e}"
    )
    diffs = [
        max(
            abs(r["ci_low"] - sp[r["group"]][CANDIDATES.index(r["candidate"])][0]),  # type: ignore[index]
            abs(r["ci_high"] - sp[r["group"]][CANDIDATES.index(r["candidate"])][1]),
        )  # type: ignore[index]
        for r in h1["groups"]
    ]
    print(
        f"check: max |CI bound ours - scipy| over 14 deltas = {max(diffs):.4f} (stratified vs "
        "unstratified resampling and Monte Carlo error)"
    )


if __name__ == "__main__":
    main()
