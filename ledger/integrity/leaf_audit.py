"""The audit of the stored Merkle log: every record's leaf, every leaf's record, every node.

:func:`leaf_findings` (called by :mod:`.audit`) checks, in the caller's (read-only) session:

1. ``log_leaves`` positions run 0..n-1 with no gap; each ``leaf_hash`` is SHA-256(0x00 || leaf);
   each leaf is the canonical JSON of a body whose ``kind`` is the row's ``kind``.
2. Each record (frozen protocol version with ``frozen_at``, sign-check, run in a final status,
   verdict, cost row, journal row) has exactly the leaf its *current* rows give
   (``ledger.store.merkle_log`` builders, the same as at write time): a difference names the
   leaf position, the record and the fields that differ. A record without a leaf and a leaf
   whose record is gone are findings too. Since a run's leaf carries the sha256 of its
   observations, metrics and texts, an ``UPDATE`` of any of them is found, whether or not a
   verdict used them; a frozen protocol rewritten with its sha256 recomputed no longer matches
   its leaf.
3. Every complete perfect subtree node is recomputed from the stored leaf hashes and compared
   with ``log_nodes`` (missing, different, or a node beyond the leaves).
4. Every verdict's recorded head (``details_json["log_head"]``: ``tree_size``, ``root_hash``;
   :mod:`.heads`) is a head of today's log: ``MTH`` of the first ``tree_size`` stored leaf hashes
   equals the recorded root (one pass over the leaves with a :class:`.merkle.CompactRange`). A
   verdict is a kept head inside the ledger: a rewrite or truncation before it is found unless
   the forger also rewrote every later verdict's details and leaf.

What it cannot see on its own: the leaf table, the nodes and every verdict rewritten together,
consistently (or its tail truncated after the last verdict). That is what a signed tree head kept
outside the ledger is for (``docket audit --against``, ``docket log consistency``).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store import merkle_log
from ..store.models import (
    CostRow,
    JournalEntryRow,
    LeafRow,
    NodeRow,
    ProtocolRow,
    RunRow,
    SignCheckRow,
    VerdictRow,
)
from ..store.runs import FINAL_STATUSES
from . import merkle
from .leaves import leaf_body

__all__ = ["LeafAudit", "expected_leaves", "leaf_findings"]

Problem = tuple[str, int | str | None, str]  # (table, row, problem), as audit.Finding
TABLES = {
    "protocol": "protocols",
    "signcheck": "sign_checks",
    "run": "runs",
    "verdict": "verdicts",
    "cost": "costs",
    "journal": "journal_entries",
}
MAX_NODE_FINDINGS = 5


class LeafAudit:
    """Result of :func:`leaf_findings`: ``problems``, ``size`` (stored leaves) and ``root``
    (hex ``MTH`` recomputed from the stored leaf hashes)."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.size = 0
        self.root = merkle.EMPTY_ROOT.hex()


def expected_leaves(
    session: Session,
) -> tuple[dict[tuple[str, int], bytes | Exception], dict[tuple[str, int], int | str]]:
    """The leaf each record should have, from its current rows: ``{(kind, record id): leaf
    bytes}`` (an exception when the row cannot give one), and how findings name each record
    (``{(kind, id): row label}``: ``id (protocol vN)`` for protocols, ``seq`` for the chains)."""
    out: dict[tuple[str, int], bytes | Exception] = {}
    names: dict[tuple[str, int], int | str] = {}

    def put(kind: str, rid: int, build: Any, name: int | str | None = None) -> None:
        try:
            out[(kind, rid)] = build()
        except Exception as exc:  # an edited row that no longer builds a leaf is a finding
            out[(kind, rid)] = exc
        names[(kind, rid)] = rid if name is None else name

    frozen = select(ProtocolRow).where(
        ProtocolRow.status == "frozen", ProtocolRow.frozen_at.is_not(None)
    )
    for p in session.scalars(frozen.order_by(ProtocolRow.id)):
        put("protocol", p.id, lambda p=p: merkle_log.protocol_leaf(session, p),
            f"{p.id} ({p.protocol_id} v{p.version})")  # fmt: skip
    for s in session.scalars(select(SignCheckRow).order_by(SignCheckRow.id)):
        put("signcheck", s.id, lambda s=s: merkle_log.signcheck_leaf(s))
    runs = select(RunRow).where(RunRow.status.in_(FINAL_STATUSES)).order_by(RunRow.id)
    for r in session.scalars(runs):
        put("run", r.id, lambda r=r: merkle_log.run_leaf_of(session, r))
    for v in session.scalars(select(VerdictRow).order_by(VerdictRow.id)):
        put("verdict", v.id, lambda v=v: merkle_log.verdict_leaf(v))
    for kind, model in (("cost", CostRow), ("journal", JournalEntryRow)):
        for c in session.scalars(select(model).order_by(model.seq)):
            put(kind, c.id, lambda c=c, kind=kind: merkle_log.chain_leaf(kind, c), c.seq)
    return out, names


