"""``docket audit``: re-derive every hash the ledger relies on and check the append-only guards.

What is checked (each problem is one :class:`Finding` naming the table, the row and what differs):

1. ``protocols``: every row's ``yaml_text`` is re-validated (:func:`protocols.loader.
   load_protocol_text`), its canonical JSON and sha256 recomputed and compared with the stored
   ``canonical_json`` and ``sha256``; the stored canonical JSON must hash to the stored sha256; the
   ``protocol_id`` and ``title`` columns must match the YAML. Rows bound to a protocol version
   (``runs``, ``sign_checks``, ``verdicts``) must carry that version's sha256.
2. ``journal_entries``: the hash chain and the columns derived from each entry
   (:func:`ledger.journal_store.verify_journal_chain`); ``protocol_pk`` must point to the protocol
   the entry names.
3. ``costs``: the hash chain (:func:`ledger.costs.verify_cost_chain`).
4. ``verdicts``: each verdict's ``inputs_sha256`` is recomputed from the observations now in the
   ledger by the verdict engine, ``ledger.verdicts.recompute_inputs_sha256(session, verdict_row)
   -> str`` (``inputs_sha256_for`` is accepted as an alias). If verdicts exist but the engine
   offers neither, that is a finding too: an audit never calls unverified data clean.
5. Triggers: every append-only / frozen-row trigger of :mod:`ledger.triggers` exists.

The audit writes nothing (one read-only transaction, :meth:`Ledger.read_session`), so it runs on a
read-only replica or role. Runs whose lease expired are listed, not reaped: ``docket runs reap``
(or the next ``run``/``ingest``) marks them abandoned and books their cost.

Limits (by construction of hash chains): deleting the *last* rows of a chain, or rewriting a row
and re-hashing every row after it, is not detectable from the ledger alone; keep the head hash
(``docket audit --json`` prints it) somewhere else to detect that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from docketml.migrations.triggers import missing_triggers
from docketml.protocols.canonical import protocol_sha256
from docketml.protocols.errors import ProtocolErrors
from docketml.protocols.loader import load_protocol_text

from ..billing.costs import verify_cost_chain
from ..billing.money import format_usd
from ..store.db import Ledger
from ..store.journal import entry_of, verify_journal_chain
from ..store.models import CostRow, JournalEntryRow, ProtocolRow, RunRow, SignCheckRow, VerdictRow
from ..store.runs import lease_expired

__all__ = ["AuditReport", "Finding", "audit", "audit_session"]

RecomputeFn = Callable[[Session, VerdictRow], str]


@dataclass(frozen=True)
class Finding:
    """One integrity problem: ``table``, ``row`` (its id or seq, ``None`` for table-level
    findings such as a missing trigger) and ``problem`` (what differs)."""

    table: str
    row: int | str | None
    problem: str

    def __str__(self) -> str:
        where = self.table if self.row is None else f"{self.table} row {self.row}"
        return f"{where}: {self.problem}"


@dataclass
class AuditReport:
    """The audit's result; ``clean`` iff there are no findings."""

    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    heads: dict[str, str | None] = field(default_factory=dict)
    expired_leases: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "findings": [asdict(f) for f in self.findings],
            "checked": self.checked,
            "heads": self.heads,
            "expired_leases": self.expired_leases,
        }


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_differences(old: Any, new: Any, path: str = "", limit: int = 3) -> list[str]:
    """Up to ``limit`` differences between two JSON values as ``path: stored X, now Y``."""
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                sub = f"{where}.{key}" if where else str(key)
                if key not in a:
                    out.append(f"{sub}: added {_short(b[key])}")
                elif key not in b:
                    out.append(f"{sub}: removed (was {_short(a[key])})")
                else:
                    walk(a[key], b[key], sub)
                if len(out) >= limit:
                    return
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{where}[{i}]")
        elif a != b or type(a) is not type(b):
            out.append(f"{where or '(root)'}: stored {_short(a)}, now {_short(b)}")

    walk(old, new, path)
    return out


def _audit_protocols(session: Session, findings: list[Finding]) -> int:
    rows = list(session.scalars(select(ProtocolRow).order_by(ProtocolRow.id)))
    for row in rows:
        name = f"{row.id} ({row.protocol_id} v{row.version})"

        def add(problem: str, name: str = name) -> None:
            findings.append(Finding("protocols", name, problem))

        stored_hash = hashlib.sha256(row.canonical_json.encode("utf-8")).hexdigest()
        if stored_hash != row.sha256:
            add(
                f"canonical_json hashes to {stored_hash[:12]}, not the stored sha256 "
                f"{row.sha256[:12]} (canonical_json or sha256 edited)"
            )
        try:
            loaded = load_protocol_text(
                row.yaml_text, f"ledger:{row.protocol_id}@v{row.version}", admission=False
            )
        except ProtocolErrors as exc:
            first = str(exc.errors[0]) if exc.errors else str(exc)
            add(f"yaml_text no longer validates: {first}")
            continue
        if loaded.canonical != row.canonical_json:
            try:
                diffs = json_differences(
                    json.loads(row.canonical_json), json.loads(loaded.canonical)
                )
            except json.JSONDecodeError:
                diffs = ["stored canonical_json is not JSON"]
            add(
                "yaml_text differs from the stored canonical_json: " + "; ".join(diffs)
                if diffs
                else "yaml_text's canonical form differs from the stored canonical_json"
            )
        recomputed = protocol_sha256(loaded.protocol)
        if recomputed != row.sha256:
            add(f"sha256 stored {row.sha256[:12]}, recomputed from yaml_text {recomputed[:12]}")
        if loaded.protocol.id != row.protocol_id:
            add(f"protocol_id column {row.protocol_id!r}, the YAML says {loaded.protocol.id!r}")
        if loaded.protocol.title != row.title:
            add(f"title column {row.title!r}, the YAML says {loaded.protocol.title!r}")

    shas = {row.id: row.sha256 for row in rows}
    bound: list[tuple[str, Any]] = [("runs", RunRow), ("sign_checks", SignCheckRow)]
    bound.append(("verdicts", VerdictRow))
    for table, model in bound:
        for pk, protocol_pk, sha in session.execute(
            select(model.id, model.protocol_pk, model.protocol_sha256).order_by(model.id)
        ):
            if protocol_pk in shas and shas[protocol_pk] != sha:
                findings.append(
                    Finding(
                        table,
                        pk,
                        f"bound to protocol sha256 {sha[:12]}, but protocol row {protocol_pk} "
                        f"has sha256 {shas[protocol_pk][:12]}",
                    )
                )
    return len(rows)


