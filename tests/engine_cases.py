"""Verdict-engine cases whose numbers are pinned per engine version in ``tests/fixtures/``.

``engine_v1.json`` was computed by ``python tests/engine_cases.py 4c5515f`` on main at commit
4c5515f, before engine versions existed; ``engine_v2.json`` by ``python tests/engine_cases.py
b281693 2`` at commit b281693, before engine 3 and the changes that came with it.
``tests/test_engine_versions.py`` checks that every pinned engine still gives exactly (bit for
bit) its numbers and that each later engine agrees with them within Monte Carlo error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from docketml.ledger.verdict.rules import Dataset, SourceData, evaluate
from docketml.protocols.schema import Protocol

FIXTURES = {v: Path(__file__).parent / "fixtures" / f"engine_v{v}.json" for v in (1, 2)}
FIXTURE = FIXTURES[1]
GROUPS = ["g1", "g2", "g3"]
SIGN = {"c1": 1.0, "c2": -1.0, "b1": -1.0, "b2": 1.0}
EFFECT = {"c1": 1.4, "c2": 0.9, "b1": 0.5, "b2": 0.6}


def protocol(resamples: int, seed: int = 11) -> Protocol:
    """Every bootstrapped rule kind: regime_wins (fixed and per_resample), threshold on a pooled
    AUROC and on a mean, non_inferiority paired (AUROC) and independent (mean)."""
    ci = {"method": "paired_bootstrap", "level": 0.95, "resamples": resamples, "seed": seed}
    verdicts = {
        "PROVEN": {"min_wins": 2},
        "PARTIAL": {"min_wins": 1},
        "DISPROVEN": {"max_wins": 0},
    }
    rw = {
        "kind": "regime_wins",
        "candidates": ["c1", "c2"],
        "baselines": ["b1", "b2"],
        "margin": 0.02,
        "ci": ci,
        "verdicts": verdicts,
    }
    rules = {
        "rw": rw,
        "rwp": {**rw, "best_baseline": "per_resample"},
        "auc": {"kind": "threshold", "statistic": "auroc", "signal": "c1", "bound": 0.7, "ci": ci},
        "mean": {"kind": "threshold", "statistic": "mean", "signal": "b2", "bound": 0.1, "ci": ci},
        "ni": {
            "kind": "non_inferiority",
            "statistic": "auroc",
            "signal": "c2",
            "candidate_job": "cand",
            "reference_job": "ref",
            "margin": 0.05,
            "ci": ci,
        },
        "nim": {
            "kind": "non_inferiority",
            "statistic": "mean",
            "signal": "c1",
            "candidate_job": "cand",
            "reference_job": "other",
            "margin": 0.2,
            "ci": ci,
        },
    }
    return Protocol.model_validate(
        {
            "docket": 1,
            "id": "engine-cases",
            "title": "engine cases",
            "hypotheses": [{"id": f"H_{r}", "statement": r, "rule": r} for r in rules],
            "signals": {
                "c1": {"higher_means": "positive"},
                "c2": {"higher_means": "negative"},
                "b1": {"higher_means": "negative", "role": "baseline"},
                "b2": {"higher_means": "positive", "role": "baseline"},
            },
            "labels": {"source": "judged", "positive": "failure"},
            "groups": GROUPS,
            "decision_rules": rules,
        }
    )


def rows(seed: int, n_pos: int, n_neg: int, shift: float = 0.0) -> list[tuple]:
    """Long rows: oriented score = N(0, 1) + effect * label (+ shift on c1), stored raw with the
    declared polarity; b2 is rounded to 0.5 steps so it has many ties."""
    rng = np.random.default_rng(seed)
    out = []
    for g in GROUPS:
        for k in range(n_pos + n_neg):
            lab = 1 if k < n_pos else 0
            for s, eff in EFFECT.items():
                v = rng.standard_normal() + eff * lab + (shift if s == "c1" else 0.0)
                if s == "b2":
                    v = round(2.0 * v) / 2.0
                out.append((g, f"{g}-{k:04d}", lab, s, SIGN[s] * v))
    return out


def dataset(n_pos: int, n_neg: int, seed: int = 5) -> Dataset:
    """Merged source (regime_wins, thresholds) and three jobs; ``cand``/``ref`` hold the same
    items (paired), ``other`` a different item count (independent)."""
    base = rows(seed, n_pos, n_neg)
    return Dataset(
        {
            None: SourceData.from_rows(base, name="merged"),
            "cand": SourceData.from_rows(base, name="cand"),
            "ref": SourceData.from_rows(rows(seed + 1, n_pos, n_neg), name="ref"),
            "other": SourceData.from_rows(rows(seed + 2, n_pos + 3, n_neg, 0.1), name="other"),
        }
    )


# (name, resamples, n_pos, n_neg): small groups take the pairwise kernel, 400 x 400 the rank one
CASES = [
    ("paper-size-10000", 10_000, 30, 30),
    ("unbalanced-700", 700, 17, 41),
    ("rank-path-200", 200, 400, 400),
]

NUMERIC = ("delta", "ci_low", "ci_high", "value", "difference", "auroc", "baseline_auroc")


def numbers(result: dict[str, Any]) -> dict[str, Any]:
    """Every verdict and every CI-bearing number of ``evaluate``'s result, keyed by hypothesis."""
    out: dict[str, Any] = {}
    for h in result["hypotheses"]:
        entry: dict[str, Any] = {"verdict": h["verdict"]}
        for key in NUMERIC:
            if h.get(key) is not None:
                entry[key] = float(h[key])
        entry["groups"] = [
            {k: float(r[k]) for k in NUMERIC if r.get(k) is not None} for r in h.get("groups", [])
        ]
        out[h["id"]] = entry
    return out


def run(case: tuple[str, int, int, int], **kwargs: Any) -> dict[str, Any]:
    _, resamples, n_pos, n_neg = case
    return numbers(evaluate(protocol(resamples), dataset(n_pos, n_neg), **kwargs))


if __name__ == "__main__":
    engine = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    fixture = {
        "computed_on": sys.argv[1] if len(sys.argv) > 1 else "unknown",
        "cases": {c[0]: run(c, engine=engine) for c in CASES},
    }
    FIXTURES[engine].write_text(json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURES[engine]}")
