"""KV-cache identity and concept tracking (``poe_kv_identity``, ``poe_concepts``), on the
built-in PoE model or an ``hf:`` decoder; the same probes run per checkpoint inside
``poe_trajectory`` (:func:`checkpoint_probes`). Definitions: :mod:`~docketml.runners.models.
greedy_checks`.

Model
    Built-in: the checkpoint from ``checkpoint`` / the single dependency / ``input`` (as every
    built-in PoE probe). ``hf:``: ``model: "hf:PATH"``; with ``boundaries`` (or ``heads: <job>``)
    the greedy token is the PoE of the stages (``runners/jobs/hf_poe.py``), without them the
    model's own logits (one stage at the last layer, zero head).

``poe_kv_identity``
    Prompts: ``prompts`` (a list of strings) when declared, else the built-in decoding prompts
    (``n_prompts`` held-out snippets of ``prompt_len`` bytes starting at a word, the job's seed).
    Built-in prompt ids are ``[BOS] + bytes``; ``hf:`` ids are the checkpoint tokenizer's. Each is
    decoded greedily for ``max_new_tokens`` tokens with and without the KV cache. Per prompt
    (group ``prompts``, item ``pNNN``): ``kv_identical`` (1/0) and ``kv_first_divergence`` (index
    of the first differing token; ``max_new_tokens`` when none). Metrics: ``kv_identical_rate``
    (share of identical prompts) and ``kv_first_divergence_min`` (min over prompts, same
    convention). Texts: ``pNNN`` -> ``prompt|cached continuation``.

``poe_concepts``
    ``concepts`` (default :data:`~docketml.runners.models.concepts.DEFAULT_CONCEPTS`): each
    prompt is continued greedily (KV cache) for ``max_new_tokens`` tokens and graded by its
    expected strings. Per concept (group ``concepts``, item = its ``id``): signal
    ``concept_hit`` (1/0); texts ``id`` -> ``prompt|continuation``. Metrics: ``concept_accuracy``
    (mean hit) and ``concept_hits`` (count).

Per checkpoint (``poe_trajectory``)
    The same two probes on every checkpoint with the trajectory's knobs (``prompts`` or
    ``n_prompts``/``prompt_len``, ``max_new_tokens`` for KV identity; ``concepts`` and
    ``concept_max_new_tokens`` for concepts): metrics ``kv_identical_rate``,
    ``kv_first_divergence_min`` and ``concept_accuracy`` at ``step``; observations in group
    ``step-XXXXX`` with items ``pNNN@XXXXX`` (``kv_identical``, ``kv_first_divergence``) and
    ``ID@XXXXX`` (``concept_hit``); texts ``ID@XXXXX`` -> ``prompt|continuation``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..context import JobContext, JobFn, JobResult, MetricValue, Observation
from ..models.concepts import Concept, parse_concepts, parse_prompts
from ..models.greedy_checks import (
    Decode,
    HFGreedy,
    builtin_decoder,
    builtin_encode,
    builtin_text,
    kv_identity,
)
from ..models.hf import HFModelError, is_hf_ref

STRUCTURAL_KEYS = frozenset({"model", "checkpoint", "boundaries", "heads"})

_MODEL = {
    "checkpoint": None,
    "input": None,
    "model": None,
    "boundaries": None,
    "heads": None,
    "trust_remote_code": False,
}
KV_DEFAULTS: dict[str, Any] = {
    **_MODEL,
    "prompts": None,
    "n_prompts": 8,
    "prompt_len": 32,
    "max_new_tokens": 32,
}
CONCEPT_DEFAULTS: dict[str, Any] = {**_MODEL, "concepts": None, "max_new_tokens": 16}
TRAJECTORY_DEFAULTS: dict[str, Any] = {
    "prompts": None,
    "concepts": None,
    "concept_max_new_tokens": 16,
}
"""Knobs :func:`checkpoint_probes` adds to ``poe_trajectory``."""


@dataclass
class Target:
    """One checkpoint seen by the probes: its greedy decoder, tokenizer and position limit."""

    decode: Decode
    encode: Callable[[str], list[int]]
    text: Callable[[Sequence[int]], str]
    max_positions: int
    extra: dict[str, Any]


def builtin_target(model: Any) -> Target:
    """A built-in PoE model (``[BOS] + bytes`` prompts)."""
    return Target(
        builtin_decoder(model),
        builtin_encode,
        builtin_text,
        model.cfg.max_seq_len,
        {"layout": list(model.cfg.layout)},
    )


def hf_target(stages: Any) -> Target:
    """``hf:`` stages (:class:`~docketml.runners.models.hf_stages.HFStages`)."""
    tok = stages.hf.tokenizer
    return Target(
        HFGreedy(stages),
        tok.encode,
        tok.decode,
        int(getattr(stages.hf.config, "max_position_embeddings", 2048)),
        {
            "boundaries": list(stages.boundaries),
            "config": f"hf:{stages.hf.config.model_type}",
            "hf_checkpoint": stages.hf.record(),
        },
    )


def load_target(ctx: JobContext) -> Target:
    """The job's checkpoint as a :class:`Target` (module doc, "Model")."""
    params = ctx.params
    if is_hf_ref(params.get("model")) or params.get("heads") is not None:
        from ..models.hf import hf_path, load_hf
        from ..models.hf_stages import HFStages, num_layers
        from .hf_poe import load_stages

        if params.get("boundaries") is None and params.get("heads") is None:
            knobs = ctx.knobs
            hf = load_hf(hf_path(str(params["model"])), bool(knobs.get("trust_remote_code")))
            knobs.fire("trust_remote_code")
            knobs.fire("model")
            return hf_target(HFStages(hf, [num_layers(hf)], f"job {ctx.job!r}"))
        return hf_target(load_stages(ctx))
    if params.get("boundaries") is not None:
        raise HFModelError(f"job {ctx.job!r}: field 'boundaries' applies to 'hf:' models only")
    from .poe import _checkpoint_path, _load

    model, step = _load(ctx, _checkpoint_path(ctx))
    target = builtin_target(model)
    target.extra["step"] = step
    return target