def _audit_journal(session: Session, findings: list[Finding]) -> tuple[int, str | None]:
    rows = list(session.scalars(select(JournalEntryRow).order_by(JournalEntryRow.seq)))
    for p in verify_journal_chain(rows):
        findings.append(Finding(p["table"], p["row"], p["problem"]))
    names = dict(session.execute(select(ProtocolRow.id, ProtocolRow.protocol_id)).all())
    for row in rows:
        if row.protocol_pk is None:
            continue
        try:
            named = entry_of(row).protocol
        except ValueError:
            continue  # already reported by verify_journal_chain
        if names.get(row.protocol_pk) != named:
            findings.append(
                Finding(
                    "journal_entries",
                    row.seq,
                    f"protocol_pk {row.protocol_pk} is protocol "
                    f"{names.get(row.protocol_pk)!r}, the entry names {named!r}",
                )
            )
    return len(rows), rows[-1].hash if rows else None


def _audit_costs(session: Session, findings: list[Finding]) -> tuple[int, str | None]:
    rows = list(session.scalars(select(CostRow).order_by(CostRow.seq)))
    by_seq = {row.seq: row for row in rows}
    for p in verify_cost_chain(rows):
        row = by_seq.get(p["row"])
        now = ""
        if row is not None and p["problem"].startswith("content changed"):
            now = (
                f"; the row now reads {row.usd_micros} micros "
                f"({format_usd(int(row.usd_micros), precise=True)}) on {row.hardware}, "
                f"run {row.run_id}, protocol row {row.protocol_pk}, label {row.label!r}"
            )
        findings.append(Finding(p["table"], p["row"], p["problem"] + now))
    return len(rows), rows[-1].hash if rows else None


def _audit_verdicts(
    session: Session, findings: list[Finding], recompute: RecomputeFn | None
) -> int:
    rows = list(session.scalars(select(VerdictRow).order_by(VerdictRow.id)))
    if rows and recompute is None:
        from ..verdicts import recompute_inputs_sha256  # imported only when needed

        recompute = recompute_inputs_sha256
    for row in rows:
        assert recompute is not None
        try:
            now = recompute(session, row)
        except Exception as exc:  # a verdict whose inputs cannot be re-read is a finding
            findings.append(
                Finding(
                    "verdicts", row.id, f"inputs cannot be re-derived: {type(exc).__name__}: {exc}"
                )
            )
            continue
        if now != row.inputs_sha256:
            findings.append(
                Finding(
                    "verdicts",
                    row.id,
                    f"inputs_sha256 stored {row.inputs_sha256[:12]}, recomputed from the "
                    f"observations now in the ledger {now[:12]} (runs {row.run_ids_json}): the "
                    f"{row.verdict} verdict's observations changed",
                )
            )
    return len(rows)


def audit_session(session: Session, *, recompute: RecomputeFn | None = None) -> AuditReport:
    """Run every check (module docstring) in ``session``; nothing is written."""
    report = AuditReport()
    findings = report.findings
    report.checked["protocols"] = _audit_protocols(session, findings)
    report.checked["journal_entries"], report.heads["journal_entries"] = _audit_journal(
        session, findings
    )
    report.checked["costs"], report.heads["costs"] = _audit_costs(session, findings)
    report.checked["verdicts"] = _audit_verdicts(session, findings, recompute)
    missing = missing_triggers(session.connection())
    for table, trigger in missing:
        findings.append(Finding(table, None, f"trigger {trigger} is missing: {table} is unguarded"))
    report.checked["triggers_missing"] = len(missing)
    return report


def audit(ledger: Ledger, *, recompute: RecomputeFn | None = None) -> AuditReport:
    """Audit the ledger in one read-only transaction (module docstring); writes nothing.

    Runs still ``running`` whose lease expired are listed in ``expired_leases`` (``docket runs
    reap`` or the next writer marks them abandoned and books their cost)."""
    with ledger.read_session() as session:
        report = audit_session(session, recompute=recompute)
        running = session.scalars(select(RunRow).where(RunRow.status == "running"))
        report.expired_leases = [run.id for run in running if lease_expired(run)]
    return report
