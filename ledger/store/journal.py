"""The research journal in the ledger: append-only, hash-chained entries.

Storage contract (table ``journal_entries``, see :class:`ledger.models.JournalEntryRow`):

* ``body_json`` is :func:`journal.chain.canonical_entry_json` of the entry **as stored**, and
  ``hash = journal.chain.entry_hash(prev_hash, body_json)``; the first row's ``prev_hash`` is
  :data:`journal.chain.GENESIS`, ``seq`` counts 1, 2, 3, ... Because the hash covers only the
  previous hash and the canonical entry, a journal exported to markdown and imported, in order,
  into an empty ledger reproduces the same hashes.
* The links that live in columns are also inside the hashed entry: ``protocol_pk`` <-> the
  entry's ``protocol`` (the protocol id), ``corrects_seq`` <-> the entry's ``corrects``
  reference, ``title`` <-> the entry's title. :func:`verify_journal_chain` re-derives all three.
* ``at`` is the time the ledger recorded the row; it is not part of the hash (the entry's own
  ``date`` is).
* Appends are serialised with :func:`ledger.chainlock.lock_chain` (``journal_entries``); rows are
  never updated or deleted (database triggers, ``ledger/triggers.py``).

Corrections: an entry corrects an earlier one through ``corrects_seq`` (an existing seq) or the
entry's ``corrects`` reference, which resolves as the **latest earlier entry whose tag equals
it**, else (when it is all digits) the entry with that seq. An unresolvable reference is refused
(:class:`~ledger.errors.UserError`) unless ``allow_dangling=True`` (used by import, where a
journal excerpt may correct an entry that is not part of it): the reference is then kept in the
entry text and ``corrects_seq`` stays NULL. Listings show a correction on both sides:
``corrects_seq`` on the correction, ``corrected_by`` on the corrected entry.

Import (:func:`import_markdown`): the markdown is parsed (:func:`journal.markdown.parse_journal`)
and appended oldest first in the caller's transaction (all or nothing). An entry whose canonical
content (after the ``--protocol`` default is applied) already exists in the ledger is **skipped**,
so importing the same file twice adds nothing; the result reports imported / skipped counts.
Correction references by tag resolve as above. A numeric reference (``CORRECTION to (8)``, written
by ``--corrects 8`` for an untagged entry) is a seq of the ledger the file was exported from, so
it is resolved only when the import starts from an empty journal (a full export re-imported,
e.g. a move to another database, gets the same seqs); otherwise it is kept as written, left
unlinked and reported, rather than guessed. Tag entries (``--tag``) to make corrections portable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from docketml.journal.chain import GENESIS, canonical_entry_json, entry_from_canonical, entry_hash
from docketml.journal.chain import verify_chain as verify_chain_rows
from docketml.journal.markdown import parse_journal, render_journal
from docketml.journal.schema import JournalEntry

from ..errors import UserError
from . import merkle_log, protocols
from .chainlock import lock_chain
from .limits import MAX_ID
from .models import JournalEntryRow, ProtocolRow, RunRow, utcnow

__all__ = [
    "ImportResult",
    "append_entry",
    "corrections_index",
    "entry_of",
    "export_markdown",
    "import_markdown",
    "list_entries",
    "reference_for",
    "resolve_reference",
    "row_summary",
    "verify_journal_chain",
]


def entry_of(row: JournalEntryRow) -> JournalEntry:
    """The :class:`JournalEntry` stored in ``row`` (parsed from its canonical ``body_json``)."""
    return entry_from_canonical(row.body_json)


def _last_row(session: Session) -> JournalEntryRow | None:
    return session.scalars(
        select(JournalEntryRow).order_by(JournalEntryRow.seq.desc()).limit(1)
    ).first()


def resolve_reference(
    session: Session, ref: str, before_seq: int | None = None, *, digits: bool = True
) -> int | None:
    """The seq a correction reference ``ref`` points to among the entries before ``before_seq``
    (all entries when ``None``): the latest entry whose tag equals ``ref``; else, if ``digits``
    and ``ref`` is all digits, the entry with that seq; else ``None``."""
    needle = json.dumps({"tag": ref}, separators=(",", ":"), ensure_ascii=False)[1:-1]
    query = select(JournalEntryRow).where(
        JournalEntryRow.body_json.contains(needle, autoescape=True)
    )
    if before_seq is not None:
        query = query.where(JournalEntryRow.seq < before_seq)
    for row in session.scalars(query.order_by(JournalEntryRow.seq.desc())):
        if entry_of(row).tag == ref:
            return row.seq
    if digits and ref.isdigit():
        query = select(JournalEntryRow.seq).where(JournalEntryRow.seq == int(ref))
        if before_seq is not None:
            query = query.where(JournalEntryRow.seq < before_seq)
        return session.scalar(query)
    return None


def _resolve_in(tags: dict[str, int], seqs: set[int], ref: str) -> int | None:
    """:func:`resolve_reference` over an in-memory index of the earlier rows."""
    if ref in tags:
        return tags[ref]
    if ref.isdigit() and int(ref) in seqs:
        return int(ref)
    return None


def _with(entry: JournalEntry, **updates: Any) -> JournalEntry:
    try:
        return JournalEntry.model_validate({**entry.model_dump(), **updates})
    except ValidationError as exc:  # pragma: no cover - the updates are valid by construction
        raise UserError(f"journal entry: {exc.errors()[0]['msg']}") from None


def reference_for(session: Session, seq: int) -> str:
    """The reference a correction of entry ``seq`` writes into its text: the target's tag when
    that resolves back to ``seq`` (reads like the seed journal, "CORRECTION to (h)"), else the
    seq itself. :class:`UserError` if there is no entry ``seq``."""
    target = session.scalars(select(JournalEntryRow).where(JournalEntryRow.seq == seq)).first()
    if target is None:
        last = _last_row(session)
        have = f"entries are 1..{last.seq}" if last else "the journal is empty"
        raise UserError(f"--corrects {seq}: no journal entry with seq {seq} ({have})")
    for ref in (entry_of(target).tag, str(seq)):
        if ref and resolve_reference(session, ref) == seq:
            return ref
    raise UserError(
        f"--corrects {seq}: a later entry's tag {str(seq)!r} shadows that seq; correct the "
        "entry by its tag instead"
    )


def _check_runs_exist(session: Session, run_ids: list[int]) -> None:
    """Refuse (:class:`UserError`) run ids that are not runs of this ledger."""
    storable = sorted({r for r in run_ids if 1 <= r <= MAX_ID})
    found = (
        set(session.scalars(select(RunRow.id).where(RunRow.id.in_(storable))))
        if storable
        else set()
    )
    missing = sorted(set(run_ids) - found)
    if missing:
        last = session.scalar(select(func.max(RunRow.id)))
        known = f"runs are numbered 1..{last}" if last else "the ledger has no runs"
        raise UserError(
            f"the entry names run {', '.join(map(str, missing))}, which is not in the ledger "
            f"({known}; `docket runs list`)"
        )


def append_entry(
    session: Session,
    entry: JournalEntry,
    *,
    protocol_pk: int | None = None,
    corrects_seq: int | None = None,
    allow_dangling: bool = False,
    resolve_digits: bool = True,
) -> JournalEntryRow:
    """Append ``entry`` to the journal chain in the caller's transaction and return its row.

    - ``protocol_pk``: the protocol version the entry belongs to; the entry's ``protocol`` is set
      to that protocol's id (an entry naming a different protocol is refused). Without it, an
      entry naming a protocol known to the ledger is linked to that protocol's latest version.
    - ``corrects_seq``: the seq of the entry this one corrects; it must exist. The entry's
      ``corrects`` reference is set to it when empty; when both are given they must agree.
      Without it, the entry's own ``corrects`` reference is resolved (module docstring;
      ``resolve_digits=False`` resolves tags only).
    - ``allow_dangling``: keep an unresolvable reference unlinked instead of refusing it.
      Without it every run id in ``entry.runs`` must be a run in this ledger.
    - Raises :class:`UserError` (nothing written) for an unknown protocol, correction target or
      (without ``allow_dangling``) run.
    """
    lock_chain(session, "journal_entries")
    if protocol_pk is not None:
        protocol = session.get(ProtocolRow, protocol_pk)
        if protocol is None:
            raise UserError(f"no protocol row with id {protocol_pk}")
        if entry.protocol is not None and entry.protocol != protocol.protocol_id:
            raise UserError(
                f"the entry names protocol {entry.protocol!r} but is being added to "
                f"{protocol.protocol_id!r}"
            )
        if entry.protocol is None:
            entry = _with(entry, protocol=protocol.protocol_id)
    elif entry.protocol is not None:
        known = entry.protocol in protocols.known_ids(session)
        protocol_pk = protocols.latest(session, entry.protocol).id if known else None

    if entry.runs and not allow_dangling:
        _check_runs_exist(session, entry.runs)
    last_row = _last_row(session)
    if corrects_seq is not None:
        ref = reference_for(session, corrects_seq)  # refuses a seq that does not exist
        if entry.corrects is None:
            entry = _with(entry, corrects=ref)
        else:
            resolved = resolve_reference(session, entry.corrects)
            if resolved != corrects_seq:
                raise UserError(
                    f"the entry corrects ({entry.corrects}) but --corrects is {corrects_seq}; "
                    "give one of them"
                )
    elif entry.corrects is not None:
        corrects_seq = resolve_reference(session, entry.corrects, digits=resolve_digits)
        if corrects_seq is None and not allow_dangling:
            raise UserError(
                f"the entry is a CORRECTION to ({entry.corrects}), but no earlier journal entry "
                f"has tag {entry.corrects!r} or seq {entry.corrects}"
            )

    seq = last_row.seq + 1 if last_row else 1
    prev = last_row.hash if last_row else GENESIS
    canonical = canonical_entry_json(entry)
    row = JournalEntryRow(
        seq=seq,
        at=utcnow(),
        protocol_pk=protocol_pk,
        corrects_seq=corrects_seq,
        title=entry.title,
        body_json=canonical,
        prev_hash=prev,
        hash=entry_hash(prev, canonical),
    )
    session.add(row)
    session.flush()
    merkle_log.queue_leaf(session, "journal", row.id, merkle_log.chain_leaf("journal", row))
    return row


def entry_by_seq(session: Session, seq: int) -> JournalEntryRow | None:
    """The journal row with sequence number ``seq``, or None."""
    return session.scalars(select(JournalEntryRow).where(JournalEntryRow.seq == seq)).first()


def list_entries(session: Session, protocol_pk: int | None = None) -> list[JournalEntryRow]:
    """Journal rows in seq order; with ``protocol_pk``, only the entries of that protocol (any
    version of the same protocol id)."""
    query = select(JournalEntryRow).order_by(JournalEntryRow.seq)
    if protocol_pk is not None:
        protocol = session.get(ProtocolRow, protocol_pk)
        if protocol is None:
            return []
        pks = select(ProtocolRow.id).where(ProtocolRow.protocol_id == protocol.protocol_id)
        query = query.where(JournalEntryRow.protocol_pk.in_(pks))
    return list(session.scalars(query))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def row_summary(
    row: JournalEntryRow, corrected_by: Sequence[int] = (), *, full: bool = True
) -> dict[str, Any]:
    """JSON-able view of a row: ledger metadata, both sides of corrections, and the entry."""
    entry = entry_of(row)
    data: dict[str, Any] = {
        "seq": row.seq,
        "at": _iso(row.at),
        "date": entry.date.isoformat(),
        "tag": entry.tag,
        "title": row.title,
        "protocol": entry.protocol,
        "protocol_pk": row.protocol_pk,
        "corrects_seq": row.corrects_seq,
        "corrects": entry.corrects,
        "corrected_by": list(corrected_by),
        "hash": row.hash,
        "prev_hash": row.prev_hash,
    }
    if full:
        data["entry"] = entry.model_dump(mode="json")
    return data


def corrections_index(session: Session) -> dict[int, list[int]]:
    """``seq -> [seqs of the entries that correct it]`` over the whole journal."""
    index: dict[int, list[int]] = {}
    for seq, target in session.execute(
        select(JournalEntryRow.seq, JournalEntryRow.corrects_seq)
        .where(JournalEntryRow.corrects_seq.is_not(None))
        .order_by(JournalEntryRow.seq)
    ):
        index.setdefault(int(target), []).append(int(seq))
    return index


def verify_journal_chain(rows: Sequence[JournalEntryRow]) -> list[dict[str, Any]]:
    """Problems in the journal (``rows`` = every row, in seq order), each
    ``{"table": "journal_entries", "row": seq, "problem": text}``:

    - the chain: seq continuity, ``prev_hash`` links and ``hash`` over the stored body
      (:func:`journal.chain.verify_chain`);
    - ``body_json`` must parse as an entry and be in canonical form;
    - the ``title`` column must match the entry; a non-NULL ``corrects_seq`` must be what the
      entry's reference resolves to among the earlier rows (NULL is accepted for an entry with
      a reference: a correction imported without its target), and an entry without a
      reference must have no link.
    (``protocol_pk`` needs the protocols table: :func:`ledger.audit.audit` checks it.)
    """
    problems: list[dict[str, Any]] = []

    def add(seq: int, problem: str) -> None:
        problems.append({"table": "journal_entries", "row": seq, "problem": problem})

    chain_input = [(r.seq, r.body_json, r.prev_hash, r.hash) for r in rows]
    for p in verify_chain_rows(chain_input):
        if p.field == "hash":
            add(
                p.seq,
                f"content changed: stored hash {p.actual[:12]}, recomputed from the stored "
                f"body {p.expected[:12]}",
            )
        elif p.field == "prev_hash":
            add(
                p.seq,
                f"prev_hash {p.actual[:12]} does not link to the previous hash {p.expected[:12]}",
            )
        else:
            add(p.seq, f"seq out of order or missing: expected {p.expected}, found {p.actual}")

    tags: dict[str, int] = {}
    seqs: set[int] = set()
    for row in rows:
        try:
            entry = entry_of(row)
        except (ValidationError, ValueError) as exc:
            add(row.seq, f"body_json is not a valid journal entry: {str(exc).splitlines()[0]}")
            seqs.add(row.seq)
            continue
        canonical = canonical_entry_json(entry)
        if canonical != row.body_json:
            add(row.seq, "body_json is not in canonical form (edited outside docket)")
        if row.title != entry.title:
            add(
                row.seq,
                f"title column {row.title!r} differs from the entry's title {entry.title!r}",
            )
        if entry.corrects is None:
            if row.corrects_seq is not None:
                add(row.seq, f"corrects_seq is {row.corrects_seq} but the entry corrects nothing")
        else:
            resolved = _resolve_in(tags, seqs, entry.corrects)
            if row.corrects_seq is not None and row.corrects_seq != resolved:
                add(
                    row.seq,
                    f"corrects_seq is {row.corrects_seq} but the entry's reference "
                    f"({entry.corrects}) resolves to {resolved}",
                )
        seqs.add(row.seq)
        if entry.tag is not None:
            tags[entry.tag] = row.seq
    return problems


def export_markdown(session: Session, protocol_pk: int | None = None) -> str:
    """The journal (or one protocol's entries) as markdown in the seed style, newest first."""
    return render_journal([entry_of(row) for row in list_entries(session, protocol_pk)])


@dataclass
class ImportResult:
    """What :func:`import_markdown` did."""

    parsed: int = 0
    imported: list[int] = field(default_factory=list)  # new seqs
    skipped: int = 0  # entries whose canonical content already existed
    dangling: list[str] = field(default_factory=list)  # correction refs left unresolved

    def as_dict(self) -> dict[str, Any]:
        return {
            "parsed": self.parsed,
            "imported": len(self.imported),
            "imported_seqs": self.imported,
            "skipped": self.skipped,
            "dangling_corrections": self.dangling,
        }


def import_markdown(session: Session, text: str, *, protocol_pk: int | None = None) -> ImportResult:
    """Parse journal markdown and append its entries oldest first (module docstring).

    ``protocol_pk``: entries that name no protocol are attached to it; entries naming another
    protocol keep theirs. Raises :class:`journal.markdown.JournalParseError` (with the line) on
    malformed markdown, before anything is written.
    """
    entries = parse_journal(text)
    result = ImportResult(parsed=len(entries))
    default_protocol: str | None = None
    if protocol_pk is not None:
        protocol = session.get(ProtocolRow, protocol_pk)
        if protocol is None:
            raise UserError(f"no protocol row with id {protocol_pk}")
        default_protocol = protocol.protocol_id
    lock_chain(session, "journal_entries")
    existing = set(session.scalars(select(JournalEntryRow.body_json)))
    from_empty = not existing
    for entry in entries:
        if entry.protocol is None and default_protocol is not None:
            entry = _with(entry, protocol=default_protocol)
        canonical = canonical_entry_json(entry)
        if canonical in existing:
            result.skipped += 1
            continue
        pk = protocol_pk if entry.protocol == default_protocol and default_protocol else None
        row = append_entry(
            session, entry, protocol_pk=pk, allow_dangling=True, resolve_digits=from_empty
        )
        if entry.corrects is not None and row.corrects_seq is None:
            result.dangling.append(f"seq {row.seq} corrects ({entry.corrects})")
        existing.add(canonical)
        result.imported.append(row.seq)
    return result
