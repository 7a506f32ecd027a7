"""Merkle log: the append-only leaf table and the stored perfect-subtree nodes (issue 14).

- ``log_leaves``: ``position`` (0.., primary key, no gaps), ``kind`` and ``record_id`` (the id of
  the row the leaf stands for; unique together), ``leaf`` (canonical ASCII JSON) and
  ``leaf_hash`` (hex SHA-256(0x00 || leaf)).
- ``log_nodes``: ``(level, idx)`` -> ``hash`` (hex) of every complete perfect subtree of
  ``2**level`` leaves, ``level >= 1``.

Both are append-only (triggers, as the other append-only tables). Existing ledgers are
backfilled: one leaf per frozen protocol version, sign-check, run in a final status, verdict,
cost row and journal row, in the order of their record time (``frozen_at``, ``ran_at``,
``finished_at`` (else ``started_at``, else ``queued_at``), ``computed_at``, ``at``); ties by kind
in the order protocol, signcheck, run, verdict, cost, journal, then by row id.

The leaf bytes are copied here from ``ledger/integrity/leaves.py`` as of this revision (a
migration imports no live code); ``docket audit`` recomputes every leaf with the live builders
and would report any difference.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from docketml.migrations.triggers import create_triggers

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KINDS = ("protocol", "signcheck", "run", "verdict", "cost", "journal")
FINAL = ("succeeded", "failed", "abandoned", "silent_noop", "skipped")
TS = sa.DateTime(timezone=True)


def _canon(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _iso(at: datetime) -> str:
    if at.tzinfo is None:  # SQLite returns naive text; docket always wrote UTC
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _line(values: list[Any]) -> bytes:
    return json.dumps(values, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _i(v: Any) -> int | None:
    return None if v is None else int(v)


def _results(conn: sa.Connection, run_id: int) -> tuple[str, int, int, int]:
    digest = hashlib.sha256()
    counts = []
    queries = [
        ("SELECT grp, item, signal, value, label FROM observations WHERE run_id = :r ORDER BY id"),
        "SELECT name, value, ci_low, ci_high, step FROM metrics WHERE run_id = :r ORDER BY id",
        "SELECT item, text FROM run_texts WHERE run_id = :r ORDER BY id",
    ]
    for n, query in enumerate(queries):
        count = 0
        for row in conn.execute(sa.text(query), {"r": run_id}):
            if n == 0:
                values = ["o", str(row[0]), str(row[1]), str(row[2]), float(row[3]), _i(row[4])]
            elif n == 1:
                values = ["m", str(row[0]), float(row[1]), _f(row[2]), _f(row[3]), _i(row[4])]
            else:
                values = ["t", str(row[0]), str(row[1])]
            digest.update(_line(values))
            count += 1
        counts.append(count)
    return digest.hexdigest(), counts[0], counts[1], counts[2]


def _records(conn: sa.Connection) -> list[tuple[datetime, int, int, str, str]]:
    """``(time, kind rank, record id, kind, leaf)`` of every existing record."""
    out: list[tuple[datetime, int, int, str, str]] = []

    def add(at: datetime, kind: str, rid: int, body: dict[str, Any]) -> None:
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        out.append((at, KINDS.index(kind), rid, kind, _canon({"kind": kind, **body})))

    p = sa.table(
        "protocols",
        sa.column("id"),
        sa.column("protocol_id"),
        sa.column("version"),
        sa.column("sha256"),
        sa.column("status"),
        sa.column("frozen_at", TS),
        sa.column("parent_id"),
    )
    rows = conn.execute(sa.select(p)).all()
    shas = {r.id: r.sha256 for r in rows}
    for r in rows:
        if r.status == "frozen" and r.frozen_at is not None:
            parent = shas.get(r.parent_id) if r.parent_id is not None else None
            body = {
                "protocol_id": r.protocol_id,
                "version": r.version,
                "sha256": r.sha256,
                "parent_sha256": parent,
                "frozen_at": _iso(r.frozen_at),
            }
            add(r.frozen_at, "protocol", r.id, body)
    s = sa.table(
        "sign_checks",
        sa.column("id"),
        sa.column("protocol_sha256"),
        sa.column("ran_at", TS),
        sa.column("passed", sa.Boolean()),
        sa.column("report_json"),
    )
    for r in conn.execute(sa.select(s)):
        body = {
            "id": r.id,
            "protocol_sha256": r.protocol_sha256,
            "passed": bool(r.passed),
            "ran_at": _iso(r.ran_at),
            "report_sha256": _sha(r.report_json),
        }
        add(r.ran_at, "signcheck", r.id, body)
    runs = sa.table(
        "runs",
        sa.column("id"),
        sa.column("protocol_sha256"),
        sa.column("job"),
        sa.column("seed"),
        sa.column("status"),
        sa.column("queued_at", TS),
        sa.column("started_at", TS),
        sa.column("finished_at", TS),
    )
    for r in conn.execute(sa.select(runs).where(runs.c.status.in_(FINAL))):
        digest, n_obs, n_metrics, n_texts = _results(conn, r.id)
        body = {
            "id": r.id,
            "protocol_sha256": r.protocol_sha256,
            "job": r.job,
            "seed": _i(r.seed),
            "status": r.status,
            "observations": n_obs,
            "metrics": n_metrics,
            "texts": n_texts,
            "results_sha256": digest,
        }
        add(r.finished_at or r.started_at or r.queued_at, "run", r.id, body)
    v = sa.table(
        "verdicts",
        sa.column("id"),
        sa.column("protocol_sha256"),
        sa.column("computed_at", TS),
        sa.column("verdict"),
        sa.column("inputs_sha256"),
        sa.column("run_ids_json"),
        sa.column("details_json"),
    )
    for r in conn.execute(sa.select(v)):
        body = {
            "id": r.id,
            "protocol_sha256": r.protocol_sha256,
            "computed_at": _iso(r.computed_at),
            "verdict": r.verdict,
            "inputs_sha256": r.inputs_sha256,
            "run_ids": [int(i) for i in json.loads(r.run_ids_json)],
            "details_sha256": _sha(r.details_json),
        }
        add(r.computed_at, "verdict", r.id, body)
    for table, kind in (("costs", "cost"), ("journal_entries", "journal")):
        t = sa.table(
            table, sa.column("id"), sa.column("seq"), sa.column("at", TS), sa.column("hash")
        )
        for r in conn.execute(sa.select(t)):
            add(r.at, kind, r.id, {"seq": r.seq, "hash": r.hash})
    out.sort(key=lambda rec: rec[:3])
    return out


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def upgrade() -> None:
    op.create_table(
        "log_leaves",
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("leaf", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("kind", "record_id", name="uq_log_leaves_record"),
    )
    op.create_table(
        "log_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    conn = op.get_bind()
    leaves, nodes = [], []
    stack: list[tuple[int, bytes]] = []  # (level, hash) of the right edge's perfect subtrees
    for position, (_, _, rid, kind, leaf) in enumerate(_records(conn)):
        h = hashlib.sha256(b"\x00" + leaf.encode("ascii")).digest()
        leaves.append(
            {
                "position": position,
                "kind": kind,
                "record_id": rid,
                "leaf": leaf,
                "leaf_hash": h.hex(),
            }
        )
        level, idx = 0, position
        while stack and stack[-1][0] == level:
            h = _node(stack.pop()[1], h)
            level, idx = level + 1, idx >> 1
            nodes.append({"level": level, "idx": idx, "hash": h.hex()})
        stack.append((level, h))
    leaf_table = sa.table(
        "log_leaves",
        sa.column("position"),
        sa.column("kind"),
        sa.column("record_id"),
        sa.column("leaf"),
        sa.column("leaf_hash"),
    )
    node_table = sa.table("log_nodes", sa.column("level"), sa.column("idx"), sa.column("hash"))
    if leaves:
        conn.execute(sa.insert(leaf_table), leaves)
    if nodes:
        conn.execute(sa.insert(node_table), nodes)
    create_triggers(conn, ["log_leaves", "log_nodes"])


def downgrade() -> None:
    bind = op.get_bind()
    for table in ("log_nodes", "log_leaves"):
        for name in (f"docket_{table}_no_update", f"docket_{table}_no_delete"):
            if bind.dialect.name == "postgresql":
                op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            else:
                op.execute(f"DROP TRIGGER IF EXISTS {name}")
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS docket_{table}_no_truncate ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS docket_{table}_no_replace")
        op.drop_table(table)
