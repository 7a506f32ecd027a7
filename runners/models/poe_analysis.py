"""The PoE card's numeric probes as tensor math (no model, no data): WAND bounds, the crossover
gap, stage-head diversity and the beta sweep. The jobs are in ``runners/jobs/poe_card.py``.

Notation: ``K`` stages; per position the stage logits split into the shared head's reading and
the stage head's additive delta, ``logits_k = base_k + delta_k`` (``base_k = lm_head(x_k)``,
``delta_k = head_k(x_k)``, the card's ``lm_head(x_k) + lm_head_stages[k](x_k)``). ``c_k`` is the
renormalised cumulative PoE over the first ``k + 1`` stages,
``c_k = poe_log_probs(logits, k + 1)`` (:func:`~docketml.runners.models.poe.poe_log_probs`).

WAND bounds (the card's "tight margin-shrinkage metric")
    For boundary ``k -> k+1`` (``k = 0..K-2``) and a position, ``d = c_{k+1} - c_k`` (a vector
    over the vocabulary) and ``range_k = max_v d - min_v d``. Adding the stage can shrink the
    log-probability margin of any token ``a`` over any ``b`` by at most ``range_k``:
    ``(c_{k+1}[a] - c_{k+1}[b]) - (c_k[a] - c_k[b]) = d[a] - d[b] >= -range_k``. ``range`` is
    invariant to a constant shift of ``d``, so renormalising ``c_k`` does not change it. The bound
    of the boundary is the ``q`` quantile (``q = 0.99``: p99) of ``range_k`` over the positions of
    a calibration slice (:func:`quantile`, linear interpolation, numpy's default method).
    Coverage on an evaluation slice = share of its positions with ``range_k <= bound_k``.

WAND adaptive depth (:func:`wand_exit`)
    At stage ``k < K-1`` the top-1 margin ``m_k = c_k[top1] - c_k[top2]``; by the inequality
    above the final top-1 equals ``c_k``'s when ``m_k > safety * sum_{j>=k} bound_j`` and every
    remaining range is within its bound. A position exits at the first such ``k`` (else it uses
    all ``K`` stages); ``stages_used = k + 1`` and ``agree`` = its prediction equals the full
    PoE's top-1.

Crossover gap
    ``gap = BPB(full PoE) - BPB(deepest single stage, log_softmax(logits_{K-1}) alone)``;
    negative means the aggregate beats the deepest stage. The crossover is where the gap changes
    sign along the trajectory (:func:`sign_changes`).

Stage diversity (weights ``W_k`` of shape (V, d), the additive stage heads)
    ``u_k`` = dominant left singular vector of ``W_k`` (in token space, length V) with the sign
    fixed so that its largest-magnitude entry is positive (sklearn's ``svd_flip`` convention; the
    SVD alone leaves the sign arbitrary); ``cos(i, j) = u_i . u_j`` (unit vectors). Gram-Schmidt
    on the flattened heads ``w_k = vec(W_k)`` in stage order: ``r_k = w_k - P_{k} w_k`` with
    ``P_k`` the orthogonal projector onto ``span(w_0..w_{k-1})``; the unique fraction is the
    energy share ``||r_k||^2 / ||w_k||^2`` (so the share projecting onto earlier stages is
    ``1 - unique``; stage 0 is 1 by definition) and the total unique share is
    ``sum_k ||r_k||^2 / sum_k ||w_k||^2``. A zero head has no direction: :func:`head_diversity`
    refuses it.

Beta sweep (:func:`scaled_logits`)
    Stage ``k``'s delta scaled by ``beta``: ``logits_k = base_k + beta * delta_k``, the other
    stages unchanged (``stage=None`` scales every stage); the metric is the PoE aggregate's BPB.
    ``beta = 0`` is the single-stage ablation (stage ``k`` reads through the shared head only),
    ``beta = 1`` the trained model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .poe import poe_log_probs


def cumulative_poe(logits: Tensor) -> Tensor:
    """``c`` (K, N, V) with ``c[k] = poe_log_probs(logits, k + 1)``, ``logits`` (K, N, V)."""
    return torch.stack([poe_log_probs(logits, k + 1) for k in range(logits.size(0))])


def wand_ranges(cum: Tensor) -> Tensor:
    """(K-1, N): ``max_v d - min_v d`` with ``d = cum[k+1] - cum[k]`` (module doc)."""
    d = cum[1:] - cum[:-1]
    return d.amax(dim=-1) - d.amin(dim=-1)


def quantile(values: Tensor, q: float) -> Tensor:
    """The ``q`` quantile of each row of ``values`` (R, N), linear interpolation between order
    statistics: position ``q * (N - 1)`` of the sorted row (numpy's default ``linear``)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile q must be in (0, 1), got {q}")
    return torch.quantile(values.double(), q, dim=-1)


def top2_margin(cum: Tensor) -> tuple[Tensor, Tensor]:
    """``(margin, top1)`` of each ``cum[k]`` over the vocabulary: top-1 minus top-2 value and the
    top-1 index (ties to the lowest id)."""
    top = cum.topk(2, dim=-1)
    return top.values[..., 0] - top.values[..., 1], cum.argmax(dim=-1)


@dataclass(frozen=True)
class WandExit:
    """Per position: stages used (1..K) and whether the exit prediction equals the full PoE's."""

    stages_used: Tensor
    agree: Tensor


def wand_exit(margin: Tensor, top1: Tensor, bounds: Tensor, safety: float = 1.0) -> WandExit:
    """WAND adaptive depth (module doc) from ``margin``/``top1`` (K, N) of the cumulative PoE and
    the ``K-1`` boundary ``bounds``."""
    k_total = margin.size(0)
    remaining = torch.flip(torch.cumsum(torch.flip(bounds.double(), [0]), 0), [0])  # sum_{j>=k}
    stages_used = torch.full((margin.size(1),), k_total, dtype=torch.long)
    pred = top1[-1].clone()
    done = torch.zeros(margin.size(1), dtype=torch.bool)
    for k in range(k_total - 1):
        exit_now = (~done) & (margin[k].double() > safety * remaining[k])
        stages_used[exit_now] = k + 1
        pred[exit_now] = top1[k][exit_now]
        done |= exit_now
    return WandExit(stages_used=stages_used, agree=pred == top1[-1])


def scaled_logits(base: Tensor, delta: Tensor, beta: float, stage: int | None) -> Tensor:
    """``base + delta`` with stage ``stage``'s delta (every stage's if ``None``) times ``beta``."""
    if stage is None:
        return base + beta * delta
    scale = torch.ones(base.size(0), dtype=base.dtype, device=base.device)
    scale[stage] = beta
    return base + scale.view(-1, *([1] * (base.dim() - 1))) * delta


def target_nll(log_probs: Tensor, targets: Tensor) -> Tensor:
    """NLL (nats) of ``targets`` (N,) under ``log_probs`` (N, V)."""
    return -log_probs.gather(-1, targets.view(-1, 1)).squeeze(-1)


def stage_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """(K, N) NLL of ``targets`` under each stage alone, ``log_softmax(logits_k)``."""
    lp = F.log_softmax(logits.float(), dim=-1)
    return -lp.gather(-1, targets.view(1, -1, 1).expand(lp.size(0), -1, 1)).squeeze(-1)


def sign_changes(steps: list[int], gaps: list[float]) -> list[int]:
    """Steps at which the gap's sign differs from the previous checkpoint's (zero counts as its
    own sign); the crossover points of the trajectory."""
    sign = [(g > 0) - (g < 0) for g in gaps]
    return [steps[i] for i in range(1, len(steps)) if sign[i] != sign[i - 1]]


# ------------------------------------------------------------------------------ stage diversity


def dominant_left_singular(weight: Tensor) -> Tensor:
    """Unit dominant left singular vector (length V) of ``weight`` (V, d), float64, the sign
    fixed so that the largest-magnitude entry is positive."""
    u, _, _ = torch.linalg.svd(weight.detach().double().cpu(), full_matrices=False)
    u1 = u[:, 0]
    return u1 * torch.sign(u1[u1.abs().argmax()])


def gram_schmidt_unique(weights: list[Tensor], tol: float = 1e-10) -> list[float]:
    """``||r_k||^2 / ||w_k||^2`` for each flattened head against the earlier ones (module doc);
    modified Gram-Schmidt with one re-orthogonalisation pass, in float64."""
    basis: list[Tensor] = []
    out: list[float] = []
    for w in weights:
        w = w.detach().double().cpu().reshape(-1)
        r = w.clone()
        for _ in range(2):  # twice is enough (Kahan/Parlett) for numerical orthogonality
            for q in basis:
                r -= (q @ r) * q
        norm_w, norm_r = float(w @ w), float(r @ r)
        out.append(norm_r / norm_w)
        if norm_r > tol * norm_w:
            basis.append(r / norm_r**0.5)
    return out


@dataclass(frozen=True)
class Diversity:
    """``cos[(i, j)]`` for every pair ``i < j``, ``unique[k]`` per head and the total share."""

    cos: dict[tuple[int, int], float]
    unique: list[float]
    unique_total: float


def head_diversity(weights: list[Tensor]) -> Diversity:
    """Stage diversity of the additive stage heads (module doc); ``ValueError`` naming a zero
    head (an untrained, zero-initialised head has no singular direction)."""
    zero = [k for k, w in enumerate(weights) if not bool(w.detach().abs().max() > 0)]
    if zero:
        raise ValueError(f"stage heads {zero} are all zero (untrained): no diversity to measure")
    u = [dominant_left_singular(w) for w in weights]
    cos = {(i, j): float(u[i] @ u[j]) for i in range(len(u)) for j in range(i + 1, len(u))}
    unique = gram_schmidt_unique(weights)
    energy = [float(w.detach().double().square().sum()) for w in weights]
    total = sum(f * e for f, e in zip(unique, energy, strict=True)) / sum(energy)
    return Diversity(cos=cos, unique=unique, unique_total=total)
