"""PoE / early exit on a Hugging Face decoder (``model: "hf:PATH"`` + ``boundaries``).

Shape required: a LlamaForCausalLM-style causal LM, ``model.model.layers`` (the decoder layers),
``model.model.norm`` (the final norm) and an output embedding (``lm_head``). Anything else is an
:class:`~docketml.runners.models.hf.HFModelError` naming the path.

Stages
    ``boundaries = [b_0, ..., b_{K-1}]`` (validated by
    :func:`~docketml.runners.models.hf.check_boundaries`: strictly increasing, within
    ``1..num_layers``) cut the decoder into ``K`` stages; stage ``k`` ends after layer ``b_k``
    (1-based count), i.e. its residual stream ``h_k`` is the output of ``layers[b_k - 1]``,
    captured with a forward hook (so the KV cache the decoder keeps is the model's own).

Stage logits (the card's formula)
    ``x_k = norm(h_k)``;  ``logits_k = lm_head(x_k) + head_k(x_k)`` with the model's own final
    ``norm`` and ``lm_head`` and an additive per-stage ``head_k`` (``Linear(d, V)``, no bias,
    zero-initialised: an untrained head is the plain early exit ``lm_head(norm(h_k))``). With
    ``b_{K-1} = num_layers`` and a zero head, the last stage's logits are the model's own logits.

PoE aggregate: :func:`docketml.runners.models.poe.poe_log_probs` over the stage logits (one
definition for the built-in model and this adapter).

Stage heads file (``docket-hf-stage-heads-v1``, ``torch.save``): ``format``, ``boundaries``,
``hidden_size``, ``vocab_size``, ``model_sha256`` (the checkpoint's weight hash, see
:mod:`~docketml.runners.models.hf`), ``model_path`` and ``state_dict`` (``heads.{k}.weight``).
Loading refuses heads trained on another checkpoint (sha256 differs) or for other boundaries.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .hf import HFModel, HFModelError, cache_kwarg, cache_of, check_boundaries
from .poe import poe_log_probs
from .poe_decode import SpecStats

HEADS_FORMAT = "docket-hf-stage-heads-v1"


def decoder_parts(hf: HFModel) -> tuple[Any, Any, Any]:
    """``(decoder, final_norm, lm_head)`` of a LlamaForCausalLM-style model, else
    :class:`HFModelError` naming the path and the missing attribute."""
    decoder = getattr(hf.model, "model", None)
    layers = getattr(decoder, "layers", None)
    norm = getattr(decoder, "norm", None)
    lm_head = hf.model.get_output_embeddings()
    missing = [
        name
        for name, obj in (("model.model.layers", layers), ("model.model.norm", norm))
        if obj is None
    ] + ([] if lm_head is not None else ["lm_head"])
    if missing:
        raise HFModelError(
            f"hf:{hf.path}: model_type {hf.config.model_type!r} has no {', '.join(missing)}; "
            "stage boundaries need a LlamaForCausalLM-style decoder (model.layers, model.norm, "
            "lm_head)"
        )
    return decoder, norm, lm_head


def num_layers(hf: HFModel) -> int:
    """Number of decoder layers of a LlamaForCausalLM-style model."""
    return len(decoder_parts(hf)[0].layers)


class HFStages(nn.Module):
    """Stages of an hf decoder ending at ``boundaries`` with additive stage heads (module doc).

    Only ``heads`` are parameters of this module's own; the trunk (``hf.model``) is referenced,
    not registered, so ``self.parameters()`` are the heads alone."""

    def __init__(self, hf: HFModel, boundaries: Any, where: str = "hf stages") -> None:
        super().__init__()
        self.hf = hf
        decoder, norm, lm_head = decoder_parts(hf)
        # referenced, not registered as submodules: self.parameters() are the heads alone
        object.__setattr__(self, "decoder", decoder)
        object.__setattr__(self, "norm", norm)
        object.__setattr__(self, "lm_head", lm_head)
        self.boundaries = check_boundaries(list(boundaries), len(self.decoder.layers), where)
        weight = self.lm_head.weight
        vocab, hidden = weight.shape
        self.heads = nn.ModuleList(
            nn.Linear(hidden, vocab, bias=False, device=weight.device, dtype=weight.dtype)
            for _ in self.boundaries
        )
        for head in self.heads:
            nn.init.zeros_(head.weight)
        self._cache_kw = cache_kwarg(self.decoder)

    @property
    def n_stages(self) -> int:
        return len(self.boundaries)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def depth_fraction(self, n_stages: int = 1) -> float:
        """Share of the decoder's layers run by the first ``n_stages`` stages."""
        return self.boundaries[n_stages - 1] / len(self.decoder.layers)

    def stage_states(
        self,
        input_ids: Tensor,
        cache: Any = None,
        use_cache: bool = False,
        n_stages: int | None = None,
    ) -> tuple[list[Tensor], Any]:
        """Normalised residual streams ``x_k = norm(h_k)`` (each (B, T, d)) of the first
        ``n_stages`` stages (default all), and the decoder's KV cache (``None`` unless
        ``use_cache``). With a ``cache`` the ``input_ids`` continue the cached positions (the
        decoder's own cache semantics). With ``n_stages < K`` only the layers up to boundary
        ``n_stages - 1`` run (the decoder's layer list is cut for the call and restored), so only
        their cache entries grow."""
        n = self.n_stages if n_stages is None else n_stages
        if not 1 <= n <= self.n_stages:
            raise ValueError(f"n_stages must be in 1..{self.n_stages}, got {n}")
        captured: dict[int, Tensor] = {}

        def grab(k: int) -> Any:
            def hook(_module: Any, _args: Any, output: Any) -> None:
                captured[k] = output[0] if isinstance(output, tuple) else output

            return hook

        layers = self.decoder.layers
        hooks = [
            layers[b - 1].register_forward_hook(grab(k)) for k, b in enumerate(self.boundaries[:n])
        ]
        try:
            if n < self.n_stages:
                self.decoder.layers = nn.ModuleList(list(layers)[: self.boundaries[n - 1]])
            kwargs = {self._cache_kw: cache} if cache is not None else {}
            out = self.decoder(input_ids=input_ids, use_cache=use_cache, **kwargs)
        finally:
            self.decoder.layers = layers
            for h in hooks:
                h.remove()
        states = [self.norm(captured[k]) for k in range(n)]
        return states, (cache_of(out) if use_cache else None)

    def logits_from_states(self, states: list[Tensor], first: int = 0) -> Tensor:
        """Stage logits (len(states), B, T, V): ``lm_head(x_k) + heads[k](x_k)`` for stages
        ``first, first + 1, ...``."""
        heads = list(self.heads)[first : first + len(states)]
        return torch.stack(
            [self.lm_head(x) + head(x) for x, head in zip(states, heads, strict=True)]
        )

    def stage_logits(
        self, input_ids: Tensor, cache: Any = None, use_cache: bool = False
    ) -> tuple[Tensor, Any]:
        """``(logits (K, B, T, V), cache)``; see :meth:`stage_states`."""
        states, cache = self.stage_states(input_ids, cache, use_cache)
        return self.logits_from_states(states), cache

    # ---------------------------------------------------------------- trunk / heads persistence

    def trunk_sha256(self) -> str:
        """SHA-256 over the trunk's state dict (names and bytes, sorted): changes iff a trunk
        parameter or buffer changes."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.hf.model.state_dict().items()):
            h.update(name.encode() + b"\0")
            h.update(
                tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
        return h.hexdigest()

    def save_heads(self, path: Path | str) -> Path:
        """Write the stage heads file (module doc); returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        weight = self.lm_head.weight
        torch.save(
            {
                "format": HEADS_FORMAT,
                "boundaries": list(self.boundaries),
                "hidden_size": int(weight.shape[1]),
                "vocab_size": int(weight.shape[0]),
                "model_sha256": self.hf.sha256,
                "model_path": str(self.hf.path),
                "state_dict": {k: v.detach().cpu() for k, v in self.heads.state_dict().items()},
            },
            path,
        )
        return path

    def load_heads(self, path: Path | str) -> None:
        """Load a stage heads file trained on this checkpoint for these boundaries (else
        :class:`HFModelError` naming the file and what differs)."""
        payload = read_heads(path)
        if payload["model_sha256"] != self.hf.sha256:
            raise HFModelError(
                f"{path}: stage heads were trained on the checkpoint with weight sha256 "
                f"{payload['model_sha256'][:12]}..., not hf:{self.hf.path} "
                f"({self.hf.sha256[:12]}...)"
            )
        if tuple(payload["boundaries"]) != self.boundaries:
            raise HFModelError(
                f"{path}: stage heads are for boundaries {payload['boundaries']}, the job "
                f"declares {list(self.boundaries)}"
            )
        self.heads.load_state_dict(payload["state_dict"])


