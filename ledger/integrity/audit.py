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
   offers neither, that is a finding too: an audit never calls unverified data clean. Each
   verdict is also re-derived (:func:`ledger.verdicts.rederive_verdict`: the verdict engine on
   the runs the verdict pinned, as of its ``computed_at``) and the stored ``verdict`` column and
   ``details_json`` (overall and per hypothesis) compared with the result, so a forged copy with
   another verdict or an edited row is found; ``run_ids_json`` must list the pinned runs, and each
   pinned run must be bound to the verdict's protocol sha256 and have succeeded. The
   re-derivation runs with the bootstrap engine version the verdict recorded
   (``details_json["engine"]``, absent = 1), which must be the version its protocol was frozen
   with (:func:`ledger.verdicts.engine_version`: a verdict computed with another engine picked
   its engine); every recorded CI bound and point (``delta``, ``ci_low``, ``ci_high``, ``value``,
   ``difference``, per hypothesis and per group row) must be re-derived bit for bit.
5. Frozen means sign-checked: a ``frozen`` protocol row needs ``frozen_at`` and a latest
   sign-check that passed for its sha256 (the freeze guard of revision 0004 refuses new ones).
6. Money: no ``costs.usd_micros`` or ``runs.cost_micros`` is negative, and each run's
   ``cost_micros`` equals the sum of its ``costs`` rows.
7. Ingest files: a ``source='ingest'`` run records its file's path (``config_json["file"]``) and
   sha256 (``input_sha256``). An absolute path still present is re-hashed (a finding if it
   changed); a file that is gone, or a relative path (the directory it was relative to is not
   recorded), is a note, not a finding.
8. The Merkle log (:func:`.leaf_audit.leaf_findings`): every record's leaf recomputed from its
   current rows and compared with the stored leaf, records without a leaf, leaves without a
   record, and every stored node recomputed from the leaf hashes.
