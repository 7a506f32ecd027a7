"""Build a :class:`~journal.schema.JournalEntry` from CLI-style flags or from markdown.

Flag forms (as used by ``docket journal add``)::

    --title TEXT  --context TEXT  --hypothesis TEXT  --next TEXT  --corrects REF
    --obs TEXT            (repeatable)
    --inf "TEXT:0.6"      (repeatable; TEXT, then a colon, then the credence in [0, 1])
    --failure "TEXT:0.3"  (repeatable; TEXT, then a colon, then the prior in [0, 1])

The **last** colon splits text from number, so the text may itself contain colons
(``--inf "ratio a:b is stable:0.7"``). The number may be written ``0.7`` or ``70%``.
A malformed value raises :class:`ValueError` naming the flag and the expected form.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path

from pydantic import ValidationError

from .markdown import JournalParseError, parse_journal
from .schema import FailureMode, Inference, JournalEntry

__all__ = [
    "entry_from_flags",
    "entry_from_markdown",
    "entry_from_markdown_file",
    "parse_scored_flag",
]

_FLAG_FOR_FIELD = {
    "title": "--title",
    "context": "--context",
    "hypothesis": "--hypothesis",
    "observations": "--obs",
    "inferences": "--inf",
    "failure_modes": "--failure",
    "next_action": "--next",
    "corrects": "--corrects",
    "tag": "--tag",
    "protocol": "--protocol",
    "runs": "--run",
    "notes": "--notes",
    "date": "--date",
}


def parse_scored_flag(flag: str, value: str, what: str = "credence") -> tuple[str, float]:
    """Split ``"TEXT:NUMBER"`` at the last colon into ``(text, number)``, number in [0, 1].

    Raises ValueError naming ``flag`` and the expected form when there is no colon, the
    text is empty, or the number is not a finite value in [0, 1].
    """
    form = f'{flag} "TEXT:{what.upper()}" with {what.upper()} in [0, 1], e.g. {flag} "x holds:0.6"'
    text, sep, raw = value.rpartition(":")
    if not sep:
        raise ValueError(f"{flag} {value!r}: no colon; expected {form}")
    if not text.strip():
        raise ValueError(f"{flag} {value!r}: empty text; expected {form}")
    raw = raw.strip()
    try:
        number = float(Decimal(raw[:-1]) / 100) if raw.endswith("%") else float(raw)
    except (ValueError, InvalidOperation):
        raise ValueError(f"{flag} {value!r}: {raw!r} is not a number; expected {form}") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{flag} {value!r}: {what} {raw} is outside [0, 1]; expected {form}")
    return text.strip(), number


def _field_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = err["loc"]
        flag = _FLAG_FOR_FIELD.get(str(loc[0]), str(loc[0])) if loc else "entry"
        parts.append(f"{flag}: {err['msg']}")
    return "; ".join(parts)


def entry_from_flags(
    *,
    title: str,
    context: str | None = None,
    hypothesis: str | None = None,
    obs: Iterable[str] = (),
    inf: Iterable[str] = (),
    failure: Iterable[str] = (),
    next_action: str | None = None,
    corrects: str | None = None,
    tag: str | None = None,
    protocol: str | None = None,
    runs: Iterable[int] = (),
    notes: str | None = None,
    date: dt.date | None = None,
) -> JournalEntry:
    """Build an entry from flag values; ``date`` defaults to today (local time).

    ``inf`` items are ``"TEXT:CREDENCE"``, ``failure`` items ``"TEXT:PRIOR"`` (see
    :func:`parse_scored_flag`). Any invalid value raises ValueError naming its flag.
    """
    if not title.strip() and corrects is None:
        raise ValueError("--title: must not be empty (only a --corrects entry may omit it)")
    inferences = []
    for value in inf:
        text, credence = parse_scored_flag("--inf", value, "credence")
        try:
            inferences.append(Inference(text=text, credence=credence))
        except ValidationError as exc:
            raise ValueError(f"--inf {value!r}: {_field_errors(exc)}") from None
    failure_modes = []
    for value in failure:
        text, prior = parse_scored_flag("--failure", value, "prior")
        try:
            failure_modes.append(FailureMode(text=text, prior=prior))
        except ValidationError as exc:
            raise ValueError(f"--failure {value!r}: {_field_errors(exc)}") from None
    try:
        return JournalEntry(
            date=date or dt.date.today(),
            tag=tag,
            title=title,
            context=context,
            hypothesis=hypothesis,
            observations=list(obs),
            inferences=inferences,
            failure_modes=failure_modes,
            next_action=next_action,
            corrects=corrects,
            protocol=protocol,
            runs=list(runs),
            notes=notes,
        )
    except ValidationError as exc:
        raise ValueError(_field_errors(exc)) from None


def entry_from_markdown(text: str) -> JournalEntry:
    """Parse markdown holding exactly one entry (``## YYYY-MM-DD ...`` heading).

    Raises :class:`~journal.markdown.JournalParseError` when it holds zero or several.
    """
    entries = parse_journal(text)
    if len(entries) != 1:
        raise JournalParseError(1, f"expected exactly one entry, found {len(entries)}")
    return entries[0]


def entry_from_markdown_file(path: str | Path) -> JournalEntry:
    """:func:`entry_from_markdown` on a UTF-8 file; errors name the file and line."""
    path = Path(path)
    try:
        return entry_from_markdown(path.read_text(encoding="utf-8"))
    except JournalParseError as exc:
        raise JournalParseError(exc.line, f"{path}: {exc.message}") from None
