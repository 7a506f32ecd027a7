"""PoE per-stage-head byte-level language model (one readable file, nanoGPT spirit).

Vocabulary
    Bytes 0..255 plus ``BOS = 256`` (``vocab_size = 257``). Every sequence the model sees starts
    with BOS: training windows are ``[BOS] + window[:-1]`` predicting ``window``; prompts are
    ``[BOS] + prompt_bytes``. Bits per byte (BPB) therefore average the NLL of byte targets only.

Trunk
    A pre-norm decoder: ``x = wte(idx)``; per layer ``x = x + attn(norm(x))``,
    ``x = x + mlp(norm(x))``; ``norm`` is a parameter-free RMSNorm (eps ``norm_eps``), attention is
    causal multi-head with rotary positions (rotate-half, base ``rope_theta``) and optional
    grouped-query K/V heads (``n_kv_head``), the MLP is ``proj(relu(fc(x))^2)`` (relu-squared as in
    the Cognica card). The ``n_layer = sum(layout)`` layers are cut into ``K = len(layout)`` stages;
    stage ``k`` ends after layer ``sum(layout[:k+1]) - 1``.

Per-stage heads (``x_k`` = residual stream at the end of stage ``k``)
    ``logits_k = lm_head(norm(x_k)) + head_k(norm(x_k))`` with a shared ``lm_head`` and an additive
    per-stage ``head_k`` (zero-initialised, so at init every stage reads through the shared head).

PoE aggregate over the first ``K'`` stages (``K' = K`` is the full model)
    ``a = (1/K') * sum_{k<K'} log_softmax(logits_k)``;  ``log p = a - logsumexp(a)``
    (uniform geometric mean of the stage distributions, renormalised; the card's poe_alpha = 0).

Training loss
    ``loss = (1/K) * sum_k CE(logits_k, targets)`` (mean over stages of the per-stage cross
    entropy: every stage head is trained as a standalone LM; the PoE aggregate is used at
    inference). With ``stop_grad_at_boundaries=True`` the residual stream is detached at every
    stage boundary, so the loss of stage ``k`` only trains stage ``k``'s layers, ``head_k`` and the
    shared ``lm_head`` (and, for stage 0, the embedding): local learning.

KV cache
    :class:`KVCache` stores K/V per layer with a per-layer valid length.
    ``run_stages(x, first, last, cache, start)`` writes positions ``[start, start+T)`` of the
    layers of stages ``first..last-1`` (every layer it runs must be valid up to ``start``) and sets
    their length to ``start + T``. So drafting runs stage 0 alone one token at a time (keeping the
    stage-0 residual stream of each position) and verification later catches the deeper stages up
    on those positions in one pass, starting from the kept residuals; ``truncate(n)`` rolls every
    layer back to ``n`` positions (rejected drafts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BOS = 256
VOCAB_SIZE = 257
CHECKPOINT_FORMAT = "docket-poe-v1"


@dataclass(frozen=True)
class PoEConfig:
    """Architecture of a PoE LM (everything needed to rebuild the module from a state dict)."""

    layout: tuple[int, ...] = (2, 1, 1, 1)  # layers per stage
    n_embd: int = 64
    n_head: int = 4
    n_kv_head: int | None = None  # None = n_head (plain multi-head attention)
    mlp_hidden: int = 256
    vocab_size: int = VOCAB_SIZE
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", tuple(int(n) for n in self.layout))
        if not self.layout or min(self.layout) < 1:
            raise ValueError(
                f"layout must be a non-empty tuple of positive ints, got {self.layout}"
            )
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.kv_heads}")

    @property
    def n_layer(self) -> int:
        return sum(self.layout)

    @property
    def n_stages(self) -> int:
        return len(self.layout)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    def depth_fraction(self, n_stages: int = 1) -> float:
        """Share of trunk layers run by the first ``n_stages`` stages (stage 0 alone: ``d0``)."""
        return sum(self.layout[:n_stages]) / self.n_layer


CONFIGS: dict[str, PoEConfig] = {
    # Tests and the tiny study: 5 layers, stage 0 = 2/5 of the depth.
    "tiny": PoEConfig(layout=(2, 1, 1, 1), n_embd=64, n_head=4, mlp_hidden=256, max_seq_len=256),
    # Benchmark: the card's asymmetric shape scaled by 1/4, stage 0 = exactly half the depth.
    "small": PoEConfig(layout=(4, 2, 1, 1), n_embd=128, n_head=4, mlp_hidden=512, max_seq_len=256),
    # The card's (16, 6, 5, 5) layout at the card's trunk size (GQA 2:1, relu^2 MLP 12800) with a
    # byte vocabulary; count its parameters with count_parameters() (never allocate it on CPU).
    "cognica-3b-layout": PoEConfig(
        layout=(16, 6, 5, 5),
        n_embd=2048,
        n_head=16,
        n_kv_head=8,
        mlp_hidden=12800,
        max_seq_len=2048,
        rope_theta=100000.0,
    ),
}


def get_config(name: str, **overrides: Any) -> PoEConfig:
    """A named config with optional field overrides (e.g. ``layout=(3, 1)``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown PoE model config {name!r}; known: {sorted(CONFIGS)}")
    return replace(CONFIGS[name], **overrides)


def parameter_breakdown(cfg: PoEConfig) -> dict[str, int]:
    """Parameter counts computed from the config alone (no allocation).

    wte = V*d; per layer: q and out-proj d*d each, k and v d*(kv_heads*head_dim) each, MLP 2*d*h;
    lm_head = V*d; stage_heads = K*V*d. Norms are parameter-free; rotary tables are buffers.
    """
    d, v = cfg.n_embd, cfg.vocab_size
    kv = cfg.kv_heads * cfg.head_dim
    per_layer = 2 * d * d + 2 * d * kv + 2 * d * cfg.mlp_hidden
    parts = {
        "wte": v * d,
        "trunk": cfg.n_layer * per_layer,
        "lm_head": v * d,
        "stage_heads": cfg.n_stages * v * d,
    }
    parts["total"] = sum(parts.values())
    return parts


def count_parameters(cfg: PoEConfig) -> int:
    """Total parameter count of ``PoELM(cfg)`` without allocating it."""
    return parameter_breakdown(cfg)["total"]


def rms_norm(x: Tensor, eps: float) -> Tensor:
    """Parameter-free RMSNorm: ``x / sqrt(mean(x^2) + eps)`` over the last dimension."""
    return F.rms_norm(x, (x.size(-1),), eps=eps)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE on ``x`` of shape (B, H, T, hd) with ``cos``/``sin`` of shape (T, hd/2)."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class KVCache:
    """Per-layer K/V buffers of shape (B, kv_heads, capacity, head_dim) and valid lengths."""

    def __init__(
        self,
        cfg: PoEConfig,
        batch: int,
        capacity: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity > cfg.max_seq_len:
            raise ValueError(f"cache capacity {capacity} exceeds max_seq_len {cfg.max_seq_len}")
        shape = (batch, cfg.kv_heads, capacity, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.lengths = [0] * cfg.n_layer
        self.capacity = capacity

    def truncate(self, n: int) -> None:
        """Forget every position >= ``n`` in every layer (KV rollback)."""
        self.lengths = [min(length, n) for length in self.lengths]


class Attention(nn.Module):
    def __init__(self, cfg: PoEConfig) -> None:
        super().__init__()
        self.n_head, self.kv_heads, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        kv = cfg.kv_heads * cfg.head_dim
        self.q = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.kv = nn.Linear(cfg.n_embd, 2 * kv, bias=False)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        start: int = 0,
        mask: Tensor | None = None,
    ) -> Tensor:
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, t, 2 * self.kv_heads, self.head_dim).transpose(1, 2).chunk(2, 1)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        gqa = self.kv_heads != self.n_head
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            end = start + t
            cache.k[layer][:, :, start:end] = k
            cache.v[layer][:, :, start:end] = v
            k, v = cache.k[layer][:, :, :end], cache.v[layer][:, :, :end]
            if t == 1:  # one query sees every cached key
                y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
            elif start == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            else:  # additive mask built once per forward by PoELM.run_stages
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: PoEConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.relu(self.fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: PoEConfig) -> None:
        super().__init__()
        self.eps = cfg.norm_eps
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache: KVCache | None,
        layer: int,
        start: int,
        mask: Tensor | None = None,
    ) -> Tensor:
        x = x + self.attn(rms_norm(x, self.eps), cos, sin, cache, layer, start, mask)
        return x + self.mlp(rms_norm(x, self.eps))