def read_heads(path: Path | str) -> dict[str, Any]:
    """The payload of a stage heads file (format checked; :class:`HFModelError` otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise HFModelError(f"{path}: no stage heads file")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != HEADS_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise HFModelError(f"{path}: not a {HEADS_FORMAT} file (format={got!r})")
    return payload


# -------------------------------------------------------------------------------- decoding


def crop_cache(cache: Any, n: int) -> None:
    """Keep the first ``n`` positions of every layer of a transformers dynamic KV cache (layers
    may hold different lengths: a draft grows only the shallow ones). Supports the per-layer
    ``cache.layers[i].keys/values`` layout and the older ``key_cache``/``value_cache`` lists."""
    layers = getattr(cache, "layers", None)
    if layers is not None and all(hasattr(layer, "keys") for layer in layers):
        for layer in layers:
            if getattr(layer, "keys", None) is not None and layer.keys.size(-2) > n:
                layer.keys = layer.keys[..., :n, :]
                layer.values = layer.values[..., :n, :]
        return
    if hasattr(cache, "key_cache"):
        for i in range(len(cache.key_cache)):
            cache.key_cache[i] = cache.key_cache[i][..., :n, :]
            cache.value_cache[i] = cache.value_cache[i][..., :n, :]
        return
    raise HFModelError(f"KV cache {type(cache).__name__} cannot be rolled back per layer")


@torch.inference_mode()
def greedy_decode(stages: HFStages, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy PoE continuation (batch 1, KV cache): each token is ``argmax poe_log_probs`` of
    every stage's logits after the emitted prefix (ties to the lowest id)."""
    ids = torch.tensor([prompt], device=stages.device)
    logits, cache = stages.stage_logits(ids, use_cache=True)
    out: list[int] = []
    for i in range(max_new_tokens):
        tok = int(poe_log_probs(logits[:, :, -1]).argmax(-1))
        out.append(tok)
        if i + 1 < max_new_tokens:
            step = ids.new_tensor([[tok]])
            logits, cache = stages.stage_logits(step, cache=cache, use_cache=True)
    return out