def _prompt_texts(ctx: JobContext) -> list[str]:
    """Declared ``prompts``, else the built-in decoding prompts as text."""
    declared = parse_prompts(ctx.knobs.get("prompts"), f"job {ctx.job!r}")
    if declared is not None:
        ctx.knobs.fire("prompts")
        return declared
    from .poe import decode_prompts

    return [builtin_text(p[1:]) for p in decode_prompts(ctx)]


def _room(ctx: JobContext, target: Target, ids: list[list[int]], n: int, field: str) -> None:
    if n < 1:
        raise ValueError(f"job {ctx.job!r}: field {field!r} is {n}; expected >= 1")
    longest = max(len(i) for i in ids)
    if longest + n > target.max_positions:
        raise ValueError(
            f"job {ctx.job!r}: a prompt of {longest} tokens + {field} {n} exceeds the model's "
            f"{target.max_positions} positions"
        )


def kv_probe(
    ctx: JobContext, target: Target, suffix: str = "", group: str = "prompts"
) -> tuple[dict[str, float], list[Observation], dict[str, str]]:
    """KV identity of the job's prompts (module doc): metric values, observations, texts."""
    texts = _prompt_texts(ctx)
    ids = [target.encode(t) for t in texts]
    n = int(ctx.knobs.get("max_new_tokens"))
    _room(ctx, target, ids, n, "max_new_tokens")
    results = kv_identity(target.decode, ids, n)
    ctx.knobs.fire("max_new_tokens")
    observations: list[Observation] = []
    out_texts: dict[str, str] = {}
    divergences = []
    for i, res in enumerate(results):
        item = f"p{i:03d}{suffix}"
        div = n if res.divergence is None else res.divergence
        divergences.append(div)
        observations.append(Observation(group, item, "kv_identical", float(res.identical)))
        observations.append(Observation(group, item, "kv_first_divergence", float(div)))
        out_texts[item] = texts[i] + "|" + target.text(res.cached)
    values = {
        "kv_identical_rate": sum(r.identical for r in results) / len(results),
        "kv_first_divergence_min": float(min(divergences)),
    }
    return values, observations, out_texts