9. Triggers (:func:`migrations.triggers.trigger_problems`): every append-only / frozen-row /
   guard trigger exists, is enabled (PostgreSQL ``tgenabled``) and has the definition the
   migrations created (SQLite: the stored ``CREATE TRIGGER`` text; PostgreSQL: timing, events,
   function and the function's body).

10. Stored columns (:func:`ledger.store.run_columns.column_problems`): each run's
   ``run_columns`` (what verdicts read) must be exactly what its observation rows give: an
   edited, truncated, missing or extra chunk is a finding. The verdict checks of item 4 read the
   rows themselves, so an edit of either the rows or the columns is found.

11. Kept heads (``against``, ``docket audit --against STH.json``): each signed tree head kept
   outside the ledger is checked by :func:`.consistency.check_heads` (signed by the trusted
   key, not truncated, not rewritten); a failing head is a ``log`` finding naming the file and
   the leaf range the first bad leaf is in. ``AuditReport.against`` lists every head's outcome.

The audit writes nothing (one read-only transaction, :meth:`Ledger.read_session`), so it runs on a
read-only replica or role. Runs whose lease expired are listed, not reaped: ``docket runs reap``
(or the next ``run``/``ingest``) marks them abandoned and books their cost.

Limits (by construction of hash chains and of the log): deleting the *last* rows of a chain or
of the log, or rewriting a row and re-hashing everything after it, is not detectable from the
ledger alone; keep signed tree heads (``docket log head --out``) somewhere else and audit
``--against`` them to detect that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from docketml.migrations.triggers import trigger_problems
from docketml.protocols.canonical import protocol_sha256
from docketml.protocols.errors import ProtocolErrors
from docketml.protocols.loader import load_protocol_text

from ..billing.costs import verify_cost_chain
from ..billing.money import format_usd
from ..store.db import Ledger
from ..store.journal import entry_of, verify_journal_chain
from ..store.models import (
    CostRow,
    JournalEntryRow,
    ProtocolRow,
    RunColumnsRow,
    RunRow,
    SignCheckRow,
    VerdictRow,
)
from ..store.run_columns import column_problems
from ..store.runs import lease_expired
from .leaf_audit import leaf_findings

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
    notes: list[str] = field(default_factory=list)  # what could not be checked (not findings)
    against: list[dict[str, Any]] = field(default_factory=list)  # kept heads checked (item 11)

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
            "notes": self.notes,
            "against": self.against,
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
    ids = _verdict_ids(session)
    if ids and recompute is None:
        from ..verdicts import recompute_inputs_sha256  # imported only when needed

        recompute = recompute_inputs_sha256
    for row in _verdict_rows(session, ids):
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
    return len(ids)


def _verdict_ids(session: Session) -> list[int]:
    return list(session.scalars(select(VerdictRow.id).order_by(VerdictRow.id)))


def _verdict_rows(session: Session, ids: list[int]) -> Iterator[VerdictRow]:
    """The verdict rows ``ids``, one at a time (each dropped from the session after use: the
    audit's memory does not grow with the number of verdicts; their inputs stream too,
    :func:`docketml.ledger.verdicts.read_sources`)."""
    for vid in ids:
        row = session.get(VerdictRow, vid)
        if row is None:
            continue
        yield row
        session.expunge(row)


_REDERIVED_NUMBERS = ("delta", "ci_low", "ci_high", "value", "difference")


def _numbers(hyp: Any) -> dict[str, float]:
    """The recorded CI bounds and points of one hypothesis result, keyed ``field`` or
    ``groups[i].field`` (None values and non-dicts skipped)."""
    if not isinstance(hyp, dict):
        return {}
    out = {k: hyp[k] for k in _REDERIVED_NUMBERS if isinstance(hyp.get(k), int | float)}
    for i, r in enumerate(hyp.get("groups") or []):
        if isinstance(r, dict):
            for k in _REDERIVED_NUMBERS:
                if isinstance(r.get(k), int | float):
                    out[f"groups[{i}].{k}"] = r[k]
    return out


def _number_findings(details: dict[str, Any], again: dict[str, Any]) -> list[str]:
    """Recorded numbers the re-derivation does not reproduce exactly (first 3 named)."""
    stored = {h.get("id"): h for h in details.get("hypotheses", []) if isinstance(h, dict)}
    diffs = []
    for h in again.get("hypotheses_full", []):
        mine, theirs = _numbers(h), _numbers(stored.get(h["id"]))
        for key in sorted(set(mine) & set(theirs)):
            if float(mine[key]) != float(theirs[key]):
                diffs.append(f"{h['id']} {key} {theirs[key]!r} -> {mine[key]!r}")
    if not diffs:
        return []
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    return [
        f"recorded numbers are not re-derived bit for bit under engine {again['engine']}: "
        + "; ".join(diffs[:3])
        + more
    ]


def _verdict_findings(session: Session, row: VerdictRow) -> list[str]:
    """What differs between the stored verdict ``row`` and its re-derivation."""
    from ..verdicts import rederive_verdict  # imported only when needed

    try:
        again = rederive_verdict(session, row)
    except Exception as exc:  # a verdict that cannot be re-derived is a finding
        return [f"verdict cannot be re-derived: {type(exc).__name__}: {exc}"]
    out: list[str] = []
    details = json.loads(row.details_json)
    sources = details["inputs"]["sources"]
    pinned = sorted({int(i) for ids in sources.values() for i in ids})
    by_id = {r.id: r for r in session.scalars(select(RunRow).where(RunRow.id.in_(pinned)))}
    for rid in pinned:
        run = by_id.get(rid)
        if run is None:
            out.append(f"pinned run {rid} does not exist")
        elif run.protocol_sha256 != row.protocol_sha256 or run.status != "succeeded":
            out.append(
                f"pinned run {rid} is {run.status}, bound to {run.protocol_sha256[:12]}: a "
                f"verdict reads only succeeded runs of {row.protocol_sha256[:12]}"
            )
    try:
        listed = sorted(int(i) for i in json.loads(row.run_ids_json))
    except (ValueError, TypeError):
        listed = None
    if listed != again["run_ids"]:
        out.append(f"run_ids_json {row.run_ids_json} does not list the pinned runs {pinned}")
    why = f"from the runs it pinned ({', '.join(map(str, pinned)) or 'none'})"
    if row.verdict != again["verdict"]:
        out.append(
            f"verdict column says {row.verdict}, the verdict engine re-derives "
            f"{again['verdict']} {why}: forged or edited"
        )
    if details.get("verdict") != again["verdict"]:
        out.append(
            f"details_json verdict {details.get('verdict')!r}, re-derived {again['verdict']} {why}"
        )
    stored = {
        h.get("id"): h.get("verdict") for h in details.get("hypotheses", []) if isinstance(h, dict)
    }
    changed = [
        f"{h} {stored.get(h)!r} -> {v}"
        for h, v in again["hypotheses"].items()
        if stored.get(h) != v
    ]
    if changed:
        out.append("details_json hypotheses differ from the re-derivation: " + "; ".join(changed))
    if again["engine"] != again["frozen_engine"]:
        out.append(
            f"verdict ran with bootstrap engine {again['engine']} but its protocol was frozen "
            f"with engine {again['frozen_engine']}: a verdict's engine is fixed at freeze time"
        )
    out += _number_findings(details, again)
    return out


def _audit_rederived(session: Session, findings: list[Finding]) -> None:
    for row in _verdict_rows(session, _verdict_ids(session)):
        try:
            sources = json.loads(row.details_json)["inputs"]["sources"]
        except (ValueError, KeyError, TypeError):
            sources = None
        if not isinstance(sources, dict):
            findings.append(
                Finding("verdicts", row.id, "details_json names no inputs: cannot be re-derived")
            )
            continue
        for problem in _verdict_findings(session, row):
            findings.append(Finding("verdicts", row.id, problem))


def _audit_frozen(session: Session, findings: list[Finding]) -> None:
    """Frozen means "passed its sign-check and was frozen" (module docstring, item 5)."""
    latest: dict[int, SignCheckRow] = {}
    for check in session.scalars(select(SignCheckRow).order_by(SignCheckRow.id)):
        latest[check.protocol_pk] = check
    frozen = session.scalars(
        select(ProtocolRow).where(ProtocolRow.status == "frozen").order_by(ProtocolRow.id)
    )
    for row in frozen:
        name = f"{row.id} ({row.protocol_id} v{row.version})"
        check = latest.get(row.id)
        if check is None:
            problem = "is frozen without a sign-check"
        elif not check.passed:
            problem = f"is frozen but its latest sign-check (row {check.id}) failed"
        elif check.protocol_sha256 != row.sha256:
            problem = (
                f"is frozen but its latest sign-check (row {check.id}) checked sha256 "
                f"{check.protocol_sha256[:12]}, not {row.sha256[:12]}"
            )
        elif row.frozen_at is None:
            problem = "is frozen without frozen_at (no freeze record)"
        else:
            continue
        findings.append(Finding("protocols", name, problem))


def _audit_columns(session: Session, findings: list[Finding]) -> int:
    """Check 10: every run's stored columns against its rows; returns the runs checked."""
    ids = session.scalars(select(RunColumnsRow.run_id).distinct().order_by(RunColumnsRow.run_id))
    checked = 0
    for run_id in ids.all():
        checked += 1
        for problem in column_problems(session, run_id):
            findings.append(
                Finding(
                    "run_columns", run_id, f"{problem}: verdicts read these columns, not the rows"
                )
            )
    return checked


def _audit_money(session: Session, findings: list[Finding]) -> int:
    """No negative amounts; ``runs.cost_micros`` = the sum of the run's ``costs`` rows."""
    for seq, micros in session.execute(
        select(CostRow.seq, CostRow.usd_micros).where(CostRow.usd_micros < 0).order_by(CostRow.seq)
    ):
        findings.append(
            Finding(
                "costs",
                seq,
                f"negative cost {format_usd(int(micros), precise=True)}: a cost is >= 0",
            )
        )
    sums = dict(
        session.execute(
            select(CostRow.run_id, func.sum(CostRow.usd_micros))
            .where(CostRow.run_id.is_not(None))
            .group_by(CostRow.run_id)
        ).all()
    )
    runs = session.execute(select(RunRow.id, RunRow.cost_micros).order_by(RunRow.id)).all()
    for run_id, micros in runs:
        booked = int(sums.get(run_id) or 0)
        if int(micros) < 0:
            findings.append(
                Finding(
                    "runs",
                    run_id,
                    f"negative cost_micros {format_usd(int(micros), precise=True)}",
                )
            )
        if int(micros) != booked:
            findings.append(
                Finding(
                    "runs",
                    run_id,
                    f"cost_micros {format_usd(int(micros), precise=True)}, but its costs rows "
                    f"add up to {format_usd(booked, precise=True)}",
                )
            )
    return len(runs)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _audit_ingest_files(session: Session, findings: list[Finding], notes: list[str]) -> int:
    """Re-hash each ingested file still at its recorded absolute path (item 7)."""
    runs = session.execute(
        select(RunRow.id, RunRow.config_json, RunRow.input_sha256)
        .where(RunRow.source == "ingest")
        .order_by(RunRow.id)
    ).all()
    checked = 0
    for run_id, config_json, stored in runs:
        try:
            config = json.loads(config_json)
            recorded = config.get("path") or config.get("file")
        except (ValueError, AttributeError):
            recorded = None
        if not isinstance(recorded, str) or not stored:
            notes.append(f"run {run_id}: ingest recorded no file path or sha256; not re-checked")
            continue
        path = Path(recorded)
        if not path.is_absolute():
            notes.append(
                f"run {run_id}: ingested file {recorded!r} was recorded relative to an unknown "
                "directory; not re-checked"
            )
            continue
        try:
            now = _file_sha256(path)
        except FileNotFoundError:
            notes.append(f"run {run_id}: ingested file {recorded} is gone; not re-checked")
            continue
        except OSError as exc:
            notes.append(f"run {run_id}: ingested file {recorded} cannot be read ({exc.strerror})")
            continue
        checked += 1
        if now != stored:
            findings.append(
                Finding(
                    "runs",
                    run_id,
                    f"ingested file {recorded} now hashes to {now[:12]}, the run recorded "
                    f"{stored[:12]}: the file changed after ingest",
                )
            )
    return checked


def _audit_kept_heads(
    session: Session,
    report: AuditReport,
    against: Sequence[tuple[str, dict[str, Any]]],
    public_key: Ed25519PublicKey | None,
) -> None:
    """Item 9: every kept head against the log in ``session``."""
    from .consistency import check_heads

    if public_key is None:
        raise ValueError("checking kept heads needs the trusted public key")
    for check in check_heads(session, against, public_key):
        report.against.append(check.as_dict())
        if not check.ok:
            assert check.problem is not None
            report.findings.append(Finding("log", check.source, check.problem))
    report.checked["kept_heads"] = len(against)


def audit_session(
    session: Session,
    *,
    recompute: RecomputeFn | None = None,
    against: Sequence[tuple[str, dict[str, Any]]] = (),
    public_key: Ed25519PublicKey | None = None,
) -> AuditReport:
    """Run every check (module docstring) in ``session``; nothing is written. ``against``:
    ``(source, sth)`` kept heads, checked with the trusted ``public_key`` (item 11)."""
    report = AuditReport()
    findings = report.findings
    report.checked["protocols"] = _audit_protocols(session, findings)
    report.checked["journal_entries"], report.heads["journal_entries"] = _audit_journal(
        session, findings
    )
    report.checked["costs"], report.heads["costs"] = _audit_costs(session, findings)
    report.checked["verdicts"] = _audit_verdicts(session, findings, recompute)
    _audit_rederived(session, findings)
    _audit_frozen(session, findings)
    report.checked["runs"] = _audit_money(session, findings)
    report.checked["run_columns"] = _audit_columns(session, findings)
    report.checked["ingest_files"] = _audit_ingest_files(session, findings, report.notes)
    log = leaf_findings(session)
    findings.extend(Finding(table, row, problem) for table, row, problem in log.problems)
    report.checked["log_leaves"], report.heads["log"] = log.size, log.root
    problems = trigger_problems(session.connection())
    for table, _trigger, problem in problems:
        findings.append(Finding(table, None, problem))
    missing = sum(1 for p in problems if " is missing: " in p[2])
    report.checked["triggers_missing"] = missing
    report.checked["triggers_altered"] = len(problems) - missing
    if against:
        _audit_kept_heads(session, report, against, public_key)
    return report


def audit(
    ledger: Ledger,
    *,
    recompute: RecomputeFn | None = None,
    against: Sequence[tuple[str, dict[str, Any]]] = (),
    public_key: Ed25519PublicKey | None = None,
) -> AuditReport:
    """Audit the ledger in one read-only transaction (module docstring); writes nothing.

    Runs still ``running`` whose lease expired are listed in ``expired_leases`` (``docket runs
    reap`` or the next writer marks them abandoned and books their cost)."""
    with ledger.read_session() as session:
        report = audit_session(session, recompute=recompute, against=against, public_key=public_key)
        running = session.scalars(select(RunRow).where(RunRow.status == "running"))
        report.expired_leases = [run.id for run in running if lease_expired(run)]
    return report
