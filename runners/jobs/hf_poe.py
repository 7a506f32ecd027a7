"""PoE jobs on a Hugging Face decoder: ``poe_probe`` with ``model: "hf:PATH"`` and the
``poe_train_heads`` kind (stages and heads: :mod:`docketml.runners.models.hf_stages`).

Stages and heads
    ``boundaries`` (required unless a ``heads`` file provides them) cut the decoder into stages;
    ``heads: <job>`` names a ``poe_train_heads`` dependency (listed under ``after:``) whose
    checkpoint (the stage heads file) is loaded; without it every head is zero (plain early
    exit). With ``heads`` the ``model`` may be omitted: the heads file names its checkpoint, and
    the checkpoint's weight sha256 must equal the one the heads were trained on.

Evaluation text (``poe_probe``)
    The first ``eval_bytes`` bytes of the built-in PoE held-out split (``runners/jobs/poe.py``),
    tokenised once with the checkpoint's tokenizer (or the byte fallback) into ids
    ``t_0..t_{N-1}``. Every token after the first is a target, predicted once, in windows of
    ``seq_len`` targets (inputs ``t_i..t_{i+L-1}``, targets ``t_{i+1}..t_{i+L}``; the context
    restarts at each window, the last window may be shorter). ``t_0`` is context only: when it is
    the tokenizer's BOS every byte of the text is predicted, otherwise the UTF-8 bytes of
    ``decode([t_0])`` are not. Bits per byte = ``sum of target NLL / predicted bytes / ln 2``.
    Metrics: the built-in ``poe_probe``'s names (``bpb_stage{k}``, ``acc_stage{k}``,
    ``bpb_prefix{j}``, ``acc_prefix{j}``, ``bpb_full``, ``acc_full``), the PoE aggregate being
    :func:`~docketml.runners.models.poe.poe_log_probs`.

Speculative decoding (``poe_speculative``)
    The built-in job's prompts (``n_prompts`` held-out snippets of ``prompt_len`` bytes starting
    at a word, drawn with the job's seed), as text tokenised by the checkpoint's tokenizer; per
    prompt, plain cached greedy PoE decoding and self-speculative decoding (stage
    ``draft_stage`` drafts ``k_draft`` tokens, the full PoE verifies;
    :func:`~docketml.runners.models.hf_stages.speculative_decode`) of ``max_new_tokens`` tokens,
    timed alternately; the built-in job's metric and signal names (``identical_rate`` = share of
    prompts whose two outputs are equal; ``projected_speedup`` uses the drafting stage's depth
    fraction ``b_draft / num_layers``).

Training (``poe_train_heads``)
    Random windows (``torch.Generator`` seeded with the job's seed) of ``seq_len + 1`` tokens of
    the built-in PoE training split, tokenised the same way; loss ``mean_k CE(logits_k)`` (every
    stage head trained as a standalone exit, as ``poe_train`` does); AdamW on the heads only.
    The trunk runs under ``torch.no_grad`` with ``requires_grad=False``; its state-dict sha256 is
    compared before and after (a change is an error). The heads file is the run's checkpoint
    (stored by sha256 by the executor); its sha256 is also in ``extra.heads_sha256``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..context import JobContext, JobResult, MetricValue, Observation, sha256_file
from ..models.hf import HFModelError, hf_path, is_hf_ref, load_hf
from ..models.hf_stages import HFStages, greedy_decode, read_heads, speculative_decode
from ..models.poe_decode import PositionStats, merge_stats, time_decodes, window_stats
from .poe import _corpus_split, bpb_metrics, decode_prompts, speculative_summary

_STAGES = {"model": None, "boundaries": None, "heads": None, "trust_remote_code": False}
PROBE_DEFAULTS: dict[str, Any] = {**_STAGES, "eval_bytes": 32768, "seq_len": 128, "batch_size": 16}
SPEC_DEFAULTS: dict[str, Any] = {
    **_STAGES,
    "k_draft": 4,
    "draft_stage": 0,
    "max_new_tokens": 64,
    "n_prompts": 20,
    "prompt_len": 32,
    "decode_threads": 1,
}
TRAIN_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in _STAGES.items() if k != "heads"},
    "steps": 300,
    "batch_size": 8,
    "seq_len": 128,
    "lr": 1e-3,
    "weight_decay": 0.0,
}


def stage_spec(ctx: JobContext) -> tuple[str, Any, Path | None]:
    """``(model, boundaries, heads_path)`` of an hf PoE job (module doc): ``model`` and
    ``boundaries`` from the job's params, else from the heads file of its ``heads`` dependency;
    :class:`HFModelError` naming the field when neither gives them. The one reading of these
    params (``load_stages`` and ``poe_card``'s checkpoint directories)."""
    knobs, where = ctx.knobs, f"job {ctx.job!r}"
    heads_ref = knobs.get("heads")
    heads_path: Path | None = None
    payload: dict[str, Any] = {}
    if heads_ref is not None:
        if heads_ref not in ctx.inputs:
            raise HFModelError(
                f"{where}: field 'heads' is {heads_ref!r}, not a dependency with a checkpoint "
                f"(have {sorted(ctx.inputs)}); list the poe_train_heads job under after:"
            )
        heads_path = Path(ctx.inputs[heads_ref])
        payload = read_heads(heads_path)
    model = knobs.get("model")
    if model is None and payload:
        model = f"hf:{payload['model_path']}"
    if not is_hf_ref(model):
        raise HFModelError(f"{where}: field 'model' must be 'hf:PATH' (got {model!r})")
    boundaries = knobs.get("boundaries")
    if boundaries is None:
        if not payload:
            raise HFModelError(
                f"{where}: field 'boundaries' is required with model 'hf:...' (e.g. [3, 5, 7])"
            )
        boundaries = payload["boundaries"]
    return str(model), boundaries, heads_path


def load_stages(ctx: JobContext, path: Path | None = None) -> HFStages:
    """The job's :class:`HFStages` (:func:`stage_spec`), from ``path`` when given (one
    checkpoint of a directory) else from the ``model`` param; heads loaded when declared."""
    knobs, where = ctx.knobs, f"job {ctx.job!r}"
    model, boundaries, heads_path = stage_spec(ctx)
    hf = load_hf(path or hf_path(model), bool(knobs.get("trust_remote_code")), device=ctx.device)
    knobs.fire("trust_remote_code")
    knobs.fire("model")
    stages = HFStages(hf, boundaries, where)
    knobs.fire("boundaries")
    if heads_path is not None:
        stages.load_heads(heads_path)
        knobs.fire("heads")
    return stages


def token_ids(stages: HFStages, text: str) -> tuple[list[int], int]:
    """``(ids, predicted_bytes)`` of ``text`` (module doc, "Evaluation text")."""
    tok = stages.hf.tokenizer
    ids = tok.encode(text)
    if len(ids) < 2:
        raise HFModelError(f"hf:{stages.hf.path}: evaluation text gives fewer than 2 tokens")
    n_bytes = len(text.encode("utf-8"))
    if tok.bos_token_id is None or ids[0] != tok.bos_token_id:
        n_bytes -= len(tok.decode([ids[0]]).encode("utf-8"))
    return ids, n_bytes


def token_batches(
    ids: list[int], seq_len: int, batch_size: int, device: Any = None
) -> list[tuple[Tensor, Tensor]]:
    """The hf windows of ``ids`` (the one definition, used by every hf PoE probe): inputs
    ``t_i..t_{i+L-1}``, targets ``t_{i+1}..t_{i+L}`` for ``i = 0, L, 2L, ...``; full windows
    ``batch_size`` to a batch, the shorter last window alone."""
    data = torch.tensor(ids, dtype=torch.long)
    n_full = (len(ids) - 1) // seq_len
    out: list[tuple[Tensor, Tensor]] = []
    for lo in range(0, n_full, batch_size):
        starts = range(lo * seq_len, min(lo + batch_size, n_full) * seq_len, seq_len)
        inputs = torch.stack([data[s : s + seq_len] for s in starts])
        targets = torch.stack([data[s + 1 : s + seq_len + 1] for s in starts])
        out.append((inputs.to(device), targets.to(device)))
    tail = n_full * seq_len
    if tail < len(ids) - 1:
        out.append((data[tail:-1].view(1, -1).to(device), data[tail + 1 :].view(1, -1).to(device)))
    return out


@torch.inference_mode()
def hf_position_stats(
    stages: HFStages, ids: list[int], seq_len: int, batch_size: int
) -> PositionStats:
    """Per-target stats of every stage and PoE prefix over ``ids`` (:func:`token_batches`)."""
    parts: list[dict[str, Tensor]] = []
    for inputs, targets in token_batches(ids, seq_len, batch_size, stages.device):
        logits, _ = stages.stage_logits(inputs)
        parts.append(window_stats(logits, targets))
    return merge_stats(parts)


def _seq_len(ctx: JobContext, stages: HFStages) -> int:
    seq_len = int(ctx.knobs.get("seq_len"))
    limit = int(getattr(stages.hf.config, "max_position_embeddings", 2048))
    if not 1 <= seq_len <= limit:
        raise HFModelError(f"job {ctx.job!r}: field 'seq_len' {seq_len} outside [1, {limit}]")
    ctx.knobs.fire("seq_len")
    return seq_len


def hf_eval_stats(ctx: JobContext, stages: HFStages) -> tuple[PositionStats, int]:
    """``(stats, predicted_bytes)`` of the evaluation text (module doc) with the job's
    ``eval_bytes``, ``seq_len`` and ``batch_size`` knobs (fired)."""
    knobs = ctx.knobs
    _, held_out = _corpus_split()
    n_eval = int(knobs.get("eval_bytes"))
    if n_eval < len(held_out):
        knobs.fire("eval_bytes")
    text = held_out[:n_eval].decode("utf-8", errors="replace")
    ids, n_bytes = token_ids(stages, text)
    seq_len = _seq_len(ctx, stages)
    stats = hf_position_stats(stages, ids, seq_len, int(knobs.get("batch_size")))
    knobs.fire("batch_size")
    return stats, n_bytes


def probe_hf_stages(ctx: JobContext) -> JobResult:
    """``poe_probe`` on an ``hf:`` decoder (module doc)."""
    ctx.knobs.set_defaults(PROBE_DEFAULTS)
    stages = load_stages(ctx)
    stats, n_bytes = hf_eval_stats(ctx, stages)
    extra = {
        "n_positions": int(stats.nll_stage.size(1)),
        "n_bytes": n_bytes,
        "boundaries": list(stages.boundaries),
        "config": f"hf:{stages.hf.config.model_type}",
        "hf_checkpoint": stages.hf.record(),
    }
    return JobResult(metrics=bpb_metrics(stats, n_bytes), extra=extra)


def hf_speculative(
    ctx: JobContext, stages: HFStages, report_progress: bool = True
) -> tuple[dict[str, float], list[Observation], dict[str, str], float]:
    """Plain vs self-speculative decoding of the job's prompts on ``stages`` (module doc,
    "Speculative decoding"): ``(summary, observations, texts, draft depth fraction)``."""
    knobs, where = ctx.knobs, f"job {ctx.job!r}"
    k_draft, draft = int(knobs.get("k_draft")), int(knobs.get("draft_stage"))
    if k_draft < 1:
        raise HFModelError(f"{where}: field 'k_draft' is {k_draft}; expected >= 1")
    if not 0 <= draft < stages.n_stages:
        raise HFModelError(
            f"{where}: field 'draft_stage' is {draft}; expected 0..{stages.n_stages - 1}"
        )
    knobs.fire("k_draft")
    knobs.fire("draft_stage")
    max_new = int(knobs.get("max_new_tokens"))
    knobs.fire("max_new_tokens")
    prompts = decode_prompts(ctx)
    tok = stages.hf.tokenizer
    prompt_texts = [bytes(p[1:]).decode("utf-8", "replace") for p in prompts]
    ids = [tok.encode(text) for text in prompt_texts]
    limit = int(getattr(stages.hf.config, "max_position_embeddings", 2048))
    if max(len(i) for i in ids) + max_new > limit:
        raise HFModelError(f"{where}: prompts + max_new_tokens {max_new} exceed {limit} positions")

    def compare(prompt: list[int], spec_first: bool = False) -> Any:
        return time_decodes(
            lambda: greedy_decode(stages, prompt, max_new),
            lambda: speculative_decode(stages, prompt, max_new, k_draft, draft),
            spec_first,
        )

    threads_before = torch.get_num_threads()
    torch.set_num_threads(int(knobs.get("decode_threads")))
    knobs.fire("decode_threads")
    try:
        compare(ids[0])  # warm-up, untimed
        results = []
        for i, prompt in enumerate(ids):
            results.append(compare(prompt, spec_first=bool(i % 2)))
            if report_progress:
                ctx.progress(i + 1, len(ids), "poe_speculative")
    finally:
        torch.set_num_threads(threads_before)
    texts = [tok.decode(r.spec_tokens) for r in results]
    d = stages.depth_fraction(draft + 1)
    summary, observations, out_texts = speculative_summary(
        results, prompt_texts, texts, max_new, k_draft, d
    )
    return summary, observations, out_texts, d


def speculative_hf_stages(ctx: JobContext) -> JobResult:
    """``poe_speculative`` on an ``hf:`` decoder (module doc, "Speculative decoding")."""
    ctx.knobs.set_defaults(SPEC_DEFAULTS)
    stages = load_stages(ctx)
    summary, observations, out_texts, d = hf_speculative(ctx, stages)
    metrics = [MetricValue(name, value) for name, value in summary.items()]
    extra = {
        "draft_depth_fraction": d,
        "boundaries": list(stages.boundaries),
        "config": f"hf:{stages.hf.config.model_type}",
        "hf_checkpoint": stages.hf.record(),
        "timing": "batch 1, torch.inference_mode, decode_threads intra-op threads, perf_counter "
        "(wall) and process_time (cpu) around each whole decode (prefill included), plain and "
        "speculative alternate first per prompt, one untimed warm-up",
    }
    return JobResult(metrics=metrics, observations=observations, texts=out_texts, extra=extra)


def fit_heads(
    stages: HFStages,
    data: Tensor,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    weight_decay: float,
    gen: torch.Generator,
    fire: Callable[[str], None] = lambda name: None,
    progress: Callable[[int, int], None] = lambda step, total: None,
) -> list[float]:
    """Train ``stages.heads`` (AdamW) on random ``seq_len + 1``-token windows of ``data`` with
    the trunk frozen (``requires_grad=False``, run under ``no_grad``); returns the loss curve
    (``mean_k CE(logits_k)`` per step, nats per token)."""
    for p in stages.hf.model.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(stages.heads.parameters(), lr=lr, weight_decay=weight_decay)
    fire("lr")
    fire("weight_decay")
    losses: list[float] = []
    for step in range(steps):
        fire("steps")
        starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=gen)
        fire("batch_size")
        window = torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])
        window = window.to(stages.device)
        with torch.no_grad():
            states, _ = stages.stage_states(window[:, :-1])
            base = [stages.lm_head(x) for x in states]
        pairs = zip(base, states, stages.heads, strict=True)
        logits = torch.stack([lg + head(x) for lg, x, head in pairs])
        targets = window[:, 1:].repeat(logits.size(0), 1, 1).reshape(-1)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress(step + 1, steps)
    return losses


