"""Greedy-decoding checks shared by the built-in PoE model and ``hf:`` decoders.

KV-cache identity
    For each prompt, the greedy continuation of ``n`` tokens decoded with the KV cache (prefill
    once, one-token steps) and without it (every step re-forwards the whole prefix).
    ``first_divergence(a, b)`` is the index of the first position where the two token lists
    differ, ``None`` when they are equal. A prompt is *identical* when the two lists are equal.

Concept grading
    A concept is a declared ``prompt`` and one or more ``expect`` strings. The greedy
    continuation (``max_new_tokens`` tokens, decoded to text) *hits* when any expected string
    occurs in it as a substring (case-sensitive, whitespace as written): 1, else 0.
    :func:`parse_concepts` validates a job's ``concepts`` param (a list of
    ``{prompt, expect, id}``; ``id`` defaults to ``cNNN`` by position).

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


# ----------------------------------------------------------------------------------- concepts


@dataclass(frozen=True)
class Concept:
    """A declared prompt and the strings whose presence in its continuation counts as a hit."""

    id: str
    prompt: str
    expect: tuple[str, ...]

    def grade(self, continuation: str) -> int:
        """1 when any expected string occurs in ``continuation``, else 0."""
        return int(any(e in continuation for e in self.expect))


DEFAULT_CONCEPTS: tuple[Concept, ...] = (
    Concept("gold", "The chemical symbol for gold is", ("Au",)),
    Concept("sunday", "The day after Saturday is", ("Sunday",)),
    Concept("paris", "The capital of France is", ("Paris",)),
    Concept("water", "The chemical formula of water is", ("H2O", "H₂O")),
    Concept("four", "Two plus two equals", ("four", "4")),
    Concept("cold", "The opposite of hot is", ("cold",)),
    Concept("june", "The month after May is", ("June",)),
    Concept("legs", "A spider has eight", ("legs",)),
)
"""The default prompt set: common facts a language model of real text learns."""


def parse_prompts(value: Any, where: str) -> list[str] | None:
    """The ``prompts`` param: ``None`` (the job's default prompts) or a non-empty list of
    non-empty strings; ``ValueError`` naming ``where`` and the field otherwise."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: field 'prompts' must be a non-empty list of strings")
    for i, prompt in enumerate(value):
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"{where}: field 'prompts[{i}]' must be a non-empty string")
    return list(value)


def parse_concepts(value: Any, where: str) -> list[Concept]:
    """The ``concepts`` param: ``None`` (the defaults) or a non-empty list of mappings with
    ``prompt`` (non-empty string), ``expect`` (a non-empty string or a non-empty list of them)
    and optional ``id`` (unique); ``ValueError`` naming ``where``, the entry and the field."""
    if value is None:
        return list(DEFAULT_CONCEPTS)
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"{where}: field 'concepts' must be a non-empty list of {{prompt, expect}} entries"
        )
    out: list[Concept] = []
    for i, entry in enumerate(value):
        at = f"{where}: field 'concepts[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"id", "prompt", "expect"}:
            raise ValueError(f"{at}' must be a mapping with keys prompt, expect and optional id")
        prompt, expect = entry.get("prompt"), entry.get("expect")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"{at}.prompt' must be a non-empty string")
        expects = [expect] if isinstance(expect, str) else expect
        if (
            not isinstance(expects, list)
            or not expects
            or not all(isinstance(e, str) and e for e in expects)
        ):
            raise ValueError(f"{at}.expect' must be a non-empty string or list of strings")
        cid = entry.get("id", f"c{i:03d}")
        if not isinstance(cid, str) or not cid or any(c in cid for c in "|@ "):
            raise ValueError(f"{at}.id' must be a non-empty string without '|', '@' or spaces")
        if any(c.id == cid for c in out):
            raise ValueError(f"{at}.id' {cid!r} is used twice")
        out.append(Concept(cid, prompt, tuple(expects)))
    return out
