"""The journal hash chain.

Contract:

* ``canonical_entry_json(entry)`` = ``json.dumps(entry.model_dump(mode="json"),
  sort_keys=True, separators=(",", ":"), ensure_ascii=False)``: every field present
  (``None`` as ``null``), dates ISO ``YYYY-MM-DD``, floats in Python's shortest
  round-trip form. Text is already normalised by the schema, so the canonical form does
  not depend on how the markdown was wrapped or indented.
* ``entry_hash(prev_hash, canonical)`` = ``sha256((prev_hash + "\\n" + canonical)
  .encode("utf-8")).hexdigest()``.
* The first row's ``prev_hash`` is :data:`GENESIS` (``"0" * 64``); row *n*'s
  ``prev_hash`` is row *n-1*'s stored ``hash``; ``seq`` increases by exactly 1.

:func:`verify_chain` compares each row against the row before it **as stored**, so a
tampered row is reported at its own seq without cascading onto every later row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .schema import JournalEntry

__all__ = [
    "GENESIS",
    "ChainProblem",
    "ChainRow",
    "build_chain",
    "canonical_entry_json",
    "entry_from_canonical",
    "entry_hash",
    "verify_chain",
]

GENESIS = "0" * 64


class ChainRow(NamedTuple):
    """One stored link: ``(seq, canonical, prev_hash, hash)``."""

    seq: int
    canonical: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainProblem:
    """A chain defect at ``seq``: ``field`` is ``"seq"``, ``"prev_hash"`` or ``"hash"``."""

    seq: int
    field: str
    expected: str
    actual: str

    @property
    def message(self) -> str:
        what = {
            "seq": "sequence number out of order or missing",
            "prev_hash": "prev_hash does not link to the previous entry",
            "hash": "hash does not match sha256(prev_hash + '\\n' + canonical)",
        }[self.field]
        return f"seq {self.seq}: {what} (expected {self.expected}, found {self.actual})"

    def __str__(self) -> str:
        return self.message


def canonical_entry_json(entry: JournalEntry) -> str:
    """The canonical JSON text of ``entry`` (sorted keys, compact separators, ISO dates)."""
    return json.dumps(
        entry.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def entry_from_canonical(canonical: str) -> JournalEntry:
    """Inverse of :func:`canonical_entry_json`."""
    return JournalEntry.model_validate_json(canonical)


def entry_hash(prev_hash: str, canonical: str) -> str:
    """``sha256(prev_hash + "\\n" + canonical)`` as 64 lowercase hex digits (UTF-8)."""
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def build_chain(
    entries: Iterable[JournalEntry], *, start_seq: int = 1, prev_hash: str = GENESIS
) -> list[ChainRow]:
    """Chain ``entries`` (in order) from ``prev_hash``, numbering from ``start_seq``."""
    rows = []
    for seq, entry in enumerate(entries, start=start_seq):
        canonical = canonical_entry_json(entry)
        digest = entry_hash(prev_hash, canonical)
        rows.append(ChainRow(seq, canonical, prev_hash, digest))
        prev_hash = digest
    return rows


def verify_chain(
    rows: Iterable[Sequence[object]] | Iterable[ChainRow], *, genesis: str = GENESIS
) -> list[ChainProblem]:
    """Check ``(seq, canonical, prev_hash, hash)`` rows in the given (stored) order.

    Returns the problems in order (empty when intact); ``problems[0].seq`` is the first
    broken seq. Per row: ``seq`` must be the previous seq + 1; ``prev_hash`` must equal
    the previous row's stored ``hash`` (``genesis`` for the first row); ``hash`` must
    equal ``entry_hash(prev_hash, canonical)`` over the row's own stored values.
    A changed canonical shows as a ``hash`` problem at that seq; a broken link or a
    reordered pair as ``prev_hash`` (and ``seq``) problems.
    """
    problems: list[ChainProblem] = []
    prev_seq: int | None = None
    expected_prev = genesis
    for row in rows:
        seq, canonical, prev_hash, digest = row  # type: ignore[misc]
        seq = int(seq)  # type: ignore[call-overload]
        if prev_seq is not None and seq != prev_seq + 1:
            problems.append(ChainProblem(seq, "seq", str(prev_seq + 1), str(seq)))
        if prev_hash != expected_prev:
            problems.append(ChainProblem(seq, "prev_hash", expected_prev, str(prev_hash)))
        recomputed = entry_hash(str(prev_hash), str(canonical))
        if digest != recomputed:
            problems.append(ChainProblem(seq, "hash", recomputed, str(digest)))
        prev_seq = seq
        expected_prev = str(digest)
    return problems
