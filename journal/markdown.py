"""Markdown import/export of the research journal.

The format (as in the seed journal)::

    Append-only. New entries at the top, date-stamped. Never edit old entries.

    ## 2026-05-31 (j) — title
    **Context:** text that may wrap
    over several lines
    **Hypothesis:** ...
    ### Observations
    - [obs] an observation, possibly wrapped
    ### Inferences
    - [inf] a claim {reason: "why", credence: 0.6}
    ### Failure modes considered
    - **Likely:** what could be wrong. Prior 0.4. Check: how to tell.
    ### Next action
    free text
    ## 2026-05-31 (i) — CORRECTION to (h): title
    ...

Parsing contract (:func:`parse_journal`):

* The file lists entries **newest first**; the result is **oldest first** (the reverse of
  file order; dates are not re-sorted). Everything before the first ``## YYYY-MM-DD``
  heading (the "Append-only..." header, a ``# Title``) is ignored.
* Heading: ``## YYYY-MM-DD [(tag)] — title``; the separator may be an em or en dash, ``-``,
  ``--`` or ``:``. ``CORRECTION to (ref)[: title]`` sets ``corrects = ref``.
* Bold labels at column 0: ``**Context:**``, ``**Hypothesis:**``, ``**Protocol:**``,
  ``**Runs:**`` (comma-separated integers), ``**Notes:**``, ``**Next action:**``.
* Sections: ``### Observations``, ``### Inferences``, ``### Failure modes[ considered]``,
  ``### Next action``; all optional, any order. An unknown ``###`` section is an error.
* List items start at column 0 with ``- `` (or ``* ``); ``[obs]`` / ``[inf]`` markers
  win over the section they appear in, so ``- [inf]`` items directly under the heading
  (as in a correction) are inferences. Unmarked items take the kind of their section.
* A non-blank line that is indented, or that does not start an item/label/section/
  heading, continues the open item or labelled paragraph (markdown lazy continuation);
  line breaks are kept. A blank line closes it. Free text with nothing open becomes
  ``notes`` (or ``next_action`` inside the Next action section).
* An inference ends with ``{reason: "...", credence: X}`` or ``{credence: X}``
  (the reason may span lines and contain quotes). A failure mode reads
  ``[**Label:**] text Prior X[.] [Check: text]``. ``X`` may be written as ``40%``.

Any violation raises :class:`JournalParseError` naming the 1-based line.

Rendering (:func:`render_entry`, :func:`render_journal`) writes the same style, newest first.
Continuation lines that could be mistaken for structure (starting with ``#``, ``-``,
``*`` or ``+``) are indented by two spaces. For every valid model,
``parse_journal(render_journal(entries)) == entries``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from pydantic import ValidationError

from .schema import FailureMode, Inference, JournalEntry

__all__ = [
    "HEADER",
    "JournalParseError",
    "parse_journal",
    "render_entry",
    "render_journal",
]

HEADER = "Append-only. New entries at the top, date-stamped. Never edit old entries."


class JournalParseError(ValueError):
    """A journal markdown error at a 1-based ``line``; ``str()`` reads ``line N: message``."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


