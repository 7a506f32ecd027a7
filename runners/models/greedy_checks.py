"""Greedy-decoding checks shared by the built-in PoE model and ``hf:`` decoders.

KV-cache identity
    For each prompt, the greedy continuation of ``n`` tokens decoded with the KV cache (prefill
    once, one-token steps) and without it (every step re-forwards the whole prefix).
    ``first_divergence(a, b)`` is the index of the first position where the two token lists
    differ, ``None`` when they are equal. A prompt is *identical* when the two lists are equal.

Concept grading
    :mod:`docketml.runners.models.concepts` (pure Python, so the sign-check needs no torch).

Decoders
    :class:`HFGreedy` decodes an :class:`~docketml.runners.models.hf_stages.HFStages` (the PoE of
    its stages; one stage at the last layer with a zero head is the model itself). The no-cache
    path re-forwards ``prompt + emitted`` and takes ``argmax poe_log_probs`` of the last
    position; the cached path is :func:`~docketml.runners.models.hf_stages.greedy_decode`.
    The built-in model's two paths are :func:`~docketml.runners.models.poe_decode.greedy_decode`
    with ``use_cache`` true / false.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .poe import BOS, PoELM, poe_log_probs
from .poe_decode import greedy_decode as builtin_greedy

Decode = Callable[[list[int], int, bool], list[int]]  # (prompt ids, n, use_cache) -> new ids


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where ``a`` and ``b`` differ (a length difference counts at
    the shorter length); ``None`` when they are equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass(frozen=True)
class KVResult:
    """One prompt's cached and uncached greedy continuations."""

    cached: list[int]
    uncached: list[int]

    @property
    def divergence(self) -> int | None:
        return first_divergence(self.cached, self.uncached)

    @property
    def identical(self) -> bool:
        return self.divergence is None


def kv_identity(decode: Decode, prompts: Sequence[list[int]], n: int) -> list[KVResult]:
    """:class:`KVResult` of every prompt (``decode(prompt, n, use_cache)`` both ways)."""
    return [KVResult(decode(list(p), n, True), decode(list(p), n, False)) for p in prompts]


def builtin_decoder(model: PoELM) -> Decode:
    """The built-in model's greedy PoE decoding, with or without its KV cache."""

    def decode(prompt: list[int], n: int, use_cache: bool) -> list[int]:
        return builtin_greedy(model, prompt, n, use_cache=use_cache)

    return decode


def builtin_encode(text: str) -> list[int]:
    """Built-in model prompt ids: ``[BOS] + UTF-8 bytes``."""
    return [BOS, *text.encode("utf-8")]


def builtin_text(ids: Sequence[int]) -> str:
    """Byte ids as text (UTF-8 with replacement; BOS dropped)."""
    return bytes(t for t in ids if 0 <= t < 256).decode("utf-8", "replace")


class HFGreedy:
    """Greedy PoE decoding of ``hf:`` stages, cached or not (module doc)."""

    def __init__(self, stages: Any) -> None:
        self.stages = stages

    @torch.inference_mode()
    def uncached(self, prompt: list[int], n: int) -> list[int]:
        ids = list(prompt)
        out: list[int] = []
        for _ in range(n):
            logits, _ = self.stages.stage_logits(torch.tensor([ids], device=self.stages.device))
            tok = int(poe_log_probs(logits[:, :, -1]).argmax(-1))
            out.append(tok)
            ids.append(tok)
        return out

    def __call__(self, prompt: list[int], n: int, use_cache: bool) -> list[int]:
        from .hf_stages import greedy_decode

        if use_cache:
            return greedy_decode(self.stages, prompt, n)
        return self.uncached(prompt, n)