def _differences(stored: bytes, now: bytes) -> str:
    try:
        a, b = json.loads(stored), json.loads(now)
    except ValueError:
        return "the stored leaf is not JSON"
    diffs = [
        f"{k}: stored {json.dumps(a.get(k))}, now {json.dumps(b.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    return "; ".join(diffs[:4]) or "bytes differ"


def _check_leaves(session: Session, audit: LeafAudit) -> list[bytes]:
    """Checks 1 and 2; returns the stored leaf hashes by position."""
    problems = audit.problems
    expected, names = expected_leaves(session)
    seen: set[tuple[str, int]] = set()
    hashes: list[bytes] = []
    rows = session.execute(
        select(LeafRow.position, LeafRow.kind, LeafRow.record_id, LeafRow.leaf, LeafRow.leaf_hash)
        .order_by(LeafRow.position)
    )  # fmt: skip
    for position, kind, rid, leaf, stored_hash in rows:

        def add(problem: str, position: int = position) -> None:
            problems.append(("log_leaves", position, problem))

        if position != len(hashes):
            add(
                f"positions jump from {len(hashes) - 1} to {position}: leaves "
                f"{len(hashes)}..{position - 1} are missing (deleted from the log)"
            )
        raw = leaf.encode("ascii", "replace")
        try:
            hashes.append(bytes.fromhex(stored_hash))
        except ValueError:
            hashes.append(merkle.leaf_hash(raw))
        if merkle.leaf_hash(raw).hex() != stored_hash:
            add(f"leaf_hash {stored_hash[:12]} is not the hash of the stored leaf bytes")
        try:
            body_kind = leaf_body(raw).get("kind")
        except ValueError:
            body_kind = None
            add("the stored leaf is not the canonical JSON of a leaf body")
        if body_kind is not None and body_kind != kind:
            add(f"kind column {kind!r}, the leaf says {body_kind!r}")
        key = (kind, int(rid))
        table = TABLES.get(kind, kind)
        if key in seen:
            add(f"a second leaf for {table} row {rid}")
            continue
        seen.add(key)
        now = expected.get(key)
        if now is None:
            add(
                f"leaf of {table} row {rid}, but that record does not exist (or is no longer "
                "frozen / completed): the record was deleted or changed"
            )
        elif isinstance(now, Exception):
            add(f"{table} row {names[key]} no longer gives a leaf: {type(now).__name__}: {now}")
        elif now != raw:
            add(
                f"the {kind} leaf of {table} row {names[key]} differs from that record now "
                f"({_differences(raw, now)}): the record was changed after it was logged"
            )
    for key in expected.keys() - seen:
        kind, _ = key
        problems.append(
            (TABLES[kind], names[key], "has no leaf in the Merkle log (log_leaves)")
        )  # fmt: skip
    return hashes


def _check_nodes(session: Session, hashes: list[bytes], audit: LeafAudit) -> None:
    """Check 3: every complete node recomputed from the leaf hashes."""
    stored = {
        (int(level), int(idx)): h
        for level, idx, h in session.execute(select(NodeRow.level, NodeRow.idx, NodeRow.hash))
    }
    bad: list[str] = []
    level, below = 1, hashes
    while len(below) >= 2:
        above = [merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        for idx, h in enumerate(above):
            got = stored.pop((level, idx), None)
            if got is None:
                bad.append(f"node ({level}, {idx}) is missing")
            elif got != h.hex():
                bad.append(f"node ({level}, {idx}) is {got[:12]}, its leaves give {h.hex()[:12]}")
        level, below = level + 1, above
    for level, idx in sorted(stored):
        bad.append(f"node ({level}, {idx}) covers leaves beyond the {len(hashes)} stored")
    for problem in bad[:MAX_NODE_FINDINGS]:
        audit.problems.append(("log_nodes", None, problem))
    if len(bad) > MAX_NODE_FINDINGS:
        audit.problems.append(
            ("log_nodes", None, f"... and {len(bad) - MAX_NODE_FINDINGS} more node differences")
        )


def _check_verdict_heads(session: Session, hashes: list[bytes], audit: LeafAudit) -> None:
    """Check 4: each verdict's recorded head is a head of today's log."""
    heads: list[tuple[int, int, str]] = []
    for vid, details in session.execute(select(VerdictRow.id, VerdictRow.details_json)):
        try:
            head = json.loads(details).get("log_head")
        except (ValueError, AttributeError):
            continue  # the verdict's own checks report unreadable details
        if isinstance(head, dict):
            size, root = head.get("tree_size"), head.get("root_hash")
            if isinstance(size, int) and not isinstance(size, bool) and isinstance(root, str):
                heads.append((size, int(vid), root))
    heads.sort()
    acc = merkle.CompactRange()
    for size, vid, root in heads:
        if size > len(hashes):
            audit.problems.append(
                (
                    "verdicts",
                    vid,
                    f"recorded the log head of {size} leaves, but the log has {len(hashes)}: "
                    f"leaves {len(hashes)}..{size - 1} that it saw are gone (truncated)",
                )
            )
            continue
        while acc.size < size:
            acc.append(hashes[acc.size])
        if acc.root().hex() != root:
            audit.problems.append(
                (
                    "verdicts",
                    vid,
                    f"recorded the log head {root[:16]}... of {size} leaves; the first {size} "
                    f"leaves now hash to {acc.root().hex()[:16]}...: the log before this verdict "
                    "was rewritten",
                )
            )


def leaf_findings(session: Session) -> LeafAudit:
    """Run checks 1-4 (module docstring) in ``session``; writes nothing."""
    audit = LeafAudit()
    hashes = _check_leaves(session, audit)
    _check_nodes(session, hashes, audit)
    _check_verdict_heads(session, hashes, audit)
    audit.size = len(hashes)
    audit.root = merkle.root_hash(hashes).hex()
    return audit