# --------------------------------------------------------------------------- regexes

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?%?"
_HEADING_START_RE = re.compile(r"^##\s")
_HEADING_RE = re.compile(
    r"^##\s+(?P<date>\d{4}-\d{1,2}-\d{1,2})"
    r"(?:\s+\((?P<tag>[^()\s]+)\))?"
    r"(?:\s*[\u2014\u2013]\s*|\s+-{1,2}\s+|\s*:\s+|\s+|$)"
    r"(?P<rest>.*?)\s*$"
)
_CORRECTION_RE = re.compile(
    r"^correction\s+(?:to|of)\s+(?:entry\s+)?\((?P<ref>[^()\s]+)\)\s*(?:[:\u2014\u2013-]\s*)?(?P<title>.*)$",
    re.IGNORECASE,
)
_SECTION_RE = re.compile(r"^###(?:\s+(?P<name>.*?))?\s*$")
_LABEL_RE = re.compile(r"^\*\*(?P<label>[A-Za-z][A-Za-z ]*?)(?::\*\*|\*\*:)\s*(?P<rest>.*)$")
_ITEM_RE = re.compile(r"^[-*+]\s+(?P<rest>.*)$|^[-*+]$")
_MARKER_RE = re.compile(r"^\[(?P<kind>obs|inf)\]\s*(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_INF_REASON_FIRST_RE = re.compile(
    r"^(?P<text>.*?)\s*\{\s*reason\s*:\s*\"(?P<reason>.*)\"\s*,\s*credence\s*:\s*"
    rf"(?P<credence>{_NUM})\s*\}}\s*$",
    re.IGNORECASE | re.DOTALL,
)
_INF_CREDENCE_FIRST_RE = re.compile(
    rf"^(?P<text>.*?)\s*\{{\s*credence\s*:\s*(?P<credence>{_NUM})\s*"
    r"(?:,\s*reason\s*:\s*\"(?P<reason>.*)\"\s*)?\}\s*$",
    re.IGNORECASE | re.DOTALL,
)
_FM_LABEL_RE = re.compile(r"^\*\*(?P<label>[^*\n]+?)(?::\*\*|\*\*:)\s*(?P<rest>.*)$", re.DOTALL)
_FM_RE = re.compile(
    rf"^(?P<text>.*?)\s*\bprior\b\s*:?\s*(?P<prior>{_NUM})\.?"
    r"(?:\s+check\s*:\s*(?P<check>.*?))?\s*$",
    re.IGNORECASE | re.DOTALL,
)

_SECTIONS = {
    "observations": "obs",
    "observation": "obs",
    "inferences": "inf",
    "inference": "inf",
    "failure modes considered": "fm",
    "failure modes": "fm",
    "failure mode": "fm",
    "next action": "next",
    "next actions": "next",
    "next step": "next",
    "next steps": "next",
}
_LABELS = {
    "context": "context",
    "hypothesis": "hypothesis",
    "protocol": "protocol",
    "runs": "runs",
    "run": "runs",
    "notes": "notes",
    "note": "notes",
    "next action": "next",
    "next": "next",
}
_SINGLE_USE = {"context", "hypothesis", "protocol", "runs"}


# --------------------------------------------------------------------------- parsing


@dataclass
class _Block:
    kind: str  # obs | inf | fm | context | hypothesis | protocol | runs | notes | next
    line: int
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines).strip()


@dataclass
class _Draft:
    line: int
    date: dt.date
    tag: str | None
    title: str
    corrects: str | None
    blocks: list[_Block] = field(default_factory=list)
    seen_labels: set[str] = field(default_factory=set)


def _number(raw: str, line: int, what: str) -> float:
    """Parse ``0.6`` / ``60%`` into a float (the percentage is divided exactly)."""
    try:
        if raw.endswith("%"):
            return float(Decimal(raw[:-1]) / 100)
        return float(raw)
    except (ValueError, InvalidOperation):
        raise JournalParseError(line, f"{what} {raw!r} is not a number") from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def _parse_heading(raw: str, lineno: int) -> _Draft:
    m = _HEADING_RE.match(raw)
    if not m:
        raise JournalParseError(
            lineno, f"malformed entry heading {raw!r}; expected '## YYYY-MM-DD (tag) — title'"
        )
    try:
        date = dt.date.fromisoformat(
            "-".join(f"{int(p):02d}" if i else p for i, p in enumerate(m["date"].split("-")))
        )
    except ValueError:
        raise JournalParseError(lineno, f"invalid date {m['date']!r} in entry heading") from None
    rest = m["rest"]
    corrects = None
    cm = _CORRECTION_RE.match(rest)
    if cm:
        corrects, rest = cm["ref"], cm["title"].strip()
    elif not rest:
        raise JournalParseError(lineno, "entry heading has no title")
    return _Draft(line=lineno, date=date, tag=m["tag"], title=rest, corrects=corrects)


def _parse_inference(block: _Block) -> Inference:
    text = block.text
    m = _INF_REASON_FIRST_RE.match(text) or _INF_CREDENCE_FIRST_RE.match(text)
    if not m:
        raise JournalParseError(
            block.line,
            'inference must end with {reason: "...", credence: 0.6} or {credence: 0.6}',
        )
    credence = _number(m["credence"], block.line, "credence")
    try:
        return Inference(text=m["text"], credence=credence, reason=m["reason"])
    except ValidationError as exc:
        raise JournalParseError(block.line, f"inference: {_validation_message(exc)}") from None