def concept_probe(
    ctx: JobContext,
    target: Target,
    concepts: list[Concept],
    n: int,
    suffix: str = "",
    group: str = "concepts",
) -> tuple[dict[str, float], list[Observation], dict[str, str]]:
    """Greedy continuations of ``concepts`` graded 0/1 (module doc)."""
    ids = [target.encode(c.prompt) for c in concepts]
    _room(ctx, target, ids, n, "max_new_tokens")
    observations: list[Observation] = []
    out_texts: dict[str, str] = {}
    hits = 0
    for concept, prompt in zip(concepts, ids, strict=True):
        continuation = target.text(target.decode(prompt, n, True))
        hit = concept.grade(continuation)
        hits += hit
        item = f"{concept.id}{suffix}"
        observations.append(Observation(group, item, "concept_hit", float(hit)))
        out_texts[item] = concept.prompt + "|" + continuation
    values = {"concept_accuracy": hits / len(concepts), "concept_hits": float(hits)}
    return values, observations, out_texts


def run_kv_identity(ctx: JobContext) -> JobResult:
    """``poe_kv_identity`` (module doc)."""
    ctx.knobs.set_defaults(KV_DEFAULTS)
    target = load_target(ctx)
    values, observations, texts = kv_probe(ctx, target)
    metrics = [MetricValue(k, v) for k, v in values.items()]
    extra = {**target.extra, "n_prompts": len(texts)}
    return JobResult(metrics=metrics, observations=observations, texts=texts, extra=extra)


def run_concepts(ctx: JobContext) -> JobResult:
    """``poe_concepts`` (module doc)."""
    knobs = ctx.knobs
    knobs.set_defaults(CONCEPT_DEFAULTS)
    concepts = parse_concepts(knobs.get("concepts"), f"job {ctx.job!r}")
    if knobs.get("concepts") is not None:
        knobs.fire("concepts")
    target = load_target(ctx)
    n = int(knobs.get("max_new_tokens"))
    values, observations, texts = concept_probe(ctx, target, concepts, n)
    knobs.fire("max_new_tokens")
    metrics = [MetricValue(k, v) for k, v in values.items()]
    extra = {**target.extra, "concepts": [c.__dict__ for c in concepts]}
    return JobResult(metrics=metrics, observations=observations, texts=texts, extra=extra)


def checkpoint_probes(
    ctx: JobContext, target: Target, step: int
) -> tuple[list[MetricValue], list[Observation], dict[str, str]]:
    """KV identity and concepts of one trajectory checkpoint (module doc, "Per checkpoint");
    the caller declared :data:`TRAJECTORY_DEFAULTS`."""
    knobs = ctx.knobs
    concepts = parse_concepts(knobs.get("concepts"), f"job {ctx.job!r}")
    if knobs.get("concepts") is not None:
        knobs.fire("concepts")
    suffix, group = f"@{step:05d}", f"step-{step:05d}"
    kv, kv_obs, _ = kv_probe(ctx, target, suffix, group)
    n = int(knobs.get("concept_max_new_tokens"))
    con, con_obs, texts = concept_probe(ctx, target, concepts, n, suffix, group)
    knobs.fire("concept_max_new_tokens")
    values = {**kv, "concept_accuracy": con["concept_accuracy"]}
    metrics = [MetricValue(k, v, step=step) for k, v in values.items()]
    return metrics, kv_obs + con_obs, texts


JOBS: dict[str, JobFn] = {"poe_kv_identity": run_kv_identity, "poe_concepts": run_concepts}
