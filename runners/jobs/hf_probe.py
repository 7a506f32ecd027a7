"""The ``probe`` job on a Hugging Face mixture-of-experts checkpoint (``model: "hf:PATH"``).

Same probe set, labels and signal definitions as the built-in routed probe
(``runners/jobs/routed.py``), with the checkpoint's own router and tokenizer:

* prompt forward with ``output_router_logits=True``; layer ``l``'s router logits at prompt
  position ``t`` give ``r = softmax(logits)`` over the model's ``E`` experts (all experts, before
  top-k) and ``H = -sum_k r_k ln r_k`` (nats). Prompt positions are the prompt's tokens, the
  tokenizer's BOS (when it adds one) excluded.
* ``router_entropy_mean`` / ``router_entropy_var``: ``H`` averaged over layers, then mean /
  population variance over prompt positions; ``router_entropy_L{l}``: mean over prompt
  positions of layer ``l`` (the per-layer entropies); ``router_conf = 1 - router_entropy_mean /
  ln E``.
* ``max_softmax_mean`` / ``max_softmax_last``: greedy generation with the KV cache of up to
  ``max_new_tokens`` tokens (stopping after the tokenizer's EOS, which counts); the max softmax
  probability of each step's next-token distribution, mean / last.
* ``coherence_bpb``: teacher-forced ``sum(-log2 p)`` of the held-out answers' tokens
  (``" " + answer``, given the chat prompt) divided by the answers' UTF-8 byte count.

Knobs: ``model`` (structural), ``trust_remote_code`` (False; fires at load), ``max_new_tokens``
(48; per generation), ``limit_per_group`` (None; fires only if it removed items), ``batch_size``
(8; prompts generated together, left-padded and masked: :func:`probe_batch`; fires with the
first batch; 1 = one prompt at a time, no padding). The checkpoint's weight sha256 is kept in
``JobResult.extra["hf_checkpoint"]["sha256"]`` (the run's ``extra``, shown by ``docket runs
show``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..context import JobContext, JobResult, MetricValue, Observation
from ..data import REFUSAL, chat_prompt, load_chat
from ..models.hf import HFModel, HFModelError, cache_kwarg, cache_of, hf_path, load_hf


def router_signals(router_logits: Sequence[Tensor], first: int = 0) -> dict[str, float]:
    """Router signals from per-layer router logits ``(T, E)`` of one prompt, positions
    ``first:`` (see the module docstring)."""
    layers = [lg[first:].double() for lg in router_logits]
    probs = [torch.softmax(lg, dim=-1) for lg in layers]
    h = torch.stack([-(p * p.clamp_min(1e-300).log()).sum(-1) for p in probs], dim=1)  # (T, L)
    n_experts = layers[0].size(-1)
    per_pos = h.mean(1)
    mean = float(per_pos.mean())
    out = {
        "router_entropy_mean": mean,
        "router_entropy_var": float(per_pos.var(unbiased=False)),
        "router_conf": 1.0 - mean / math.log(n_experts),
    }
    for layer in range(h.size(1)):
        out[f"router_entropy_L{layer}"] = float(h[:, layer].mean())
    return out


def _router_logits(hf: HFModel, out: Any, n_tokens: int | None) -> list[Tensor]:
    """Per-layer router logits ``(T, E)``: the last ``n_tokens`` positions (a batch of one), or
    every row of the batch (``None``)."""
    logits = getattr(out, "router_logits", None)
    if not logits:
        raise HFModelError(
            f"hf:{hf.path}: model_type {hf.config.model_type!r} returns no router logits "
            "(output_router_logits=True gave none); router signals need a mixture-of-experts "
            "causal LM such as Mixtral, Qwen-MoE or OLMoE"
        )
    flat = [lg.reshape(-1, lg.size(-1)) for lg in logits]
    return flat if n_tokens is None else [lg[-n_tokens:] for lg in flat]


@torch.no_grad()
def probe_prompt(hf: HFModel, tokens: list[int], max_new: int) -> dict[str, Any]:
    """One prompt: router signals from the prompt forward, then greedy KV-cache generation."""
    device = next(hf.model.parameters()).device
    ids = torch.tensor([tokens], device=device)
    out = hf.model(input_ids=ids, use_cache=True, output_router_logits=True)
    bos = hf.tokenizer.bos_token_id
    first = 1 if bos is not None and tokens[0] == bos and len(tokens) > 1 else 0
    signals = router_signals(_router_logits(hf, out, len(tokens)), first)
    cache_kw = cache_kwarg(hf.model)
    past, logits = cache_of(out), out.logits[:, -1]
    generated: list[int] = []
    max_probs: list[float] = []
    eos = hf.tokenizer.eos_token_id
    for _ in range(max_new):
        p_max, tok = torch.softmax(logits.double(), dim=-1).max(-1)
        generated.append(int(tok))
        max_probs.append(float(p_max))
        if eos is not None and int(tok) == eos:
            break
        out = hf.model(input_ids=tok.view(1, 1), use_cache=True, **{cache_kw: past})
        past, logits = cache_of(out), out.logits[:, -1]
    return {"signals": signals, "tokens": generated, "max_probs": max_probs}


@torch.no_grad()
def probe_batch(hf: HFModel, prompts: Sequence[list[int]], max_new: int) -> list[dict[str, Any]]:
    """:func:`probe_prompt` for several prompts at once (one forward per generated token for the
    whole batch), the same quantities per prompt up to float rounding.

    Prompts are left-padded to the longest; the padding is masked (``attention_mask``) and
    positions count real tokens only (``position_ids = cumsum(mask) - 1``), so each row sees
    what it would see alone. A prompt's router signals use its own positions only (padding
    excluded, BOS excluded as in :func:`probe_prompt`). A row that emitted EOS stops recording;
    the batch stops when every row has stopped or after ``max_new`` steps."""
    if len(prompts) == 1:
        return [probe_prompt(hf, list(prompts[0]), max_new)]
    device = next(hf.model.parameters()).device
    lengths = [len(t) for t in prompts]
    width = max(lengths)
    ids = torch.full((len(prompts), width), 0, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for b, tokens in enumerate(prompts):
        ids[b, width - len(tokens) :] = torch.tensor(tokens, device=device)
        mask[b, width - len(tokens) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    out = hf.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        output_router_logits=True,
    )
    per_layer = _router_logits(hf, out, None)  # (B * width, E) each
    bos = hf.tokenizer.bos_token_id
    results: list[dict[str, Any]] = []
    for b, tokens in enumerate(prompts):
        rows = [lg.view(len(prompts), width, -1)[b, width - len(tokens) :] for lg in per_layer]
        first = 1 if bos is not None and tokens[0] == bos and len(tokens) > 1 else 0
        results.append({"signals": router_signals(rows, first), "tokens": [], "max_probs": []})
    cache_kw = cache_kwarg(hf.model)
    past, logits = cache_of(out), out.logits[:, -1]
    last = positions[:, -1]
    live = [True] * len(prompts)
    eos = hf.tokenizer.eos_token_id
    for _ in range(max_new):
        p_max, tok = torch.softmax(logits.double(), dim=-1).max(-1)
        for b in range(len(prompts)):
            if live[b]:
                results[b]["tokens"].append(int(tok[b]))
                results[b]["max_probs"].append(float(p_max[b]))
                live[b] = not (eos is not None and int(tok[b]) == eos)
        if not any(live):
            break
        mask = torch.cat([mask, torch.ones((len(prompts), 1), dtype=mask.dtype, device=device)], 1)
        last = last + 1
        out = hf.model(
            input_ids=tok.view(-1, 1),
            attention_mask=mask,
            position_ids=last.view(-1, 1),
            use_cache=True,
            **{cache_kw: past},
        )
        past, logits = cache_of(out), out.logits[:, -1]
    return results


@torch.no_grad()
def heldout_bpb_hf(hf: HFModel) -> float:
    """Teacher-forced bits per UTF-8 byte of the held-out chat answers (module docstring)."""
    device = next(hf.model.parameters()).device
    nats, n_bytes = 0.0, 0
    limit = int(getattr(hf.config, "max_position_embeddings", 2048))
    for row in load_chat("heldout"):
        prompt = hf.tokenizer.encode(chat_prompt(row["question"]))
        answer_text = " " + row["answer"]
        full = hf.tokenizer.encode(chat_prompt(row["question"]) + answer_text)[:limit]
        start = max(len(prompt), 1)
        if len(full) <= start:
            continue
        logits = hf.model(input_ids=torch.tensor([full], device=device)).logits[0].double()
        logp = torch.log_softmax(logits[start - 1 : len(full) - 1], dim=-1)
        target = torch.tensor(full[start:], device=device)
        nats -= float(logp.gather(1, target[:, None]).sum())
        n_bytes += len(answer_text.encode("utf-8"))
    return nats / max(n_bytes, 1) / math.log(2)


def probe_hf(ctx: JobContext) -> JobResult:
    """``probe`` with ``model: "hf:PATH"`` (see the module docstring)."""
    from .routed import _knob, _start, failure_label, is_loop, is_refusal, probe_rows

    _start(
        ctx,
        {
            "model": None,
            "trust_remote_code": False,
            "max_new_tokens": 48,
            "limit_per_group": None,
            "batch_size": 8,
        },
    )
    path = hf_path(str(ctx.params["model"]))
    trust = bool(_knob(ctx, "trust_remote_code"))
    hf = load_hf(path, trust_remote_code=trust, device=ctx.device)
    ctx.knobs.fire("trust_remote_code")
    t0 = time.perf_counter()
    rows = probe_rows(ctx)
    max_new = int(_knob(ctx, "max_new_tokens"))
    room = int(getattr(hf.config, "max_position_embeddings", 2048)) - max_new
    if max_new < 1 or room < 2:
        raise HFModelError(f"job {ctx.job!r}: max_new_tokens {max_new} outside [1, context - 2]")
    observations: list[Observation] = []
    texts: dict[str, str] = {}
    n_loop = n_refused = n_fail = n_labelled = cropped = 0
    batch_size = int(_knob(ctx, "batch_size"))
    if batch_size < 1:
        raise HFModelError(f"job {ctx.job!r}: batch_size {batch_size} must be at least 1")
    encoded: list[list[int]] = []
    for row in rows:
        tokens = hf.tokenizer.encode(row["prompt"])
        if len(tokens) > room:  # keep the prompt's tail (the question end + framing)
            tokens = tokens[len(tokens) - room :]
            cropped += 1
        encoded.append(tokens)
    results: list[dict[str, Any]] = []
    for start in range(0, len(rows), batch_size):
        results += probe_batch(hf, encoded[start : start + batch_size], max_new)
        ctx.knobs.fire("max_new_tokens")
        ctx.knobs.fire("batch_size")
        ctx.progress(len(results), len(rows), f"probe {ctx.job}")
    for row, res in zip(rows, results, strict=True):
        eos = hf.tokenizer.eos_token_id
        text = hf.tokenizer.decode([t for t in res["tokens"] if t != eos])
        refused, looped = is_refusal(text), is_loop(text)
        label = failure_label(row["group"], refused, looped)
        probs = res["max_probs"]
        signals = {
            "max_softmax_mean": sum(probs) / len(probs),
            "max_softmax_last": probs[-1],
            **res["signals"],
        }
        for name, value in signals.items():
            observations.append(Observation(row["group"], row["item"], name, float(value), label))
        texts[row["item"]] = text
        n_loop += looped
        n_refused += refused
        n_fail += label or 0
        n_labelled += label is not None
    gen_s = time.perf_counter() - t0
    n = max(len(rows), 1)
    metrics = [
        MetricValue("coherence_bpb", heldout_bpb_hf(hf)),
        MetricValue("loop_rate", n_loop / n),
        MetricValue("refusal_rate", n_refused / n),
        MetricValue("failure_rate", n_fail / max(n_labelled, 1)),
    ]
    extra = {
        "n_items": len(rows),
        "cropped_prompts": cropped,
        "generation_s": gen_s,
        "total_s": time.perf_counter() - t0,
        "refusal_template": REFUSAL,
        "config": f"hf:{hf.config.model_type}",
        "hf_checkpoint": hf.record(),
    }
    return JobResult(metrics=metrics, observations=observations, texts=texts, extra=extra)