def _parse_failure_mode(block: _Block) -> FailureMode:
    text = block.text
    label = None
    lm = _FM_LABEL_RE.match(text)
    if lm:
        label, text = lm["label"].strip(), lm["rest"]
    m = _FM_RE.match(text)
    if not m:
        raise JournalParseError(
            block.line, "failure mode must read '[**Label:**] text Prior 0.4. [Check: ...]'"
        )
    prior = _number(m["prior"], block.line, "prior")
    try:
        return FailureMode(label=label, text=m["text"], prior=prior, check=m["check"])
    except ValidationError as exc:
        raise JournalParseError(block.line, f"failure mode: {_validation_message(exc)}") from None


def _parse_runs(block: _Block) -> list[int]:
    runs = []
    for token in re.split(r"[,\s]+", block.text):
        if not token:
            continue
        digits = token.removeprefix("#")
        if not digits.isdigit():
            raise JournalParseError(block.line, f"**Runs:** expects integers, got {token!r}")
        runs.append(int(digits))
    return runs


def _finish(draft: _Draft) -> JournalEntry:
    observations: list[str] = []
    inferences: list[Inference] = []
    failure_modes: list[FailureMode] = []
    fields: dict[str, list[str]] = {}
    runs: list[int] = []
    for block in draft.blocks:
        if block.kind == "obs":
            if not block.text:
                raise JournalParseError(block.line, "empty observation")
            observations.append(block.text)
        elif block.kind == "inf":
            inferences.append(_parse_inference(block))
        elif block.kind == "fm":
            failure_modes.append(_parse_failure_mode(block))
        elif block.kind == "runs":
            runs.extend(_parse_runs(block))
        elif block.kind == "protocol":
            fields.setdefault("protocol", []).append(" ".join(block.lines).strip())
        else:
            fields.setdefault(block.kind, []).append(block.text)
    try:
        return JournalEntry(
            date=draft.date,
            tag=draft.tag,
            title=draft.title,
            context="\n".join(fields.get("context", [])) or None,
            hypothesis="\n".join(fields.get("hypothesis", [])) or None,
            observations=observations,
            inferences=inferences,
            failure_modes=failure_modes,
            next_action="\n".join(fields.get("next", [])) or None,
            corrects=draft.corrects,
            protocol="".join(fields.get("protocol", [])) or None,
            runs=runs,
            notes="\n".join(fields.get("notes", [])) or None,
        )
    except ValidationError as exc:
        raise JournalParseError(draft.line, f"entry: {_validation_message(exc)}") from None


def parse_journal(text: str) -> list[JournalEntry]:
    """Parse journal markdown into entries, **oldest first** (the file is newest first).

    Raises :class:`JournalParseError` (with the 1-based line) on malformed input.
    """
    drafts: list[_Draft] = []
    cur: _Draft | None = None
    section: str | None = None
    open_block: _Block | None = None

    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if _HEADING_START_RE.match(raw):
            after = raw[2:].lstrip()
            if cur is None and not after[:1].isdigit():
                continue  # a heading in the file header, before any entry
            cur = _parse_heading(raw, lineno)
            drafts.append(cur)
            section, open_block = None, None
            continue
        if cur is None:
            continue  # header text
        if not stripped:
            open_block = None
            continue
        indented = raw[:1].isspace()
        if not indented:
            sm = _SECTION_RE.match(raw)
            if sm:
                name = " ".join((sm["name"] or "").lower().split())
                if name not in _SECTIONS:
                    known = "Observations, Inferences, Failure modes considered, Next action"
                    raise JournalParseError(
                        lineno, f"unknown section {raw.strip()!r}; expected one of: {known}"
                    )
                section, open_block = _SECTIONS[name], None
                continue
            lm = _LABEL_RE.match(raw)
            if lm and " ".join(lm["label"].lower().split()) in _LABELS:
                kind = _LABELS[" ".join(lm["label"].lower().split())]
                if kind in _SINGLE_USE and kind in cur.seen_labels:
                    raise JournalParseError(lineno, f"duplicate **{lm['label']}:** in this entry")
                cur.seen_labels.add(kind)
                open_block = _Block(kind, lineno, [lm["rest"].strip()])
                cur.blocks.append(open_block)
                continue
            im = _ITEM_RE.match(raw)
            if im:
                rest = (im["rest"] or "").strip()
                mm = _MARKER_RE.match(rest)
                if mm:
                    kind, rest = mm["kind"].lower(), mm["rest"]
                elif section in ("obs", "inf", "fm"):
                    kind = section
                else:
                    kind, rest = section or "notes", stripped  # a plain bullet: keep as text
                open_block = _Block(kind, lineno, [rest])
                cur.blocks.append(open_block)
                continue
        if open_block is not None:
            open_block.lines.append(stripped)
        else:
            open_block = _Block("next" if section == "next" else "notes", lineno, [stripped])
            cur.blocks.append(open_block)

    return [_finish(d) for d in reversed(drafts)]


