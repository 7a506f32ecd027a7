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
        self, input_ids: Tensor, cache: Any = None, use_cache: bool = False
    ) -> tuple[list[Tensor], Any]:
        """Normalised residual streams ``x_k = norm(h_k)`` (each (B, T, d)) at every boundary,
        and the decoder's KV cache (``None`` unless ``use_cache``). With a ``cache`` the
        ``input_ids`` continue the cached positions (the decoder's own cache semantics)."""
        captured: dict[int, Tensor] = {}

        def grab(k: int) -> Any:
            def hook(_module: Any, _args: Any, output: Any) -> None:
                captured[k] = output[0] if isinstance(output, tuple) else output

            return hook

        hooks = [
            self.decoder.layers[b - 1].register_forward_hook(grab(k))
            for k, b in enumerate(self.boundaries)
        ]
        try:
            kwargs = {self._cache_kw: cache} if cache is not None else {}
            out = self.decoder(input_ids=input_ids, use_cache=use_cache, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        states = [self.norm(captured[k]) for k in range(self.n_stages)]
        return states, (cache_of(out) if use_cache else None)

    def logits_from_states(self, states: list[Tensor]) -> Tensor:
        """Stage logits (K, B, T, V): ``lm_head(x_k) + heads[k](x_k)``."""
        return torch.stack(
            [self.lm_head(x) + head(x) for x, head in zip(states, self.heads, strict=True)]
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
