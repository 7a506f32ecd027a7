"""Decoding and probes for the PoE LM (:mod:`runners.models.poe`).

Greedy decoding
    The PoE model's greedy token after a prefix is ``argmax_v log p(v)`` with ``log p`` the full
    renormalised aggregate (:func:`runners.models.poe.poe_log_probs`); ties go to the lowest id
    (``torch.argmax``). :func:`greedy_decode` does this with or without a KV cache.

Self-speculative decoding (:func:`speculative_decode`)
    State: the KV cache holds positions ``0..n-1`` in every layer; ``pending`` is the full model's
    next token (already part of the output, not yet in the cache). One round:

    1. draft: stage 0 alone (only its layers and its head run, one token at a time, KV cached)
       proposes ``d_1..d_k`` greedily from ``pending``; ``d_k`` is also fed through stage 0, so the
       stage-0 residual stream and logits of all ``k + 1`` positions ``n..n+k`` are kept;
    2. verify: the deeper stages catch up on positions ``n..n+k`` in one pass starting from the
       kept stage-0 residuals (stage 0 is never recomputed: its cache entries are exactly what a
       full pass would write, because stage-0 layers only see stage-0 inputs), giving the full
       PoE's greedy token ``g_i`` after each position;
    3. accept the longest prefix with ``d_i == g_{i-1}`` (``m`` tokens), then ``g_m`` (the full
       model's token at the first mismatch, or the bonus token when all ``k`` match);
       roll the cache back to ``n + m + 1`` positions.

    Every emitted token is the full model's greedy choice given the emitted prefix, so the output
    equals :func:`greedy_decode` (in exact arithmetic; stage 0 runs one token at a time exactly as
    in plain greedy decoding, but the deeper stages' multi-token verify pass may round differently
    from one-token steps, which can only matter at a near-tie of the top two log-probabilities:
    the tests and the jobs measure the identity rather than assume it).
    Cost per round: ``k + 1`` one-token stage-0 steps plus one ``(k+1)``-token pass of the deeper
    stages, i.e. ``(k + 1) * d0 + (1 - d0) = k * d0 + 1`` full forwards when a multi-token pass
    costs what a one-token pass does (the Leviathan cost model below).
    Acceptance ``alpha = accepted drafts / proposed drafts``; the last round drafts at most the
    number of tokens still needed minus one, so nothing is drafted beyond ``max_new_tokens``.

Projected speedups (cost unit: one full-trunk forward; ``d0`` = depth fraction of stage 0)
    speculative (Leviathan et al. 2023): ``E = (1 - alpha^(k+1)) / (1 - alpha)`` tokens per round,
    cost per round ``k * d0 + 1``, speedup ``E / (k * d0 + 1)``;
    routing at cap: a position served by stage 0 alone costs ``d0``, any other costs ``1`` (the
    stage-0 work is reused, the confidence test is free), speedup ``1 / (f * d0 + (1 - f))``.
    (The Cognica card's routing rows, e.g. 85.05% routed -> 1.715x, fit this formula with an
    effective ``d0 = 0.5098`` rather than the layer share 16/32; its speculative row, alpha 0.9852,
    k = 4 -> 1.61x, fits the Leviathan formula with ``d0 = 0.5``.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .poe import BOS, PoELM, poe_log_probs

T = TypeVar("T")


def _as_tensor(prompt: list[int] | Tensor, device: torch.device) -> Tensor:
    ids = torch.as_tensor(prompt, dtype=torch.long, device=device)
    return ids.view(1, -1)


@torch.inference_mode()
def greedy_decode(
    model: PoELM, prompt: list[int] | Tensor, max_new_tokens: int, use_cache: bool = True
) -> list[int]:
    """Greedy PoE continuation of ``prompt`` (batch 1): ``max_new_tokens`` new token ids.

    With ``use_cache`` the prompt is prefilled once and each new token is one full-trunk step of
    length 1; without it every step re-forwards the whole prefix (the reference).
    """
    device = model.lm_head.weight.device
    ids = _as_tensor(prompt, device)
    n = ids.size(1)
    if n + max_new_tokens > model.cfg.max_seq_len:
        raise ValueError(f"prompt {n} + {max_new_tokens} new tokens exceed max_seq_len")
    out: list[int] = []
    if not use_cache:
        for _ in range(max_new_tokens):
            logp = poe_log_probs(model.forward_stages(ids)[:, :, -1])
            tok = int(logp.argmax(-1))
            out.append(tok)
            ids = torch.cat([ids, ids.new_tensor([[tok]])], dim=1)
        return out
    cache = model.new_cache(1, n + max_new_tokens)
    logits = model.forward_stages(ids, cache=cache, start=0)[:, :, -1]
    for i in range(max_new_tokens):
        tok = int(poe_log_probs(logits).argmax(-1))
        out.append(tok)
        if i + 1 < max_new_tokens:
            step = ids.new_tensor([[tok]])
            logits = model.forward_stages(step, cache=cache, start=n + i)[:, :, -1]
    return out


@dataclass
class SpecStats:
    """Counts of one speculative decode: drafts proposed/accepted and verify rounds."""

    proposed: int = 0
    accepted: int = 0
    rounds: int = 0
    emitted: int = 0
    accepted_per_round: list[int] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        """Accepted drafts / proposed drafts (NaN when nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def tokens_per_round(self) -> float:
        """Emitted tokens / verify rounds (accepted drafts + the full model's token per round)."""
        return self.emitted / self.rounds if self.rounds else float("nan")


@torch.inference_mode()
def speculative_decode(
    model: PoELM, prompt: list[int] | Tensor, max_new_tokens: int, k_draft: int = 4
) -> tuple[list[int], SpecStats]:
    """Self-speculative greedy decoding (stage 0 drafts ``k_draft``, the full PoE verifies).

    Returns the ``max_new_tokens`` emitted ids and the :class:`SpecStats`; see the module docstring.
    """
    if k_draft < 1:
        raise ValueError(f"k_draft must be >= 1, got {k_draft}")
    device = model.lm_head.weight.device
    ids = _as_tensor(prompt, device)
    n = ids.size(1)
    if n + max_new_tokens > model.cfg.max_seq_len:
        raise ValueError(f"prompt {n} + {max_new_tokens} new tokens exceed max_seq_len")
    stats = SpecStats()
    if max_new_tokens <= 0:
        return [], stats
    cache = model.new_cache(1, n + max_new_tokens)
    logits = model.forward_stages(ids, cache=cache, start=0)[:, :, -1]
    pending = int(poe_log_probs(logits).argmax(-1))
    out = [pending]
    n_stages = model.cfg.n_stages
    while len(out) < max_new_tokens:
        k = min(k_draft, max_new_tokens - len(out) - 1)
        drafts: list[int] = []
        residuals: list[Tensor] = []
        stage0_logits: list[Tensor] = []
        tok = pending
        for i in range(k + 1):  # stage 0 alone, one token at a time: pending, d_1, ..., d_k
            x, (logits0,) = model.run_stages(
                model.embed(ids.new_tensor([[tok]])), 0, 1, cache=cache, start=n + i
            )
            residuals.append(x)
            stage0_logits.append(logits0)
            if i < k:
                tok = int(logits0[0, -1].argmax(-1))
                drafts.append(tok)
        # verify: the deeper stages catch up on positions n..n+k in one pass
        _, deeper = model.run_stages(torch.cat(residuals, 1), 1, n_stages, cache=cache, start=n)
        stage_logits = torch.stack([torch.cat(stage0_logits, 1), *deeper])
        full_tokens = poe_log_probs(stage_logits)[0].argmax(-1).tolist()
        m = 0
        while m < k and drafts[m] == full_tokens[m]:
            m += 1
        out.extend(drafts[:m])
        pending = full_tokens[m]
        out.append(pending)
        cache.truncate(n + m + 1)  # positions of pending and d_1..d_m stay; rejected ones go
        n += m + 1
        stats.proposed += k
        stats.accepted += m
        stats.rounds += 1
        stats.accepted_per_round.append(m)
    stats.emitted = len(out) - 1  # the prefill's token is not from a round
    return out, stats


def speculative_projected_speedup(alpha: float, k: int, d0: float) -> float:
    """Leviathan et al.: ``E / (k * d0 + 1)`` with ``E = (1 - alpha^(k+1)) / (1 - alpha)``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    expected = float(k + 1) if alpha == 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)
    return expected / (k * d0 + 1.0)


def routing_projected_speedup(fraction: float, d0: float) -> float:
    """``1 / (f * d0 + (1 - f))``: routed positions cost ``d0``, the others a full forward."""
    return 1.0 / (fraction * d0 + (1.0 - fraction))


@dataclass
class RoutingResult:
    routed_fraction: float
    n_routed: int
    acc_full: float
    acc_stage0: float
    acc_mixed: float
    projected_speedup: float


def routing_at_cap(
    confidence: Tensor, correct_stage0: Tensor, correct_full: Tensor, cap: float, d0: float
) -> RoutingResult:
    """Largest fraction of positions served by stage 0 alone within an accuracy loss ``cap``.

    Positions are ordered by stage-0 ``confidence`` (descending, stable); routing the ``n`` most
    confident gives the mixed accuracy
    ``(sum_{routed} correct_stage0 + sum_{rest} correct_full) / N``.
    ``n*`` is the largest ``n`` in ``0..N`` with ``acc_full - acc_mixed(n) <= cap`` (the loss is not
    monotone in ``n``, so every ``n`` is checked); ``f = n*/N``; speedup
    ``routing_projected_speedup(f, d0)``.
    """
    total = confidence.numel()
    if total == 0:
        raise ValueError("routing_at_cap needs at least one position")
    order = torch.argsort(confidence.flatten().double(), descending=True, stable=True)
    c0 = correct_stage0.flatten().double()[order]
    cf = correct_full.flatten().double()[order]
    zero = torch.zeros(1, dtype=torch.float64)
    # mixed correct count when routing the first n: cumsum(c0)[n] + (sum(cf) - cumsum(cf)[n])
    mixed = torch.cat([zero, c0.cumsum(0)]) + cf.sum() - torch.cat([zero, cf.cumsum(0)])
    acc_full = float(cf.sum()) / total
    loss = acc_full - mixed / total
    ok = torch.nonzero(loss <= cap + 1e-12).flatten()
    n_routed = int(ok.max())  # n = 0 always qualifies (loss 0)
    fraction = n_routed / total
    return RoutingResult(
        routed_fraction=fraction,
        n_routed=n_routed,
        acc_full=acc_full,
        acc_stage0=float(c0.sum()) / total,
        acc_mixed=float(mixed[n_routed]) / total,
        projected_speedup=routing_projected_speedup(fraction, d0),
    )


@dataclass
class PositionStats:
    """Per-position results over evaluation windows (``N`` byte targets, ``K`` stages).

    ``nll_stage[k]`` / ``nll_prefix[j]``: NLL in nats of stage ``k`` alone / of the PoE aggregate
    over the first ``j+1`` stages (``nll_prefix[0] == nll_stage[0]``, ``nll_prefix[K-1]`` = full);
    ``correct_*``: top-1 hits; ``conf0_max_prob`` / ``conf0_margin``: stage-0 max probability and
    top-1 minus top-2 probability.
    """

    nll_stage: Tensor
    nll_prefix: Tensor
    correct_stage: Tensor
    correct_prefix: Tensor
    conf0_max_prob: Tensor
    conf0_margin: Tensor


def window_stats(logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """Per-position results of one batch of windows: ``logits`` (K, B, T, V) of every stage,
    ``targets`` (B, T); returns the :class:`PositionStats` fields for its ``B*T`` positions."""
    logits = logits.float()
    k_total = logits.size(0)
    flat_t = targets.reshape(-1)
    stage_lp = F.log_softmax(logits, dim=-1).flatten(1, 2)  # (K, N, V)
    prefix_lp = torch.stack([poe_log_probs(logits, j + 1) for j in range(k_total)]).flatten(1, 2)
    idx = flat_t.view(1, -1, 1).expand(k_total, -1, 1)
    top2 = stage_lp[0].exp().topk(2, dim=-1).values
    return {
        "nll_stage": -stage_lp.gather(-1, idx).squeeze(-1),
        "nll_prefix": -prefix_lp.gather(-1, idx).squeeze(-1),
        "correct_stage": stage_lp.argmax(-1) == flat_t,
        "correct_prefix": prefix_lp.argmax(-1) == flat_t,
        "conf0_max_prob": top2[:, 0],
        "conf0_margin": top2[:, 0] - top2[:, 1],
    }


def merge_stats(parts: list[dict[str, Tensor]]) -> PositionStats:
    """Concatenate :func:`window_stats` results along the position dimension (moved to CPU)."""
    cat_dims = {"conf0_max_prob": 0, "conf0_margin": 0}
    return PositionStats(
        **{
            name: torch.cat([p[name] for p in parts], dim=cat_dims.get(name, 1)).cpu()
            for name in PositionStats.__dataclass_fields__
        }
    )


@torch.inference_mode()
def position_stats(model: PoELM, data: bytes, seq_len: int, batch_size: int = 16) -> PositionStats:
    """Evaluate ``data`` in non-overlapping windows of ``seq_len`` bytes (a shorter tail is
    dropped): input ``[BOS] + w[:-1]``, targets ``w``; every byte is predicted once."""
    n_windows = len(data) // seq_len
    if n_windows == 0:
        raise ValueError(f"evaluation text of {len(data)} bytes is shorter than seq_len={seq_len}")
    windows = torch.tensor(list(data[: n_windows * seq_len]), dtype=torch.long).view(-1, seq_len)
    device = model.lm_head.weight.device
    parts: list[dict[str, Tensor]] = []
    for lo in range(0, n_windows, batch_size):
        targets = windows[lo : lo + batch_size].to(device)
        inputs = torch.cat([torch.full_like(targets[:, :1], BOS), targets[:, :-1]], dim=1)
        parts.append(window_stats(model.forward_stages(inputs), targets))
    return merge_stats(parts)


def bits_per_byte(nll_nats: Tensor, n_bytes: int | None = None) -> float:
    """NLL (nats) of predicted tokens converted to bits per byte: ``sum / n_bytes / ln 2``, with
    ``n_bytes`` the UTF-8 byte count of the predicted text (default: one byte per token, as in
    the byte-level PoE model, i.e. ``mean / ln 2``)."""
    total = float(nll_nats.double().sum())
    n = nll_nats.numel() if n_bytes is None else n_bytes
    return total / max(n, 1) / math.log(2.0)


@dataclass
class DecodeComparison:
    """Plain-greedy vs speculative decoding of one prompt: wall-clock seconds (``*_s``) and CPU
    seconds of this process (``*_cpu_s``, insensitive to other processes competing for cores)."""

    plain_tokens: list[int]
    spec_tokens: list[int]
    plain_s: float
    spec_s: float
    plain_cpu_s: float
    spec_cpu_s: float
    stats: SpecStats

    @property
    def identical(self) -> bool:
        return self.plain_tokens == self.spec_tokens

    @property
    def speedup(self) -> float:
        """Wall-clock plain time / speculative time."""
        return self.plain_s / self.spec_s

    @property
    def cpu_speedup(self) -> float:
        """CPU-time plain / speculative."""
        return self.plain_cpu_s / self.spec_cpu_s


def compare_decoding(
    model: PoELM, prompt: list[int], max_new_tokens: int, k_draft: int, spec_first: bool = False
) -> DecodeComparison:
    """Time plain cached greedy and self-speculative decoding of one prompt (batch 1, each under
    ``torch.inference_mode``; ``time.perf_counter`` and ``time.process_time`` around the whole
    decode incl. prefill). ``spec_first`` runs the speculative decode first (alternate it to
    cancel order effects)."""

    return time_decodes(
        lambda: greedy_decode(model, prompt, max_new_tokens, use_cache=True),
        lambda: speculative_decode(model, prompt, max_new_tokens, k_draft),
        spec_first,
    )


def time_decodes(
    plain: Callable[[], list[int]],
    spec: Callable[[], tuple[list[int], SpecStats]],
    spec_first: bool = False,
) -> DecodeComparison:
    """Run and time one plain and one speculative decode (each under ``torch.inference_mode``,
    ``time.perf_counter`` and ``time.process_time`` around the whole call); ``spec_first`` runs
    the speculative one first."""

    def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            value = fn()
        return value, time.perf_counter() - w0, time.process_time() - c0

    if spec_first:
        (spec_tokens, stats), spec_s, spec_cpu = timed(spec)
        plain_tokens, plain_s, plain_cpu = timed(plain)
    else:
        plain_tokens, plain_s, plain_cpu = timed(plain)
        (spec_tokens, stats), spec_s, spec_cpu = timed(spec)
    return DecodeComparison(plain_tokens, spec_tokens, plain_s, spec_s, plain_cpu, spec_cpu, stats)