# --------------------------------------------------------------------------- rendering


def _num(value: float) -> str:
    return repr(float(value))


_STRUCTURAL_STARTS = ("#", "-", "*", "+")


def _emit(prefix: str, text: str) -> list[str]:
    """``prefix + first line``, then the other lines; a line that could be mistaken for
    structure (starting with ``#``, ``-``, ``*``, ``+``) is indented by two spaces.

    With an empty ``prefix`` (a free paragraph) the first line is treated like the others.
    """
    out = []
    for i, line in enumerate(text.split("\n")):
        if i == 0 and prefix:
            out.append((prefix + line).rstrip())
        else:
            out.append("  " + line if line.startswith(_STRUCTURAL_STARTS) else line)
    return out


def _heading(entry: JournalEntry) -> str:
    head = f"## {entry.date.isoformat()}"
    if entry.tag is not None:
        head += f" ({entry.tag})"
    title = entry.title
    if entry.corrects is not None:
        title = f"CORRECTION to ({entry.corrects})" + (f": {title}" if title else "")
    return f"{head} — {title}"


def render_entry(entry: JournalEntry) -> str:
    """Render one entry as markdown (ends with a newline)."""
    out = [_heading(entry)]
    if entry.context is not None:
        out += _emit("**Context:** ", entry.context)
    if entry.hypothesis is not None:
        out += _emit("**Hypothesis:** ", entry.hypothesis)
    if entry.protocol is not None:
        out.append(f"**Protocol:** {entry.protocol}")
    if entry.runs:
        out.append("**Runs:** " + ", ".join(str(r) for r in entry.runs))
    if entry.notes is not None:
        out += _emit("**Notes:** ", entry.notes)
    if entry.observations:
        out.append("### Observations")
        for obs in entry.observations:
            out += _emit("- [obs] ", obs)
    if entry.inferences:
        out.append("### Inferences")
        for inf in entry.inferences:
            tail = f"{{credence: {_num(inf.credence)}}}"
            if inf.reason is not None:
                tail = f'{{reason: "{inf.reason}", credence: {_num(inf.credence)}}}'
            out += _emit("- [inf] ", f"{inf.text} {tail}")
    if entry.failure_modes:
        out.append("### Failure modes considered")
        for fm in entry.failure_modes:
            prefix = f"- **{fm.label}:** " if fm.label is not None else "- "
            body = f"{fm.text} Prior {_num(fm.prior)}."
            if fm.check is not None:
                body += f" Check: {fm.check}"
            out += _emit(prefix, body)
    if entry.next_action is not None:
        out.append("### Next action")
        out += _emit("", entry.next_action)
    return "\n".join(out) + "\n"


def render_journal(entries: Sequence[JournalEntry] | Iterable[JournalEntry]) -> str:
    """Render a journal: the header line, then entries **newest first**.

    ``entries`` is oldest first (as returned by :func:`parse_journal`).
    """
    items = list(entries)
    parts = [HEADER + "\n"]
    parts += [render_entry(e) for e in reversed(items)]
    return "\n".join(parts)
