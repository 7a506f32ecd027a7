"""Concept grading and the decoding jobs' prompt params: pure Python (no torch), so the
sign-check can validate ``concepts`` / ``prompts`` on a core-only install.

A concept is a declared ``prompt`` and one or more ``expect`` strings. The greedy continuation
(``max_new_tokens`` tokens, decoded to text) *hits* when any expected string occurs in it as a
substring (case-sensitive, whitespace as written): 1, else 0. :func:`parse_concepts` validates a
job's ``concepts`` param (a list of ``{prompt, expect, id}``; ``id`` defaults to ``cNNN`` by
position).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_CONCEPTS", "Concept", "parse_concepts", "parse_prompts"]


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
