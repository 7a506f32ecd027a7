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
(48; per generation), ``limit_per_group`` (None; fires only if it removed items). Prompts are run
one at a time (no padding). The checkpoint's weight sha256 is kept in
``JobResult.extra["hf_checkpoint"]["sha256"]`` (the run's ``extra``, shown by
``docket runs show``).
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


def _router_logits(hf: HFModel, out: Any, n_tokens: int) -> list[Tensor]:
    logits = getattr(out, "router_logits", None)
    if not logits:
        raise HFModelError(
            f"hf:{hf.path}: model_type {hf.config.model_type!r} returns no router logits "
            "(output_router_logits=True gave none); router signals need a mixture-of-experts "
            "causal LM such as Mixtral, Qwen-MoE or OLMoE"
        )
    return [lg.reshape(-1, lg.size(-1))[-n_tokens:] for lg in logits]  # batch of one


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
        {"model": None, "trust_remote_code": False, "max_new_tokens": 48, "limit_per_group": None},
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
    for done, row in enumerate(rows, start=1):
        tokens = hf.tokenizer.encode(row["prompt"])
        if len(tokens) > room:  # keep the prompt's tail (the question end + framing)
            tokens = tokens[len(tokens) - room :]
            cropped += 1
        res = probe_prompt(hf, tokens, max_new)
        ctx.knobs.fire("max_new_tokens")
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
        ctx.progress(done, len(rows), f"probe {ctx.job}")
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
