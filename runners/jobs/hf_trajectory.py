"""``poe_routing`` and ``poe_trajectory`` on ``hf:`` decoders.

``poe_routing`` with ``model: "hf:PATH"`` + ``boundaries`` (or ``heads: <job>``)
    The ``poe_probe`` evaluation text and windows (``runners/jobs/hf_poe.py``); every predicted
    token is routed by stage 0's confidence (``routing_signal``: ``max_prob`` or ``margin``) and
    :func:`~docketml.runners.models.poe_decode.routing_at_cap` picks the largest routed fraction
    within the accuracy loss ``cap``; the cost model's ``d0`` is stage 0's depth fraction
    ``b_0 / num_hidden_layers``. Metrics as the built-in job.

``poe_trajectory`` with ``model: "hf:DIR"`` + ``boundaries`` (directory convention)
    The checkpoints ``poe_card`` reads (:func:`~docketml.runners.jobs.poe_card_params.
    hf_checkpoint_dirs`, one definition): ``DIR`` itself when it holds ``config.json`` (step
    ``N`` when it is named ``step-N`` / ``checkpoint-N``, else 0), otherwise every
    sub-directory ``step-N`` / ``checkpoint-N`` (``checkpoint-500`` as the transformers Trainer
    writes them) holding ``config.json``, the step being ``N``; other entries are ignored; two
    sub-directories with the same step, or none at all, are an error. Checkpoints
    run in step order, each with zero stage heads (plain early exit at the boundaries: heads are
    trained per checkpoint, so a heads file does not apply). Per checkpoint, at its step: the
    built-in trajectory's metrics (``bpb_full``, ``bpb_stage0``, ``acc_full``, ``acc_stage0``,
    ``alpha``, ``speedup``, ``cpu_speedup``, ``projected_speedup``, ``identical_rate``,
    ``routed_fraction``, ``routing_projected_speedup``) plus :func:`~docketml.runners.jobs.
    poe_concepts.checkpoint_probes` (KV identity, concepts). ``extra.checkpoints`` lists step,
    path and weight sha256 of each.
"""

from __future__ import annotations

from typing import Any

from ..context import JobContext, JobResult, MetricValue, Observation
from ..models.hf import HFModelError, hf_path
from .hf_poe import PROBE_DEFAULTS, SPEC_DEFAULTS, hf_eval_stats, hf_speculative, load_stages
from .poe import _ROUTE, _routing, trajectory_values
from .poe_card_params import hf_checkpoint_dirs
from .poe_concepts import TRAJECTORY_DEFAULTS, checkpoint_probes, hf_target

ROUTING_DEFAULTS: dict[str, Any] = {**PROBE_DEFAULTS, **_ROUTE}
TRAJECTORY_HF_DEFAULTS: dict[str, Any] = {
    **PROBE_DEFAULTS,
    **{k: v for k, v in SPEC_DEFAULTS.items() if k not in PROBE_DEFAULTS},
    "eval_bytes": 16384,
    "max_new_tokens": 48,
    "n_prompts": 8,
    **_ROUTE,
    **TRAJECTORY_DEFAULTS,
}


def routing_hf(ctx: JobContext) -> JobResult:
    """``poe_routing`` on ``hf:`` stages (module doc)."""
    ctx.knobs.set_defaults(ROUTING_DEFAULTS)
    stages = load_stages(ctx)
    stats, n_bytes = hf_eval_stats(ctx, stages)
    res = _routing(ctx, stages.depth_fraction(1), stats)
    metrics = [
        MetricValue("routed_fraction", res.routed_fraction),
        MetricValue("routing_projected_speedup", res.projected_speedup),
        MetricValue("acc_full", res.acc_full),
        MetricValue("acc_stage0", res.acc_stage0),
        MetricValue("acc_mixed", res.acc_mixed),
    ]
    extra = {
        "d0": stages.depth_fraction(1),
        "n_positions": int(stats.nll_stage.size(1)),
        "boundaries": list(stages.boundaries),
        "config": f"hf:{stages.hf.config.model_type}",
        "hf_checkpoint": stages.hf.record(),
        "cost_model": "routed position costs d0 (stage-0 depth fraction b_0 / num_layers), "
        "others 1; speedup = 1 / (f*d0 + (1-f))",
    }
    return JobResult(metrics=metrics, extra=extra)


def trajectory_hf(ctx: JobContext) -> JobResult:
    """``poe_trajectory`` over a directory of ``hf:`` checkpoints (module doc)."""
    knobs, where = ctx.knobs, f"job {ctx.job!r}"
    knobs.set_defaults(TRAJECTORY_HF_DEFAULTS)
    if knobs.get("heads") is not None:
        raise HFModelError(
            f"{where}: field 'heads' does not apply to poe_trajectory (stage heads belong to one "
            "checkpoint; the trajectory runs every checkpoint with zero heads)"
        )
    boundaries = knobs.get("boundaries")
    if boundaries is None:
        raise HFModelError(f"{where}: field 'boundaries' is required with model 'hf:...'")
    checkpoints = hf_checkpoint_dirs(hf_path(str(knobs.get("model"))))
    metrics: list[MetricValue] = []
    observations: list[Observation] = []
    texts: dict[str, str] = {}
    records = []
    for done, (step, path) in enumerate(checkpoints):
        stages = load_stages(ctx, path)
        stats, n_bytes = hf_eval_stats(ctx, stages)
        spec, _, _, _ = hf_speculative(ctx, stages, report_progress=False)
        route = _routing(ctx, stages.depth_fraction(1), stats)
        values = trajectory_values(stats, spec, route, n_bytes)
        metrics.extend(MetricValue(name, value, step=step) for name, value in values.items())
        more, obs, more_texts = checkpoint_probes(ctx, hf_target(stages), step)
        metrics.extend(more)
        observations.extend(obs)
        texts.update(more_texts)
        records.append({"step": step, "path": str(path), "sha256": stages.hf.sha256})
        ctx.progress(done + 1, len(checkpoints), "poe_trajectory")
    extra = {
        "checkpoints": records,
        "boundaries": list(boundaries),
        "convention": "DIR itself, or its step-N / checkpoint-N sub-directories, by step",
    }
    return JobResult(metrics=metrics, observations=observations, texts=texts, extra=extra)
