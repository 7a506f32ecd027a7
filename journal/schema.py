"""Pydantic v2 models of one research-journal entry.

Text normalisation (applied at construction, so every model is already canonical and
``parse(render(x)) == x`` holds for any valid model):

* every multi-line text field keeps its line breaks, but each line is stripped of
  surrounding whitespace and empty lines are dropped (a markdown blank line ends a
  list item, so it cannot be represented inside one);
* optional text fields that normalise to ``""`` become ``None``;
* single-line fields (``title``, ``tag``, ``label``, ``corrects``, ``protocol``) must not
  contain line breaks.

A few character sequences are reserved by the markdown form and rejected with a clear
error: an inference text may not contain ``{reason:`` / ``{credence:``, a failure-mode
text may not contain ``Prior <number>``, and a title without ``corrects`` may not start
with ``CORRECTION to (``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["FailureMode", "Inference", "JournalEntry", "normalize_text"]

_REF_RE = re.compile(r"^[A-Za-z0-9_.#-]+$")
_INF_RESERVED_RE = re.compile(r"\{\s*(?:reason|credence)\s*:", re.IGNORECASE)
_PRIOR_RESERVED_RE = re.compile(r"\bprior\b\s*:?\s*\.?\d", re.IGNORECASE)
_ITEM_MARKER_RE = re.compile(r"^\[(?:obs|inf)\]", re.IGNORECASE)
_CORRECTION_TITLE_RE = re.compile(r"^correction\s+(?:to|of)\s+(?:entry\s+)?\(", re.IGNORECASE)


def normalize_text(value: str) -> str:
    """Strip every line, drop empty lines, join with ``\\n``; ``""`` if nothing is left."""
    lines = (line.strip() for line in value.splitlines())
    return "\n".join(line for line in lines if line)


def _required_text(value: str) -> str:
    text = normalize_text(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def _optional_text(value: str | None) -> str | None:
    if value is None:
        return None
    return normalize_text(value) or None


def _single_line(value: str | None) -> str | None:
    if value is None:
        return None
    if "\n" in value or "\r" in value:
        raise ValueError("must be a single line")
    return value.strip()


Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Inference(_Model):
    """An ``[inf]`` item: a claim with a credence in [0, 1] and an optional reason."""

    text: str
    credence: Probability
    reason: str | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        text = _required_text(value)
        if _INF_RESERVED_RE.search(text):
            raise ValueError("must not contain '{reason:' or '{credence:' (reserved for the tail)")
        return text

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return _optional_text(value)


class FailureMode(_Model):
    """A failure mode considered: optional label (e.g. ``Likely``), text, prior, check."""

    label: str | None = None
    text: str
    prior: Probability
    check: str | None = None

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        label = _single_line(value)
        if label is None:
            return None
        if not label:
            return None
        if "*" in label or label.endswith(":"):
            raise ValueError("must not contain '*' or end with ':'")
        return label

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        text = _required_text(value)
        if _PRIOR_RESERVED_RE.search(text):
            raise ValueError("must not contain 'Prior <number>' (reserved for the prior)")
        return text

    @field_validator("check")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        return _optional_text(value)

    @model_validator(mode="after")
    def _unlabelled_text(self) -> FailureMode:
        if self.label is None and (self.text.startswith("**") or _ITEM_MARKER_RE.match(self.text)):
            raise ValueError("an unlabelled text must not start with '**', '[obs]' or '[inf]'")
        return self


class JournalEntry(_Model):
    """One dated journal entry.

    ``corrects`` is the reference to the entry this one corrects: a tag such as ``"h"`` or
    a ledger sequence number as a string (``"12"``). ``title`` may be empty only for a
    correction (the heading then reads ``CORRECTION to (h)``).
    """

    date: dt.date
    tag: str | None = None
    title: str
    context: str | None = None
    hypothesis: str | None = None
    observations: list[str] = Field(default_factory=list)
    inferences: list[Inference] = Field(default_factory=list)
    failure_modes: list[FailureMode] = Field(default_factory=list)
    next_action: str | None = None
    corrects: str | None = None
    protocol: str | None = None
    runs: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    notes: str | None = None

    @field_validator("tag", "corrects")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        ref = _single_line(value)
        if ref is None:
            return None
        if not _REF_RE.match(ref):
            raise ValueError(f"{ref!r} must match [A-Za-z0-9_.#-]+ (e.g. 'h' or '12')")
        return ref

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        title = _single_line(value)
        assert title is not None
        return title

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str | None) -> str | None:
        return _single_line(value) or None

    @field_validator("context", "hypothesis", "next_action", "notes")
    @classmethod
    def _optional(cls, value: str | None) -> str | None:
        return _optional_text(value)

    @field_validator("observations")
    @classmethod
    def _observations(cls, value: list[str]) -> list[str]:
        out = []
        for i, obs in enumerate(value):
            text = normalize_text(obs)
            if not text:
                raise ValueError(f"observation #{i + 1} is empty")
            out.append(text)
        return out

    @model_validator(mode="after")
    def _title_rules(self) -> JournalEntry:
        if not self.title and self.corrects is None:
            raise ValueError("title must not be empty (only a correction may omit it)")
        if self.corrects is None and _CORRECTION_TITLE_RE.match(self.title):
            raise ValueError("a title starting with 'CORRECTION to (' needs corrects= set")
        return self