class PoELM(nn.Module):
    """The PoE per-stage-head LM; see the module docstring for the formulas."""

    def __init__(self, cfg: PoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.stage_heads = nn.ModuleList(
            nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False) for _ in range(cfg.n_stages)
        )
        inv_freq = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2) / cfg.head_dim)
        angles = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style init: N(0, 0.02), residual projections scaled by 1/sqrt(2*n_layer),
        per-stage heads zero (each stage starts as the shared head's reading of its stream)."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.cfg.n_layer))
        for head in self.stage_heads:
            nn.init.zeros_(head.weight)

    def embed(self, idx: Tensor) -> Tensor:
        """Token embeddings: the residual stream entering layer 0, shape (B, T, d)."""
        return self.wte(idx)

    def run_stages(
        self,
        x: Tensor,
        first: int,
        last: int,
        cache: KVCache | None = None,
        start: int = 0,
        stop_grad_at_boundaries: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """Run stages ``first..last-1`` on the residual stream ``x`` entering stage ``first``.

        Returns the residual stream after stage ``last - 1`` and the per-stage logits
        ``[logits_first, ..., logits_{last-1}]`` (each (B, T, V)). With a ``cache`` the T positions
        are ``[start, start + T)``; every layer that runs must hold at least ``start`` valid
        positions and afterwards holds exactly ``start + T``.
        """
        cfg = self.cfg
        if not 0 <= first <= last <= cfg.n_stages:
            raise ValueError(f"bad stage range [{first}, {last}) for {cfg.n_stages} stages")
        t = x.size(1)
        if start + t > cfg.max_seq_len:
            raise ValueError(f"positions up to {start + t} exceed max_seq_len {cfg.max_seq_len}")
        lo, hi = sum(cfg.layout[:first]), sum(cfg.layout[:last])
        mask = None
        if cache is not None:
            short = [i for i in range(lo, hi) if cache.lengths[i] < start]
            if short:
                raise ValueError(f"KV cache layers {short} hold fewer than start={start} positions")
            if t > 1 and start > 0:  # query i sits at position start + i, sees keys 0..start + i
                allowed = torch.ones(t, start + t, dtype=torch.bool, device=x.device)
                mask = torch.zeros(t, start + t, dtype=x.dtype, device=x.device)
                mask.masked_fill_(~allowed.tril(diagonal=start), float("-inf"))
        cos, sin = self.cos[start : start + t], self.sin[start : start + t]
        logits, layer = [], lo
        for stage in range(first, last):
            if stop_grad_at_boundaries and stage > 0:
                x = x.detach()
            for _ in range(cfg.layout[stage]):
                x = self.blocks[layer](x, cos, sin, cache, layer, start, mask)
                layer += 1
            h = rms_norm(x, cfg.norm_eps)
            logits.append(self.lm_head(h) + self.stage_heads[stage](h))
        if cache is not None:
            for i in range(lo, hi):
                cache.lengths[i] = start + t
        return x, logits

    def forward_stages(
        self,
        idx: Tensor,
        n_stages: int | None = None,
        cache: KVCache | None = None,
        start: int = 0,
        stop_grad_at_boundaries: bool = False,
    ) -> Tensor:
        """Per-stage logits of shape (S, B, T, V) for the first ``S = n_stages`` stages (only
        their layers run); cache semantics as in :meth:`run_stages`."""
        n_stages = self.cfg.n_stages if n_stages is None else n_stages
        if n_stages < 1:
            raise ValueError(f"n_stages must be >= 1, got {n_stages}")
        _, logits = self.run_stages(
            self.embed(idx), 0, n_stages, cache, start, stop_grad_at_boundaries
        )
        return torch.stack(logits)

    def loss(
        self, idx: Tensor, targets: Tensor, stop_grad_at_boundaries: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``(mean_k CE(logits_k, targets), per-stage CE of shape (K,))`` in nats per token."""
        logits = self.forward_stages(idx, stop_grad_at_boundaries=stop_grad_at_boundaries)
        k, b, t, v = logits.shape
        ce = F.cross_entropy(
            logits.reshape(k * b * t, v), targets.repeat(k, 1, 1).reshape(-1), reduction="none"
        )
        per_stage = ce.view(k, b * t).mean(dim=1)
        return per_stage.mean(), per_stage

    def new_cache(self, batch: int = 1, capacity: int | None = None) -> KVCache:
        """An empty KV cache matching this model's parameters (device and dtype)."""
        weight = self.lm_head.weight
        cap = self.cfg.max_seq_len if capacity is None else capacity
        return KVCache(self.cfg, batch, cap, device=weight.device, dtype=weight.dtype)


def poe_log_probs(stage_logits: Tensor, n_stages: int | None = None) -> Tensor:
    """Renormalised PoE log-probabilities over the first ``n_stages`` stages.

    ``a = mean_{k < n_stages} log_softmax(stage_logits[k])``; returns ``a - logsumexp(a)`` over the
    vocabulary (last) dimension. ``stage_logits`` has shape (K, ..., V).
    """
    n = stage_logits.size(0) if n_stages is None else n_stages
    mean = F.log_softmax(stage_logits[:n].float(), dim=-1).mean(dim=0)
    return mean - torch.logsumexp(mean, dim=-1, keepdim=True)


def save_checkpoint(model: PoELM, path: Path | str, step: int) -> Path:
    """``torch.save({"config", "state_dict", "format": "docket-poe-v1", "step"}, path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": asdict(model.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
    }
    torch.save(payload, path)
    return path


def load_checkpoint(path: Path | str, map_location: str = "cpu") -> tuple[PoELM, int]:
    """Rebuild a model from a ``docket-poe-v1`` checkpoint; returns ``(model in eval mode, step)``.

    Raises ``ValueError`` naming the file when the format tag, the config or the state dict
    (missing / unexpected keys, shape mismatches) do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PoE checkpoint not found: {path}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (format={got!r})")
    try:
        cfg = PoEConfig(**payload["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: bad PoE config {payload.get('config')!r}: {err}") from err
    model = PoELM(cfg)
    expected = model.state_dict()
    state = payload["state_dict"]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path}: state dict does not match config {cfg}: missing={missing} "
            f"unexpected={unexpected} shape mismatches={shapes}"
        )
    model.load_state_dict(state)
    model.eval()
    return model, int(payload.get("step", 0))
