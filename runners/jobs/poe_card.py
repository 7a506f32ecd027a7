"""``poe_card``: the PoE card's numeric probes on every checkpoint, for the built-in PoE model and
for ``hf:`` decoders with stage heads (math: :mod:`docketml.runners.models.poe_analysis`).

Checkpoints (one set of metrics per checkpoint, each row with ``step``, so ``docket trajectory``
shows them)
    * built-in: every ``checkpoints/step-XXXXX.pt`` of the ``poe_train`` dependency (as
      ``poe_trajectory``), or the one file named by knob ``checkpoint`` (its step from the file);
    * ``model: "hf:PATH"``: ``PATH`` itself when it holds ``config.json`` (step = N when the
      directory is named ``step-N`` or ``checkpoint-N``, else 0), otherwise every sub-directory
      ``step-N`` / ``checkpoint-N`` holding ``config.json``, by step. ``boundaries`` cut each into
      stages. ``heads: <job>`` (a ``poe_train_heads`` dependency) loads its stage heads (they are
      bound to one checkpoint by sha256, so ``PATH`` must then be that single checkpoint); without
      heads every head is zero and only ``wand`` and ``crossover`` apply.

Text
    The built-in held-out split (``runners/jobs/poe.py``): its first ``calib_bytes`` bytes are the
    calibration slice (WAND bounds only), the next ``eval_bytes`` the evaluation slice (every other
    number). Built-in windows: ``seq_len`` bytes, input ``[BOS] + w[:-1]``, targets ``w`` (a shorter
    tail is dropped); ``hf:`` windows as ``poe_probe`` on hf (``runners/jobs/hf_poe.py``), bits per
    byte over the slice's predicted UTF-8 bytes.

Probes (knob ``probes``, default every one that applies) and their metrics
    * ``wand``: ``wand_bound{k}`` (the ``wand_quantile`` quantile, default p99, of the boundary
      ``k -> k+1`` range on the calibration slice), ``wand_coverage{k}`` (share of evaluation
      positions within the bound), ``wand_mean_stages`` and ``wand_agreement`` (adaptive depth with
      ``wand_safety``, agreement with the full PoE's top-1);
    * ``crossover``: ``bpb_full``, ``bpb_deepest`` (stage ``K-1`` alone) and ``crossover_gap`` =
      their difference; ``extra.crossover_steps`` lists the steps where the gap changes sign, and
      the step-less metric ``crossover_sign_changes`` counts them;
    * ``diversity``: ``head_cos{i}_{j}`` for every pair ``i < j``, ``head_unique{k}`` for
      ``k >= 1`` and ``head_unique_total``;
    * ``beta``: ``bpb_beta{b}_stage{k}`` for every ``b`` in ``betas`` and ``k`` in ``beta_stages``
      (default all), ``bpb_beta{b}_all`` (every stage scaled), and ``ablation_dbpb_stage{k}`` =
      ``bpb_beta0_stage{k} - bpb_full`` when 0 is in ``betas``. ``b`` is written with ``p`` for the
      decimal point and ``m`` for a minus sign (``0.5`` -> ``0p5``, ``-1`` -> ``m1``).

Params are checked by :mod:`~docketml.runners.jobs.poe_card_params` (also at sign-check time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..context import JobContext, JobFn, JobResult, MetricValue
from ..models.hf import HFModelError, hf_path, is_hf_ref
from ..models.hf_stages import HFStages
from ..models.poe import BOS, PoELM, poe_log_probs, rms_norm
from ..models.poe_analysis import (
    cumulative_poe,
    head_diversity,
    quantile,
    scaled_logits,
    sign_changes,
    stage_nll,
    target_nll,
    top2_margin,
    wand_exit,
    wand_ranges,
)
from ..models.poe_decode import bits_per_byte
from .hf_poe import load_stages, stage_spec, token_batches, token_ids
from .poe import _checkpoint_path, _corpus_split, _load, list_checkpoints
from .poe_card_params import card_problems, default_probes, hf_checkpoint_dirs

STRUCTURAL_KEYS = frozenset({"model", "checkpoint", "boundaries", "heads"})
DEFAULTS: dict[str, Any] = {
    "checkpoint": None,
    "input": None,
    "model": None,
    "boundaries": None,
    "heads": None,
    "trust_remote_code": False,
    "probes": None,
    "calib_bytes": 8192,
    "eval_bytes": 8192,
    "seq_len": 128,
    "batch_size": 16,
    "wand_quantile": 0.99,
    "wand_safety": 1.0,
    "betas": [0.0, 0.5, 2.0],
    "beta_stages": None,
}

Batch = tuple[Tensor, Tensor]  # inputs (B, T), targets (B, T)
PartsFn = Callable[[Tensor], tuple[Tensor, Tensor]]  # inputs -> (base, delta), each (K, B, T, V)


def beta_name(beta: float) -> str:
    """``beta`` as metric names write it: ``0.5`` -> ``0p5``, ``-1`` -> ``m1``, ``2.0`` -> ``2``."""
    return f"{float(beta):g}".replace("-", "m").replace(".", "p")


@dataclass
class Stages:
    """One checkpoint as the probes see it: ``K``, its head weights and the logit parts."""

    step: int
    n_stages: int
    head_weights: list[Tensor]
    parts: PartsFn
    device: torch.device
    label: str
    hf: HFStages | None = None  # the hf stages (tokenizer, config), None for the built-in model


# ------------------------------------------------------------------------------ built-in model


def builtin_parts(model: PoELM) -> PartsFn:
    """``(base, delta)`` of the built-in model: per stage ``h = rms_norm(x_k)``,
    ``base_k = lm_head(h)``, ``delta_k = stage_heads[k](h)`` (their sum is ``run_stages``'s
    logits)."""

    def parts(inputs: Tensor) -> tuple[Tensor, Tensor]:
        x = model.embed(inputs)
        base, delta = [], []
        for k in range(model.cfg.n_stages):
            x, _ = model.run_stages(x, k, k + 1)
            h = rms_norm(x, model.cfg.norm_eps)
            base.append(model.lm_head(h))
            delta.append(model.stage_heads[k](h))
        return torch.stack(base), torch.stack(delta)

    return parts


def byte_batches(data: bytes, seq_len: int, batch_size: int, device: Any) -> list[Batch]:
    """Built-in windows (module doc) of ``data``, ``batch_size`` windows per batch."""
    n = len(data) // seq_len
    if n == 0:
        raise ValueError(f"slice of {len(data)} bytes is shorter than seq_len={seq_len}")
    windows = torch.tensor(list(data[: n * seq_len]), dtype=torch.long).view(n, seq_len)
    out = []
    for lo in range(0, n, batch_size):
        targets = windows[lo : lo + batch_size].to(device)
        inputs = torch.cat([torch.full_like(targets[:, :1], BOS), targets[:, :-1]], dim=1)
        out.append((inputs, targets))
    return out


# ------------------------------------------------------------------------------------ hf stages


def hf_parts(stages: HFStages) -> PartsFn:
    """``(base, delta)`` of hf stages: ``base_k = lm_head(x_k)``, ``delta_k = heads[k](x_k)``."""

    def parts(inputs: Tensor) -> tuple[Tensor, Tensor]:
        states, _ = stages.stage_states(inputs)
        base = torch.stack([stages.lm_head(x) for x in states])
        delta = torch.stack([head(x) for x, head in zip(states, stages.heads, strict=True)])
        return base, delta

    return parts


# ------------------------------------------------------------------------------------- analysis


def _slice(ctx: JobContext) -> tuple[bytes, bytes]:
    """``(calibration, evaluation)`` bytes of the held-out split (module doc)."""
    knobs = ctx.knobs
    _, held_out = _corpus_split()
    n_cal, n_eval = int(knobs.get("calib_bytes")), int(knobs.get("eval_bytes"))
    if n_cal + n_eval > len(held_out):
        raise ValueError(
            f"job {ctx.job!r}: fields 'calib_bytes' + 'eval_bytes' = {n_cal + n_eval} exceed the "
            f"{len(held_out)}-byte held-out split"
        )
    knobs.fire("eval_bytes")
    knobs.fire("calib_bytes")  # also where the evaluation slice starts
    return held_out[:n_cal], held_out[n_cal : n_cal + n_eval]


@torch.inference_mode()
def card_metrics(
    st: Stages,
    calib: list[Batch],
    evaluation: list[Batch],
    probes: list[str],
    n_bytes: int | None,
    quantile_q: float,
    safety: float,
    betas: list[float],
    beta_stages: list[int],
) -> dict[str, float]:
    """Every metric of the chosen ``probes`` for one checkpoint (module doc)."""
    out: dict[str, float] = {}
    want_wand = "wand" in probes
    want_beta = "beta" in probes
    sweeps: list[tuple[str, float, int | None]] = []
    if want_beta:
        for b in betas:
            sweeps += [(f"bpb_beta{beta_name(b)}_stage{k}", b, k) for k in beta_stages]
            sweeps.append((f"bpb_beta{beta_name(b)}_all", b, None))
    cal_ranges: list[Tensor] = []
    if want_wand:
        for inputs, _ in calib:
            base, delta = st.parts(inputs)
            cum = cumulative_poe((base + delta).float().flatten(1, 2))
            cal_ranges.append(wand_ranges(cum).cpu())
    nll_full, nll_deep, ranges, margins, tops = [], [], [], [], []
    nll_sweep: dict[str, list[Tensor]] = {name: [] for name, _, _ in sweeps}
    for inputs, targets in evaluation:
        base, delta = st.parts(inputs)
        base, delta = base.float().flatten(1, 2), delta.float().flatten(1, 2)
        flat_t = targets.reshape(-1)
        logits = base + delta
        cum = cumulative_poe(logits)
        nll_full.append(target_nll(cum[-1], flat_t).cpu())
        nll_deep.append(stage_nll(logits[-1:], flat_t)[0].cpu())
        if want_wand:
            ranges.append(wand_ranges(cum).cpu())
            m, t = top2_margin(cum)
            margins.append(m.cpu())
            tops.append(t.cpu())
        for name, b, k in sweeps:
            lp = poe_log_probs(scaled_logits(base, delta, b, k))
            nll_sweep[name].append(target_nll(lp, flat_t).cpu())
    bpb_full = bits_per_byte(torch.cat(nll_full), n_bytes)
    if "crossover" in probes or want_beta:
        out["bpb_full"] = bpb_full
    if "crossover" in probes:
        out["bpb_deepest"] = bits_per_byte(torch.cat(nll_deep), n_bytes)
        out["crossover_gap"] = bpb_full - out["bpb_deepest"]
    if want_wand:
        bounds = quantile(torch.cat(cal_ranges, dim=1), quantile_q)
        eval_ranges = torch.cat(ranges, dim=1)
        cover = (eval_ranges.double() <= bounds.view(-1, 1)).double().mean(dim=1)
        for k in range(bounds.numel()):
            out[f"wand_bound{k}"] = float(bounds[k])
            out[f"wand_coverage{k}"] = float(cover[k])
        ex = wand_exit(torch.cat(margins, dim=1), torch.cat(tops, dim=1), bounds, safety)
        out["wand_mean_stages"] = float(ex.stages_used.double().mean())
        out["wand_agreement"] = float(ex.agree.double().mean())
    if "diversity" in probes:
        div = head_diversity(st.head_weights)
        for (i, j), c in div.cos.items():
            out[f"head_cos{i}_{j}"] = c
        for k in range(1, len(div.unique)):
            out[f"head_unique{k}"] = div.unique[k]
        out["head_unique_total"] = div.unique_total
    for name, b, k in sweeps:
        out[name] = bits_per_byte(torch.cat(nll_sweep[name]), n_bytes)
        if b == 0 and k is not None:
            out[f"ablation_dbpb_stage{k}"] = out[name] - bpb_full
    return out


# ----------------------------------------------------------------------------------------- job


def _builtin_checkpoints(ctx: JobContext) -> list[Callable[[], Stages]]:
    knobs = ctx.knobs
    path = _checkpoint_path(ctx)
    if knobs.get("checkpoint") is not None or not (path.parent / "checkpoints").is_dir():
        paths = [path]
    else:
        paths = [p for _, p in list_checkpoints(path)]

    def loader(p: Path) -> Stages:
        model, step = _load(ctx, p)
        return Stages(
            step=step,
            n_stages=model.cfg.n_stages,
            head_weights=[h.weight for h in model.stage_heads],
            parts=builtin_parts(model),
            device=model.lm_head.weight.device,
            label=str(p),
        )

    return [lambda p=p: loader(p) for p in paths]


def _hf_checkpoints(ctx: JobContext) -> list[Callable[[], Stages]]:
    where = f"job {ctx.job!r}"
    model, _, heads_path = stage_spec(ctx)
    dirs = hf_checkpoint_dirs(hf_path(model))
    if heads_path is not None and len(dirs) > 1:
        raise HFModelError(
            f"{where}: field 'heads' binds stage heads to one checkpoint; field 'model' names a "
            f"directory of {len(dirs)} checkpoints"
        )

    def loader(step: int, path: Path) -> Stages:
        stages = load_stages(ctx, path)
        return Stages(
            step=step,
            n_stages=stages.n_stages,
            head_weights=[h.weight for h in stages.heads],
            parts=hf_parts(stages),
            device=stages.device,
            label=f"hf:{path}",
            hf=stages,
        )

    return [lambda s=s, p=p: loader(s, p) for s, p in dirs]


def run_card(ctx: JobContext) -> JobResult:
    """``poe_card``: the card's numeric probes on every checkpoint (module doc)."""
    knobs = ctx.knobs
    knobs.set_defaults(DEFAULTS)
    is_hf = is_hf_ref(ctx.params.get("model")) or ctx.params.get("heads") is not None
    has_heads = not is_hf or ctx.params.get("heads") is not None
    bad_param = HFModelError if is_hf else ValueError
    problems = card_problems(ctx.params, None, has_heads)
    if problems:
        raise bad_param(f"job {ctx.job!r}: {problems[0]}")
    probes = list(knobs.get("probes") or default_probes(has_heads))
    knobs.fire("probes")
    calib_text, eval_text = _slice(ctx)
    seq_len, batch_size = int(knobs.get("seq_len")), int(knobs.get("batch_size"))
    betas = [float(b) for b in knobs.get("betas")]
    q, safety = float(knobs.get("wand_quantile")), float(knobs.get("wand_safety"))
    source = _hf_checkpoints(ctx) if is_hf else _builtin_checkpoints(ctx)
    metrics: list[MetricValue] = []
    rows: list[dict[str, Any]] = []
    gaps: list[tuple[int, float]] = []
    for done, load in enumerate(source):
        st = load()
        problems = card_problems(ctx.params, st.n_stages, has_heads)
        if problems:
            raise bad_param(f"job {ctx.job!r}: {problems[0]}")
        stages_sel = knobs.get("beta_stages")
        beta_stages = list(range(st.n_stages)) if stages_sel is None else list(stages_sel)
        if st.hf is not None:
            hf_stages = st.hf
            cal_ids, _ = token_ids(hf_stages, calib_text.decode("utf-8", "replace"))
            ev_ids, n_bytes = token_ids(hf_stages, eval_text.decode("utf-8", "replace"))
            limit = int(getattr(hf_stages.hf.config, "max_position_embeddings", 2048))
            if seq_len > limit:
                raise HFModelError(f"job {ctx.job!r}: field 'seq_len' {seq_len} exceeds {limit}")
            calib = token_batches(cal_ids, seq_len, batch_size, st.device)
            evaluation = token_batches(ev_ids, seq_len, batch_size, st.device)
            n_bytes_or_none: int | None = n_bytes
        else:
            calib = byte_batches(calib_text, seq_len, batch_size, st.device)
            evaluation = byte_batches(eval_text, seq_len, batch_size, st.device)
            n_bytes_or_none = None
        knobs.fire("seq_len")
        knobs.fire("batch_size")
        if "wand" in probes:
            knobs.fire("wand_quantile")
            knobs.fire("wand_safety")
        if "beta" in probes:
            knobs.fire("betas")
            knobs.fire("beta_stages")
        values = card_metrics(
            st, calib, evaluation, probes, n_bytes_or_none, q, safety, betas, beta_stages
        )
        metrics.extend(MetricValue(name, v, step=st.step) for name, v in values.items())
        if "crossover_gap" in values:
            gaps.append((st.step, values["crossover_gap"]))
        rows.append({"step": st.step, "checkpoint": st.label, "n_stages": st.n_stages})
        ctx.progress(done + 1, len(source), "poe_card")
    extra: dict[str, Any] = {"checkpoints": rows, "probes": probes}
    if gaps:
        changes = sign_changes([s for s, _ in gaps], [g for _, g in gaps])
        extra["crossover_steps"] = changes
        metrics.append(MetricValue("crossover_sign_changes", float(len(changes))))
    return JobResult(metrics=metrics, extra=extra)


JOBS: dict[str, JobFn] = {"poe_card": run_card}