def train_heads(ctx: JobContext) -> JobResult:
    """``poe_train_heads``: train the additive stage heads on the frozen trunk (module doc)."""
    knobs = ctx.knobs
    knobs.set_defaults(TRAIN_DEFAULTS)
    torch.manual_seed(ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed)
    stages = load_stages(ctx)
    before = stages.trunk_sha256()
    train_text, _ = _corpus_split()
    data = torch.tensor(stages.hf.tokenizer.encode(train_text.decode("utf-8", "replace")))
    seq_len = _seq_len(ctx, stages)
    if data.numel() <= seq_len + 1:
        raise HFModelError(f"job {ctx.job!r}: training text shorter than seq_len {seq_len}")
    t0 = time.perf_counter()
    losses = fit_heads(
        stages,
        data,
        steps=int(knobs.get("steps")),
        batch_size=int(knobs.get("batch_size")),
        seq_len=seq_len,
        lr=float(knobs.get("lr")),
        weight_decay=float(knobs.get("weight_decay")),
        gen=gen,
        fire=knobs.fire,
        progress=lambda step, total: ctx.progress(step, total, "poe_train_heads"),
    )
    if stages.trunk_sha256() != before:
        raise RuntimeError(f"job {ctx.job!r}: the frozen trunk changed while training heads")
    path = stages.save_heads(Path(ctx.artifacts_dir) / "stage_heads.pt")
    tail = losses[-min(10, len(losses)) :] if losses else [float("nan")]
    metrics = [
        MetricValue("train_loss_first", losses[0] if losses else float("nan")),
        MetricValue("train_loss_last", sum(tail) / len(tail)),
    ]
    extra = {
        "boundaries": list(stages.boundaries),
        "heads_sha256": sha256_file(path),
        "trunk_sha256": before,
        "loss_curve": losses[:: max(1, len(losses) // 100)],
        "train_seconds": time.perf_counter() - t0,
        "hf_checkpoint": stages.hf.record(),
    }
    return JobResult(metrics=metrics, checkpoint=path, extra=extra)
