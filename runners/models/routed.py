"""Routed byte-level language model (one readable file, nanoGPT spirit).

Vocabulary
    Token ids ``0..255`` are raw bytes; three specials follow: ``BOS = 256`` (starts every
    sequence), ``EOS = 257`` (ends a document / a chat answer; greedy generation stops on it),
    ``PAD = 258`` (fills batches; never attended to, never a loss target). ``vocab_size = 259``:
    "vocab 256" in the paper's sense (byte level) plus the three specials.

Block (pre-norm, one residual per block)::

    h  = LayerNorm(x)
    r  = softmax(W_g h)                         W_g: d -> 3, no bias        ("router", the gate)
    local(h)  = W_lo( dwconv_k(u) * sigmoid(g) ),   [u, g] = W_li h         gated depthwise causal
                                                                            conv, kernel k (5)
    sparse(h) = W_o  Attn_topk(W_qkv h)         causal multi-head attention; per query only the
                                                top-k scores survive, the rest are set to -inf
                                                before the softmax (so exactly min(k, #visible)
                                                keys get weight)
    dense(h)  = W_2( silu(W_1 h) * W_3 h )      SwiGLU FFN, hidden = ffn_mult * d (x4)
    x' = x + r_0 * local(h) + r_1 * sparse(h) + r_2 * dense(h)

Model::

    x_0 = E_tok[token] + E_pos[position];  x_L = blocks(x_0);  h_final = LayerNorm(x_L)
    logits = W_lm h_final (untied, no bias);  abstain_p = sigmoid(w_a . h_final + b_a)

``forward`` returns :class:`RoutedOutput` ``(logits (B,T,V), gates (B,T,L,3), abstain_p (B,T))``.

Parameter count of ``tilelli-10m`` (d = 256, L = 8, heads = 8, V = 259, block_size = 256,
kernel 5, FFN hidden 4d = 1024; no biases except the conv, the LayerNorms and the abstain head)::

    per block  norm    2d                         =       512
               router  3d                         =       768   (x 8 = 6,144: the paper's router)
               local   d*2d + 5d + d + d*d        =   198,144   (in-proj, conv w+b, out-proj)
               sparse  3d*d + d*d                 =   262,144   (qkv + out projections)
               dense   3 * d*4d                   =   786,432   (SwiGLU W_1, W_3, W_2)
               block total                        = 1,248,000   x 8 = 9,984,000
    embeddings  V*d + block_size*d = 66,304 + 65,536      =   131,840
    final norm 2d = 512;  lm head d*V = 66,304;  abstain head d + 1 = 257
    total                                                  = 10,182,913   (-0.17 % vs 10.2 M)

Padding
    Batches carry an ``attention_mask`` (1 = real token). Positions are ``cumsum(mask) - 1`` so a
    left- or right-padded prompt gets the same positions as unpadded; pad keys are masked out of
    attention (a pad query attends to itself only, its output is unused); the conv input ``u`` is
    zeroed at pads, which is exactly the zero history an unpadded causal conv sees. Real positions
    of a padded batch therefore equal the unpadded computation.

KV cache (:class:`KVCache`)
    After ``prefill`` the cache holds per layer the attention K/V of every prompt slot (buffers
    pre-allocated for ``max_new_tokens`` more), the last ``kernel - 1`` conv inputs ``u`` of each
    row's real tokens, a per-slot validity mask and each row's next position. ``step`` feeds one
    token per row and touches only that position: no re-forward of the prefix.

Parameter groups (``trainable:`` in protocols), disjoint, by parameter name
    ``embeddings`` (tok_emb, pos_emb), ``router`` (every block's gate linear W_g), ``local``,
    ``sparse``, ``dense``, ``block_norms`` (the per-block LayerNorms), ``final_norm``, ``lm_head``,
    ``abstain`` (abstain head). Aliases: ``blocks`` = local + sparse + dense + block_norms (the
    blocks without their routers), ``pathways`` = local + sparse + dense, ``all``.

Checkpoint format (``docket-routed-v1``), a ``torch.save`` of a plain dict::

    {"format": "docket-routed-v1", "config": dataclasses.asdict(RoutedConfig), "state_dict": {...}}

plus an optional JSON-able ``"meta"`` dict. :func:`load_checkpoint` rebuilds the model from
``config`` and refuses (``ValueError``) a wrong format, unknown config keys, or a state dict whose
keys / shapes do not match the architecture, naming every missing / unexpected key and shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

N_BYTES = 256
BOS = 256
EOS = 257
PAD = 258
VOCAB_SIZE = 259
CHECKPOINT_FORMAT = "docket-routed-v1"
PATHWAYS = ("local", "sparse", "dense")


@dataclass(frozen=True)
class RoutedConfig:
    """Architecture of a routed LM (everything needed to rebuild it from a state dict)."""

    name: str = "tiny"
    vocab_size: int = VOCAB_SIZE
    block_size: int = 256  # learned positions; prompt + generated tokens must fit
    d_model: int = 64
    n_layer: int = 4
    n_head: int = 2
    top_k: int = 8  # attention keeps the top-k scores per query
    conv_kernel: int = 5  # depthwise causal conv of the local pathway
    ffn_mult: int = 4  # SwiGLU hidden width = ffn_mult * d_model
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.vocab_size < VOCAB_SIZE:
            raise ValueError(f"vocab_size must be >= {VOCAB_SIZE} (256 bytes + BOS/EOS/PAD)")
        if self.top_k < 1 or self.conv_kernel < 1:
            raise ValueError("top_k and conv_kernel must be >= 1")


CONFIGS: dict[str, RoutedConfig] = {
    # tests and the demo: 363,841 parameters; ~0.1 s per training step of 16 x 64 bytes on one
    # core: the loss drops from 5.5 to ~1.2 nats/byte in 200 steps (~20 s)
    "tiny": RoutedConfig(name="tiny", d_model=64, n_layer=4, n_head=2, top_k=8),
    # the paper's model size: 10,182,913 parameters (see the module docstring)
    "tilelli-10m": RoutedConfig(name="tilelli-10m", d_model=256, n_layer=8, n_head=8, top_k=16),
}


def get_config(name: str) -> RoutedConfig:
    """The named configuration (``tiny`` or ``tilelli-10m``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown routed model {name!r}; known: {sorted(CONFIGS)}")
    return CONFIGS[name]


class RoutedOutput(NamedTuple):
    logits: Tensor  # (B, T, V)
    gates: Tensor  # (B, T, L, 3) softmax router probabilities, order (local, sparse, dense)
    abstain_p: Tensor  # (B, T) sigmoid of the abstain head


@dataclass
class KVCache:
    """Decoding state of a batch. Slot ``s`` of the K/V buffers holds the token fed at step ``s``
    (prompt slots first, pads included but invalid); ``length`` slots are filled."""

    k: list[Tensor]  # per layer (B, H, S_max, Dh)
    v: list[Tensor]  # per layer (B, H, S_max, Dh)
    conv: list[Tensor]  # per layer (B, kernel - 1, d): the last conv inputs u of the real tokens
    key_valid: Tensor  # (B, S_max) bool
    next_pos: Tensor  # (B,) position id of the next token of each row
    length: int


def topk_causal_attention(
    q: Tensor, k: Tensor, v: Tensor, valid: Tensor, top_k: int
) -> tuple[Tensor, Tensor]:
    """Top-k sparse attention.

    ``q (B,H,Tq,Dh)``, ``k, v (B,H,S,Dh)``, ``valid (B,1,Tq,S)`` bool (causal & not padding).
    ``s = q k^T / sqrt(Dh)``; invalid scores -> -inf; per query, every score below the k-th
    largest -> -inf; ``p = softmax(s)``; returns ``(p v, p)``. When fewer than k keys are valid
    the k-th largest is -inf and all valid keys are kept: exactly ``min(k, #valid)`` nonzeros.
    """
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    scores = scores.masked_fill(~valid, float("-inf"))
    if top_k < scores.size(-1):
        kth = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return probs @ v, probs


class LocalPath(nn.Module):
    """Gated depthwise causal conv: ``[u, g] = W_li h``; ``y = W_lo(conv_k(u) * sigmoid(g))``."""

    def __init__(self, cfg: RoutedConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.kernel = cfg.conv_kernel
        self.in_proj = nn.Linear(d, 2 * d, bias=False)
        self.conv = nn.Conv1d(d, d, cfg.conv_kernel, groups=d, bias=True)
        self.out_proj = nn.Linear(d, d, bias=False)

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Full sequence; ``mask (B,T)`` float. Returns ``(y, u)`` (``u`` feeds the cache)."""
        u, g = self.in_proj(h).chunk(2, dim=-1)
        u = u * mask.unsqueeze(-1)
        c = self.conv(F.pad(u.transpose(1, 2), (self.kernel - 1, 0))).transpose(1, 2)
        return self.out_proj(c * torch.sigmoid(g)), u

    def step(self, h: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One position ``h (B,1,d)`` with ``state (B,k-1,d)``; returns ``(y, new_state)``."""
        u, g = self.in_proj(h).chunk(2, dim=-1)
        window = torch.cat([state, u], dim=1)  # (B, k, d)
        c = torch.einsum("bkd,dk->bd", window, self.conv.weight[:, 0, :]) + self.conv.bias
        return self.out_proj(c.unsqueeze(1) * torch.sigmoid(g)), window[:, 1:]


class SparseAttention(nn.Module):
    """Causal multi-head attention keeping the top-k scores per query (qkv + out projections)."""

    def __init__(self, cfg: RoutedConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.top_k = cfg.top_k
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def _heads(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, d = h.shape
        q, k, v = self.qkv(h).split(d, dim=-1)
        shape = (b, t, self.n_head, d // self.n_head)
        return (x.view(shape).transpose(1, 2) for x in (q, k, v))  # type: ignore[return-value]

    def forward(self, h: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Full sequence; returns ``(y, k, v, attention_probs)``."""
        q, k, v = self._heads(h)
        y, probs = topk_causal_attention(q, k, v, valid, self.top_k)
        y = y.transpose(1, 2).reshape(h.shape)
        return self.out_proj(y), k, v, probs

    def step(self, h: Tensor, cache: KVCache, layer: int) -> Tensor:
        """One position: write its K/V into slot ``cache.length``, attend over the filled slots."""
        q, k, v = self._heads(h)
        s = cache.length
        cache.k[layer][:, :, s : s + 1] = k
        cache.v[layer][:, :, s : s + 1] = v
        valid = cache.key_valid[:, None, None, : s + 1]
        y, _ = topk_causal_attention(
            q, cache.k[layer][:, :, : s + 1], cache.v[layer][:, :, : s + 1], valid, self.top_k
        )
        return self.out_proj(y.transpose(1, 2).reshape(h.shape))


class DensePath(nn.Module):
    """SwiGLU feed-forward: ``W_2(silu(W_1 h) * W_3 h)``, hidden ``ffn_mult * d``."""

    def __init__(self, cfg: RoutedConfig) -> None:
        super().__init__()
        hidden = cfg.ffn_mult * cfg.d_model
        self.w1 = nn.Linear(cfg.d_model, hidden, bias=False)
        self.w3 = nn.Linear(cfg.d_model, hidden, bias=False)
        self.w2 = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(h)) * self.w3(h))


class RoutedBlock(nn.Module):
    """``x + sum_i r_i * path_i(norm(x))`` with ``r = softmax(W_g norm(x))``."""

    def __init__(self, cfg: RoutedConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.router = nn.Linear(cfg.d_model, len(PATHWAYS), bias=False)
        self.local = LocalPath(cfg)
        self.sparse = SparseAttention(cfg)
        self.dense = DensePath(cfg)

    @staticmethod
    def _mix(x: Tensor, r: Tensor, local: Tensor, sparse: Tensor, dense: Tensor) -> Tensor:
        return x + r[..., 0:1] * local + r[..., 1:2] * sparse + r[..., 2:3] * dense

    def forward(
        self, x: Tensor, mask: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
        """Full sequence: returns ``(x', r, (u, k, v))``."""
        h = self.norm(x)
        r = torch.softmax(self.router(h), dim=-1)
        local, u = self.local(h, mask)
        sparse, k, v, _ = self.sparse(h, valid)
        return self._mix(x, r, local, sparse, self.dense(h)), r, (u, k, v)

    def step(self, x: Tensor, cache: KVCache, layer: int) -> tuple[Tensor, Tensor]:
        """One position with the cache: returns ``(x', r)``; updates the layer's cache."""
        h = self.norm(x)
        r = torch.softmax(self.router(h), dim=-1)
        local, cache.conv[layer] = self.local.step(h, cache.conv[layer])
        sparse = self.sparse.step(h, cache, layer)
        return self._mix(x, r, local, sparse, self.dense(h)), r


def attention_valid(mask: Tensor) -> Tensor:
    """``(B,1,T,T)`` bool: causal, key not padding, plus the diagonal (so pad rows are finite)."""
    t = mask.size(1)
    causal = torch.ones(t, t, dtype=torch.bool, device=mask.device).tril()
    valid = causal & mask.bool()[:, None, None, :]
    return valid | torch.eye(t, dtype=torch.bool, device=mask.device)


class RoutedLM(nn.Module):
    """The routed byte-level LM with an abstain head (see the module docstring)."""

    def __init__(self, cfg: RoutedConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.d_model)
        self.blocks = nn.ModuleList(RoutedBlock(cfg) for _ in range(cfg.n_layer))
        self.norm_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.abstain = nn.Linear(cfg.d_model, 1)
        self.apply(self._init)
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layer)  # GPT-2 style residual scaling
        for name, p in self.named_parameters():
            if name.endswith(("out_proj.weight", "w2.weight")):
                nn.init.normal_(p, 0.0, out_std)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding | nn.Conv1d):
            nn.init.normal_(module.weight, 0.0, self.cfg.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- full-sequence forward -------------------------------------------------------------
    def _forward(
        self, idx: Tensor, attention_mask: Tensor | None
    ) -> tuple[RoutedOutput, list[tuple[Tensor, Tensor, Tensor]], Tensor]:
        b, t = idx.shape
        if t > self.cfg.block_size:
            raise ValueError(f"sequence length {t} > block_size {self.cfg.block_size}")
        mask = torch.ones_like(idx) if attention_mask is None else attention_mask.to(idx.dtype)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        x = self.tok_emb(idx) + self.pos_emb(pos)
        valid = attention_valid(mask)
        maskf = mask.to(x.dtype)
        gates, states = [], []
        for block in self.blocks:
            x, r, state = block(x, maskf, valid)
            gates.append(r)
            states.append(state)
        h = self.norm_f(x)
        out = RoutedOutput(
            self.lm_head(h), torch.stack(gates, dim=2), torch.sigmoid(self.abstain(h)).squeeze(-1)
        )
        return out, states, mask

    def forward(self, idx: Tensor, attention_mask: Tensor | None = None) -> RoutedOutput:
        """``idx (B,T)`` token ids, ``attention_mask (B,T)`` 1 = real (default all real)."""
        return self._forward(idx, attention_mask)[0]

    # ---- cached decoding -------------------------------------------------------------------
    @torch.no_grad()
    def prefill(
        self, idx: Tensor, attention_mask: Tensor, max_new_tokens: int
    ) -> tuple[RoutedOutput, KVCache]:
        """Forward the (padded) prompts and build a cache with room for ``max_new_tokens``."""
        out, states, mask = self._forward(idx, attention_mask)
        b, t = idx.shape
        s_max = t + max_new_tokens
        km1 = self.cfg.conv_kernel - 1
        last = (mask * torch.arange(t, device=idx.device)).amax(dim=1)  # last real slot per row
        gather = last[:, None] - km1 + 1 + torch.arange(km1, device=idx.device)  # (B, k-1)
        ks, vs, convs = [], [], []
        for u, k, v in states:
            kb = k.new_zeros(b, k.size(1), s_max, k.size(3))
            vb = torch.zeros_like(kb)
            kb[:, :, :t] = k
            vb[:, :, :t] = v
            ks.append(kb)
            vs.append(vb)
            conv = u.gather(1, gather.clamp(min=0)[..., None].expand(b, km1, u.size(2)))
            convs.append(conv * (gather >= 0)[..., None].to(u.dtype))  # before the start: zeros
        key_valid = torch.zeros(b, s_max, dtype=torch.bool, device=idx.device)
        key_valid[:, :t] = mask.bool()
        cache = KVCache(ks, vs, convs, key_valid, mask.sum(1), t)
        return out, cache

    @torch.no_grad()
    def step(self, tokens: Tensor, cache: KVCache) -> RoutedOutput:
        """Feed one token per row (``tokens (B,)``); returns outputs of shape ``(B,1,...)``."""
        if cache.length >= cache.key_valid.size(1):
            raise ValueError("KV cache is full: prefill with a larger max_new_tokens")
        if int(cache.next_pos.max()) >= self.cfg.block_size:
            raise ValueError(f"position {int(cache.next_pos.max())} >= block_size")
        x = (self.tok_emb(tokens) + self.pos_emb(cache.next_pos)).unsqueeze(1)
        cache.key_valid[:, cache.length] = True
        gates = []
        for layer, block in enumerate(self.blocks):
            x, r = block.step(x, cache, layer)
            gates.append(r)
        cache.length += 1
        cache.next_pos = cache.next_pos + 1
        h = self.norm_f(x)
        return RoutedOutput(
            self.lm_head(h), torch.stack(gates, dim=2), torch.sigmoid(self.abstain(h)).squeeze(-1)
        )


# ---- generation ---------------------------------------------------------------------------


@dataclass
class Generation:
    """Greedy generation results, one entry per prompt (in the order given)."""

    tokens: list[list[int]]  # generated ids (EOS included when produced)
    max_probs: list[list[float]]  # max softmax probability of the distribution of each step
    prompt_gates: list[Tensor]  # (T_i, L, 3) router probabilities at the prompt's positions
    abstain_p: list[float]  # abstain probability at the last prompt position


def encode(text: str, bos: bool = True) -> list[int]:
    """UTF-8 bytes of ``text`` as token ids, with a leading BOS by default."""
    return ([BOS] if bos else []) + list(text.encode("utf-8"))


def decode(tokens: Iterable[int]) -> str:
    """Bytes of ``tokens`` (specials dropped) decoded as UTF-8 with replacement characters."""
    return bytes(t for t in tokens if t < N_BYTES).decode("utf-8", errors="replace")


def pad_batch(
    seqs: Sequence[Sequence[int]], padding: str = "left", pad_id: int = PAD
) -> tuple[Tensor, Tensor]:
    """``(idx, mask)`` of shape ``(B, max_len)``; ``padding`` is ``left`` or ``right``."""
    if padding not in ("left", "right"):
        raise ValueError(f"padding must be 'left' or 'right', not {padding!r}")
    t = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(t - len(s), t) if padding == "left" else slice(0, len(s))
        idx[i, sl] = torch.tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return idx, mask


@torch.no_grad()
def generate(
    model: RoutedLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    padding: str = "left",
    eos_id: int = EOS,
) -> Generation:
    """Batched greedy generation with the KV cache (one prefill, then one ``step`` per token).

    Row ``i`` stops after producing ``eos_id`` or ``max_new_tokens`` tokens; finished rows keep
    being fed (their outputs are discarded) until every row is done.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs non-empty prompts")
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > model.cfg.block_size:
        raise ValueError(
            f"prompt length {longest} + {max_new_tokens} new tokens > block_size "
            f"{model.cfg.block_size}"
        )
    device = next(model.parameters()).device
    idx, mask = pad_batch(prompts, padding)
    idx, mask = idx.to(device), mask.to(device)
    out, cache = model.prefill(idx, mask, max_new_tokens)
    b, t = idx.shape
    lengths = mask.sum(1)
    last = torch.full((b,), t - 1, device=device) if padding == "left" else lengths - 1
    rows = torch.arange(b, device=device)
    logits = out.logits[rows, last]
    result = Generation(
        tokens=[[] for _ in range(b)],
        max_probs=[[] for _ in range(b)],
        prompt_gates=[out.gates[i][mask[i].bool()].float().cpu() for i in range(b)],
        abstain_p=out.abstain_p[rows, last].float().cpu().tolist(),
    )
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        probs = torch.softmax(logits.float(), dim=-1)
        max_p, nxt = probs.max(dim=-1)
        for i in (~finished).nonzero().flatten().tolist():
            result.tokens[i].append(int(nxt[i]))
            result.max_probs[i].append(float(max_p[i]))
        finished |= nxt == eos_id
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        logits = model.step(nxt, cache).logits[:, 0]
    return result


@torch.no_grad()
def generate_naive(
    model: RoutedLM, prompt: Sequence[int], max_new_tokens: int, eos_id: int = EOS
) -> tuple[list[int], list[float]]:
    """Reference greedy generation: re-forwards the whole sequence for every new token."""
    device = next(model.parameters()).device
    seq = list(prompt)
    tokens: list[int] = []
    max_probs: list[float] = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([seq], device=device)).logits[0, -1]
        max_p, nxt = torch.softmax(logits.float(), dim=-1).max(dim=-1)
        tokens.append(int(nxt))
        max_probs.append(float(max_p))
        if int(nxt) == eos_id:
            break
        seq.append(int(nxt))
    return tokens, max_probs


# ---- parameter groups ---------------------------------------------------------------------

BASE_GROUPS = (
    "embeddings",
    "router",
    "local",
    "sparse",
    "dense",
    "block_norms",
    "final_norm",
    "lm_head",
    "abstain",
)
GROUP_ALIASES: dict[str, tuple[str, ...]] = {
    "blocks": ("local", "sparse", "dense", "block_norms"),
    "pathways": ("local", "sparse", "dense"),
    "all": BASE_GROUPS,
}
_BLOCK_PARTS = {
    "router": "router",
    "local": "local",
    "sparse": "sparse",
    "dense": "dense",
    "norm": "block_norms",
}


def group_of(param_name: str) -> str:
    """The base group of a parameter name (``blocks.3.router.weight`` -> ``router``)."""
    head = param_name.split(".")[0]
    if head in ("tok_emb", "pos_emb"):
        return "embeddings"
    if head == "blocks":
        return _BLOCK_PARTS[param_name.split(".")[2]]
    return {"norm_f": "final_norm", "lm_head": "lm_head", "abstain": "abstain"}[head]


def resolve_groups(groups: str | Iterable[str]) -> set[str]:
    """Expand aliases; ``ValueError`` naming the valid names on an unknown group."""
    names = [groups] if isinstance(groups, str) else list(groups)
    out: set[str] = set()
    for g in names:
        if g in GROUP_ALIASES:
            out.update(GROUP_ALIASES[g])
        elif g in BASE_GROUPS:
            out.add(g)
        else:
            valid = sorted((*BASE_GROUPS, *GROUP_ALIASES))
            raise ValueError(f"unknown parameter group {g!r}; valid: {valid}")
    return out


def param_groups(model: nn.Module) -> dict[str, list[str]]:
    """Base group -> parameter names (a partition of ``model.named_parameters()``)."""
    out: dict[str, list[str]] = {g: [] for g in BASE_GROUPS}
    for name, _ in model.named_parameters():
        out[group_of(name)].append(name)
    return out


def group_parameters(model: nn.Module, groups: str | Iterable[str]) -> dict[str, nn.Parameter]:
    """Name -> parameter for every parameter in ``groups`` (aliases allowed)."""
    wanted = resolve_groups(groups)
    return {n: p for n, p in model.named_parameters() if group_of(n) in wanted}


# ---- checkpoints --------------------------------------------------------------------------


def save_checkpoint(model: RoutedLM, path: Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the ``docket-routed-v1`` checkpoint of ``model`` to ``path``."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(model.cfg),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if meta is not None:
        payload["meta"] = meta
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def check_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """``ValueError`` naming missing / unexpected keys and shape mismatches, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {got[k]} vs model {expected[k]}"
        for k in set(got) & set(expected)
        if got[k] != expected[k]
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"shape mismatches {shapes}")
        raise ValueError("state dict does not match the routed model: " + "; ".join(parts))


def config_from_dict(config: dict[str, Any]) -> RoutedConfig:
    """Rebuild a :class:`RoutedConfig`; ``ValueError`` naming unknown keys."""
    known = {f.name for f in fields(RoutedConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown RoutedConfig keys in checkpoint: {unknown}")
    return replace(RoutedConfig(), **config)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> RoutedLM:
    """Load a ``docket-routed-v1`` checkpoint from a local path (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (format {got!r})")
    for key in ("config", "state_dict"):
        if key not in payload:
            raise ValueError(f"{path}: checkpoint lacks the {key!r} entry")
    model = RoutedLM(config_from_dict(payload["config"]))
    try:
        check_state_dict(model, payload["state_dict"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    model.load_state_dict(payload["state_dict"])
    return model
