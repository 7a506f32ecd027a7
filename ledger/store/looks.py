"""Looks versus verdicts: a verdict row only when something changed, a look row otherwise.

Rule (the only place it is stated): ``docket verdict`` on a frozen version records a new verdict
row when there is no earlier verdict of that version, or when the latest one differs in
``inputs_sha256`` or in the verdict itself (an engine change); otherwise the computation is
logged as a *look* (time, who, inputs sha256, the verdict it repeated) in the append-only
``verdict_looks`` table. :func:`history` lists both, oldest first.
"""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import protocols as store
from .models import VerdictLookRow, VerdictRow, utcnow

__all__ = ["history", "latest_verdict", "record_look", "who"]


def who() -> str:
    """``user@host`` of the process taking the look (best effort)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:200]


def latest_verdict(session: Session, protocol_pk: int) -> VerdictRow | None:
    """The most recent verdict row of protocol version ``protocol_pk``."""
    return session.scalars(
        select(VerdictRow)
        .where(VerdictRow.protocol_pk == protocol_pk)
        .order_by(VerdictRow.id.desc())
        .limit(1)
    ).first()


def record_look(session: Session, verdict_row: VerdictRow) -> VerdictLookRow:
    """Log a look that repeated ``verdict_row`` (same inputs, same verdict)."""
    look = VerdictLookRow(
        protocol_pk=verdict_row.protocol_pk,
        verdict_id=verdict_row.id,
        at=utcnow(),
        inputs_sha256=verdict_row.inputs_sha256,
        verdict=verdict_row.verdict,
        who=who(),
    )
    session.add(look)
    session.flush()
    return look


def history(session: Session, protocol_id: str) -> list[dict[str, Any]]:
    """Every verdict and every look of every version of ``protocol_id``, oldest first."""
    versions = {row.id: row for row in store.chain(session, protocol_id)}
    if not versions:
        store.latest(session, protocol_id)  # unknown id: the error names the known ones
    events: list[dict[str, Any]] = []
    for v in session.scalars(select(VerdictRow).where(VerdictRow.protocol_pk.in_(versions))):
        events.append(
            {
                "kind": "verdict",
                "at": v.computed_at.isoformat(),
                "version": versions[v.protocol_pk].version,
                "verdict_id": v.id,
                "verdict": v.verdict,
                "inputs_sha256": v.inputs_sha256,
                "runs": json.loads(v.run_ids_json or "[]"),
            }
        )
    looks = session.scalars(select(VerdictLookRow).where(VerdictLookRow.protocol_pk.in_(versions)))
    for look in looks:
        events.append(
            {
                "kind": "look",
                "at": look.at.isoformat(),
                "version": versions[look.protocol_pk].version,
                "verdict_id": look.verdict_id,
                "verdict": look.verdict,
                "inputs_sha256": look.inputs_sha256,
                "who": look.who,
            }
        )
    events.sort(key=lambda e: (e["at"], e["kind"] == "look", e["verdict_id"]))
    return events
