"""What can be known about a ``poe_card`` job before it runs (no torch needed): its params and the
layout of an ``hf:`` directory of checkpoints (:func:`hf_checkpoint_dirs`).

:func:`card_problems` returns one message per bad field, each naming the field, what it holds and
what is expected. The sign-check (``docket protocol signcheck`` / ``freeze``) refuses such a
protocol with exit code 2 through :func:`docketml.runners.jobs.preflight.param_checks`, and the
job checks the same rules again when it starts, when the number of stages ``K`` is known from the
checkpoint.

Rules
    * ``probes``: ``None`` (every probe that applies) or a non-empty list of distinct names from
      :data:`PROBES`; ``diversity`` and ``beta`` need stage heads, so an ``hf:`` job without a
      ``heads`` dependency may not ask for them; ``wand`` needs ``K >= 2`` when ``K`` is known.
    * ``betas``: a non-empty list of finite numbers.
    * ``beta_stages``: ``None`` (every stage) or a non-empty list of distinct stage indices in
      ``0..K-1``.
    * ``wand_quantile`` in the open interval (0, 1); ``wand_safety`` > 0.
    * ``calib_bytes``, ``eval_bytes``, ``seq_len``, ``batch_size``: positive integers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..models.hf import HFModelError

PROBES = ("wand", "crossover", "diversity", "beta")
HEAD_PROBES = frozenset({"diversity", "beta"})
POSITIVE_INTS = ("calib_bytes", "eval_bytes", "seq_len", "batch_size")
_STEP_DIR = re.compile(r"^(?:step|checkpoint)-(\d+)$")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def default_probes(has_heads: bool) -> list[str]:
    """Every probe when the stages have heads, else the ones that need none."""
    return [p for p in PROBES if has_heads or p not in HEAD_PROBES]


def card_problems(
    params: Mapping[str, Any], n_stages: int | None, has_heads: bool = True
) -> list[str]:
    """Problems of a ``poe_card`` job's ``params`` (module doc); ``n_stages`` = ``K`` if known,
    ``has_heads`` = whether the stages carry additive heads (built-in: always)."""
    out: list[str] = []
    probes = params.get("probes")
    if probes is not None:
        ok = (
            isinstance(probes, list)
            and probes
            and all(isinstance(p, str) for p in probes)
            and len(set(probes)) == len(probes)
        )
        unknown = [p for p in probes if p not in PROBES] if ok else []
        if not ok or unknown:
            out.append(
                f"field 'probes' is {probes!r}; expected a non-empty list of distinct names from "
                f"{list(PROBES)}"
            )
            probes = None
        elif not has_heads and HEAD_PROBES & set(probes):
            wanted = sorted(HEAD_PROBES & set(probes))
            out.append(
                f"field 'probes' asks for {wanted}, which measure the additive stage heads; an hf: "
                "job without field 'heads' (a poe_train_heads dependency) has none"
            )
    chosen = probes if probes is not None else default_probes(has_heads)
    if n_stages is not None and n_stages < 2 and "wand" in chosen:
        out.append(f"field 'probes': 'wand' needs at least 2 stages, the model has {n_stages}")
    betas = params.get("betas")
    if "betas" in params and not (
        isinstance(betas, list) and betas and all(_is_number(b) for b in betas)
    ):
        out.append(
            f"field 'betas' is {betas!r}; expected a non-empty list of finite numbers "
            "(beta = 0 ablates the stage's delta, 1 is the trained model), e.g. [0, 0.5, 2]"
        )
    stages = params.get("beta_stages")
    if stages is not None:
        hi = f"0..{n_stages - 1}" if n_stages is not None else "0..K-1"
        ok = (
            isinstance(stages, list)
            and stages
            and all(_is_int(s) and s >= 0 for s in stages)
            and len(set(stages)) == len(stages)
        )
        if ok and n_stages is not None:
            ok = all(s < n_stages for s in stages)
        if not ok:
            out.append(
                f"field 'beta_stages' is {stages!r}; expected a non-empty list of distinct stage "
                f"indices in {hi} (the model has {n_stages or 'K'} stages)"
            )
    q = params.get("wand_quantile")
    if "wand_quantile" in params and not (_is_number(q) and 0 < q < 1):
        out.append(f"field 'wand_quantile' is {q!r}; expected a number in (0, 1), e.g. 0.99")
    safety = params.get("wand_safety")
    if "wand_safety" in params and not (_is_number(safety) and safety > 0):
        out.append(f"field 'wand_safety' is {safety!r}; expected a number > 0, e.g. 1.0")
    for name in POSITIVE_INTS:
        v = params.get(name)
        if name in params and not (_is_int(v) and v > 0):
            out.append(f"field {name!r} is {v!r}; expected a positive integer")
    return out


def hf_checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """``(step, dir)`` of the hf checkpoints under ``root`` (module doc)."""
    if (root / "config.json").is_file():
        m = _STEP_DIR.match(root.name)
        return [(int(m.group(1)) if m else 0, root)]
    if not root.is_dir():
        raise HFModelError(f"hf:{root}: no such directory")
    found = sorted(
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / "config.json").is_file()
    )
    if not found:
        raise HFModelError(
            f"hf:{root}: neither a checkpoint (config.json) nor a directory of step-N / "
            "checkpoint-N checkpoints"
        )
    steps = [step for step, _ in found]
    twice = sorted({step for step in steps if steps.count(step) > 1})
    if twice:
        raise HFModelError(f"hf:{root}: more than one checkpoint directory for steps {twice}")
    return found