@torch.inference_mode()
def speculative_decode(
    stages: HFStages,
    prompt: list[int],
    max_new_tokens: int,
    k_draft: int = 4,
    draft_stage: int = 0,
) -> tuple[list[int], SpecStats]:
    """Self-speculative greedy PoE decoding: stage ``draft_stage`` alone drafts, the full PoE
    verifies. Output equals :func:`greedy_decode` (up to near-ties, see below).

    State: the KV cache holds ``n`` positions in every layer; ``pending`` is the full PoE's next
    token (emitted, not yet cached). A round: (1) draft ``d_1..d_k`` greedily from the logits of
    stage ``draft_stage`` alone, one token at a time, running only the layers up to its boundary
    (those layers' cache grows to ``n + k``); (2) crop the cache to ``n`` and run the whole
    decoder on ``[pending, d_1..d_k]`` in one pass, giving the full PoE's greedy token ``g_i``
    after each position; (3) accept the longest prefix with ``d_i == g_{i-1}`` (``m`` tokens),
    then ``g_m``; crop the cache to ``n + m + 1``. Every emitted token is the full PoE's greedy
    token given the emitted prefix; the multi-token verify pass may round differently from
    one-token steps, which matters only at a near-tie (the tests measure identity). Cost per
    round: ``k`` draft steps of depth ``d`` plus one ``(k+1)``-token full pass (``k * d + 1``).
    """
    if k_draft < 1:
        raise ValueError(f"k_draft must be >= 1, got {k_draft}")
    if not 0 <= draft_stage < stages.n_stages:
        raise ValueError(f"draft_stage must be in 0..{stages.n_stages - 1}, got {draft_stage}")
    stats = SpecStats()
    if max_new_tokens <= 0:
        return [], stats
    ids = torch.tensor([prompt], device=stages.device)
    logits, cache = stages.stage_logits(ids, use_cache=True)
    pending = int(poe_log_probs(logits[:, :, -1]).argmax(-1))
    out, n = [pending], len(prompt)
    while len(out) < max_new_tokens:
        k = min(k_draft, max_new_tokens - len(out) - 1)
        drafts: list[int] = []
        tok = pending
        for _ in range(k):
            states, cache = stages.stage_states(
                ids.new_tensor([[tok]]), cache, use_cache=True, n_stages=draft_stage + 1
            )
            draft_logits = stages.logits_from_states(states[draft_stage:], first=draft_stage)
            tok = int(draft_logits[0, 0, -1].argmax(-1))
            drafts.append(tok)
        crop_cache(cache, n)
        block = ids.new_tensor([[pending, *drafts]])
        logits, cache = stages.stage_logits(block, cache=cache, use_cache=True)
        full_tokens = poe_log_probs(logits)[0].argmax(-1).tolist()
        m = 0
        while m < k and drafts[m] == full_tokens[m]:
            m += 1
        out.extend(drafts[:m])
        pending = full_tokens[m]
        out.append(pending)
        crop_cache(cache, n + m + 1)
        n += m + 1
        stats.proposed += k
        stats.accepted += m
        stats.rounds += 1
        stats.accepted_per_round.append(m)
    stats.emitted = len(out) - 1
    return out, stats
