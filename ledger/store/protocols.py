"""Registering, freezing and amending protocol versions in the ledger.

Contract:
- ``register``: a new protocol id becomes version 1 (status ``registered``). The same content again
  is a no-op; different content under an existing id is refused (use ``amend``).
- ``freeze``: the latest version becomes ``frozen`` (immutable, enforced by a trigger) once its
  sign-check passes; the sign-check result is stored either way.
- ``amend``: a new version with the same id, linked to its parent, with a reason and a time; it
  must be frozen (and so sign-checked) before runs and verdicts use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from docketml.protocols.loader import LoadedProtocol, load_protocol_text
from docketml.protocols.schema import Protocol

from ..errors import CheckFailed, UserError
from . import merkle_log
from .models import ProtocolRow, SignCheckRow, utcnow


@dataclass
class RegisterOutcome:
    row: ProtocolRow
    created: bool


def _versions(session: Session, protocol_id: str) -> list[ProtocolRow]:
    return list(
        session.scalars(
            select(ProtocolRow)
            .where(ProtocolRow.protocol_id == protocol_id)
            .order_by(ProtocolRow.version)
        )
    )


def known_ids(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(ProtocolRow.protocol_id).distinct().order_by(ProtocolRow.protocol_id)
        )
    )


def latest(session: Session, protocol_id: str) -> ProtocolRow:
    """The latest version of ``protocol_id``; :class:`UserError` naming known ids if unknown."""
    versions = _versions(session, protocol_id)
    if not versions:
        ids = known_ids(session)
        hint = (
            f"known: {', '.join(ids)}"
            if ids
            else "the ledger has no protocols yet (docket protocol register FILE)"
        )
        raise UserError(f"unknown protocol {protocol_id!r}; {hint}")
    return versions[-1]


def latest_frozen(session: Session, protocol_id: str) -> ProtocolRow:
    """The latest frozen version; :class:`CheckFailed` if the protocol was never frozen."""
    versions = [v for v in _versions(session, protocol_id) if v.status == "frozen"]
    if not versions:
        latest(session, protocol_id)  # raises for unknown ids
        raise CheckFailed(
            f"protocol {protocol_id!r} is not frozen: run `docket protocol freeze {protocol_id}` "
            "(it sign-checks first)"
        )
    return versions[-1]


def chain(session: Session, protocol_id: str) -> list[ProtocolRow]:
    """Every version, oldest first (the amendment chain)."""
    return _versions(session, protocol_id)


def parse_row(row: ProtocolRow) -> Protocol:
    """The validated protocol stored in ``row`` (re-validated from its YAML)."""
    return load_protocol_text(
        row.yaml_text, f"ledger:{row.protocol_id}@v{row.version}", admission=False
    ).protocol


def register(
    session: Session, loaded: LoadedProtocol, source_path: str | None = None
) -> RegisterOutcome:
    """Register ``loaded`` as version 1, or return the existing identical version."""
    versions = _versions(session, loaded.protocol.id)
    for row in versions:
        if row.sha256 == loaded.sha256:
            return RegisterOutcome(row, created=False)
    if versions:
        last = versions[-1]
        raise UserError(
            f"protocol {loaded.protocol.id!r} is already registered (version {last.version}, "
            f"sha256 {last.sha256[:12]}, {last.status}) with different content; to change it use "
            f'`docket protocol amend {loaded.protocol.id} FILE --reason "..."`'
        )
    row = ProtocolRow(
        protocol_id=loaded.protocol.id,
        version=1,
        title=loaded.protocol.title,
        yaml_text=loaded.yaml_text,
        canonical_json=loaded.canonical,
        sha256=loaded.sha256,
        status="registered",
        registered_at=utcnow(),
        source_path=source_path,
    )
    session.add(row)
    session.flush()
    return RegisterOutcome(row, created=True)


def amend(
    session: Session,
    protocol_id: str,
    loaded: LoadedProtocol,
    reason: str,
    source_path: str | None = None,
) -> ProtocolRow:
    """Add a new version of ``protocol_id`` linked to the latest one."""
    if not reason or not reason.strip():
        raise UserError("--reason is required and must say why the protocol changes")
    parent = latest(session, protocol_id)
    if loaded.protocol.id != protocol_id:
        raise UserError(
            f"{loaded.source}: id is {loaded.protocol.id!r} but you are amending {protocol_id!r}; "
            "an amendment keeps the protocol id"
        )
    for row in _versions(session, protocol_id):
        if row.sha256 == loaded.sha256:
            raise UserError(
                f"{loaded.source}: identical to version {row.version} "
                f"(sha256 {row.sha256[:12]}); nothing to amend"
            )
    row = ProtocolRow(
        protocol_id=protocol_id,
        version=parent.version + 1,
        title=loaded.protocol.title,
        yaml_text=loaded.yaml_text,
        canonical_json=loaded.canonical,
        sha256=loaded.sha256,
        status="registered",
        registered_at=utcnow(),
        parent_id=parent.id,
        amendment_reason=reason.strip(),
        source_path=source_path,
    )
    session.add(row)
    session.flush()
    return row


SignCheckFn = Callable[[Protocol], dict[str, Any]]


def store_sign_check(session: Session, row: ProtocolRow, report: dict[str, Any]) -> SignCheckRow:
    check = SignCheckRow(
        protocol_pk=row.id,
        protocol_sha256=row.sha256,
        ran_at=utcnow(),
        passed=bool(report["passed"]),
        report_json=json.dumps(report, sort_keys=True, default=str),
    )
    session.add(check)
    session.flush()
    merkle_log.queue_leaf(session, "signcheck", check.id, merkle_log.signcheck_leaf(check))
    return check


def latest_sign_check(session: Session, row: ProtocolRow) -> SignCheckRow | None:
    return session.scalars(
        select(SignCheckRow)
        .where(SignCheckRow.protocol_pk == row.id)
        .order_by(SignCheckRow.id.desc())
        .limit(1)
    ).first()


def freeze(
    session: Session, protocol_id: str, sign_check: SignCheckFn
) -> tuple[ProtocolRow, dict[str, Any], bool]:
    """Sign-check and freeze the latest version. Returns (row, report, newly_frozen).

    The sign-check report is stored whether it passes or not; a failing report leaves the row
    registered and the caller raises :class:`CheckFailed` after committing the report.
    """
    row = latest(session, protocol_id)
    if row.status == "frozen":
        check = latest_sign_check(session, row)
        report = json.loads(check.report_json) if check else {"passed": True, "checks": []}
        return row, report, False
    report = sign_check(parse_row(row))
    store_sign_check(session, row, report)
    if not report["passed"]:
        return row, report, False
    row.status = "frozen"
    row.frozen_at = utcnow()
    session.flush()
    merkle_log.queue_leaf(session, "protocol", row.id, merkle_log.protocol_leaf(session, row))
    return row, report, True


def describe(session: Session, row: ProtocolRow) -> dict[str, Any]:
    """JSON-able summary of one version."""
    check = latest_sign_check(session, row)
    return {
        "id": row.protocol_id,
        "version": row.version,
        "title": row.title,
        "sha256": row.sha256,
        "status": row.status,
        "registered_at": row.registered_at.isoformat() if row.registered_at else None,
        "frozen_at": row.frozen_at.isoformat() if row.frozen_at else None,
        "parent_version": _parent_version(session, row),
        "amendment_reason": row.amendment_reason,
        "sign_check": None if check is None else _sign_check_summary(check),
    }


def _sign_check_summary(check: SignCheckRow) -> dict[str, Any]:
    """passed / ran_at, and from the report the bootstrap engine version the protocol freezes
    with (absent = 1: checked before engine versions) and the null PROVEN rates (None when the
    report predates them)."""
    report = json.loads(check.report_json)
    return {
        "passed": check.passed,
        "ran_at": check.ran_at.isoformat(),
        "engine": report.get("engine", 1),
        "null_proven": report.get("null_proven"),
    }


def _parent_version(session: Session, row: ProtocolRow) -> int | None:
    if row.parent_id is None:
        return None
    return session.scalar(select(ProtocolRow.version).where(ProtocolRow.id == row.parent_id))


def list_protocols(session: Session) -> list[dict[str, Any]]:
    out = []
    for pid in known_ids(session):
        versions = _versions(session, pid)
        last = versions[-1]
        frozen = [v for v in versions if v.status == "frozen"]
        out.append(
            {
                "id": pid,
                "title": last.title,
                "versions": len(versions),
                "latest_version": last.version,
                "latest_status": last.status,
                "latest_sha256": last.sha256,
                "frozen_version": frozen[-1].version if frozen else None,
                "frozen_sha256": frozen[-1].sha256 if frozen else None,
            }
        )
    return out


def version_row(session: Session, protocol_id: str, version: int) -> ProtocolRow:
    """Version ``version`` of ``protocol_id``; :class:`UserError` naming the versions there are."""
    versions = chain(session, protocol_id)
    if not versions:
        latest(session, protocol_id)  # raises a UserError naming known ids
    for v in versions:
        if v.version == version:
            return v
    have = ", ".join(str(v.version) for v in versions)
    raise UserError(f"{protocol_id} has no version {version}; versions: {have}")


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """A list of mappings that all carry a unique ``name`` (jobs) or ``id`` (hypotheses), keyed
    by it; None for any other list (compared by index)."""
    for key in ("name", "id"):
        if items and all(isinstance(i, dict) and isinstance(i.get(key), str) for i in items):
            names = [i[key] for i in items]
            if len(set(names)) == len(names):
                return dict(zip(names, items, strict=True))
    return None


def json_diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Every leaf difference between two JSON values, in path order: ``{"path", "change"
    (added | removed | changed), "old", "new"}``. Paths are dotted (``decision_rules.r1.bound``);
    list elements are ``[i]``, or ``[name]`` for lists of mappings with unique ``name``/``id``
    (``jobs[probe_v7].params.mc_weight``), so inserting a job does not shift every later one."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[dict[str, Any]] = []
        for k in sorted(set(old) | set(new)):
            sub = f"{path}.{k}" if path else str(k)
            if k not in new:
                out.append({"path": sub, "change": "removed", "old": old[k], "new": None})
            elif k not in old:
                out.append({"path": sub, "change": "added", "old": None, "new": new[k]})
            else:
                out += json_diff(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        ko, kn = _keyed(old), _keyed(new)
        if ko is not None and kn is not None:
            out = []
            for k in list(ko) + [k for k in kn if k not in ko]:
                sub = f"{path}[{k}]"
                if k not in kn:
                    out.append({"path": sub, "change": "removed", "old": ko[k], "new": None})
                elif k not in ko:
                    out.append({"path": sub, "change": "added", "old": None, "new": kn[k]})
                else:
                    out += json_diff(ko[k], kn[k], sub)
            return out
        out = []
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(new):
                out.append({"path": sub, "change": "removed", "old": old[i], "new": None})
            elif i >= len(old):
                out.append({"path": sub, "change": "added", "old": None, "new": new[i]})
            else:
                out += json_diff(old[i], new[i], sub)
        return out
    if old == new and type(old) is type(new):
        return []
    return [{"path": path, "change": "changed", "old": old, "new": new}]


def diff_versions(session: Session, protocol_id: str, a: int, b: int) -> dict[str, Any]:
    """Field-by-field differences from version ``a`` to version ``b`` of ``protocol_id``, on
    their canonical JSON (so formatting, comments and written-out defaults never show):
    ``{"protocol", "from", "to", "from_sha256", "to_sha256", "amendment_reason" (of b),
    "changes": json_diff(...)}``."""
    ra, rb = version_row(session, protocol_id, a), version_row(session, protocol_id, b)
    return {
        "protocol": protocol_id,
        "from": a,
        "to": b,
        "from_sha256": ra.sha256,
        "to_sha256": rb.sha256,
        "amendment_reason": rb.amendment_reason,
        "changes": json_diff(json.loads(ra.canonical_json), json.loads(rb.canonical_json)),
    }
