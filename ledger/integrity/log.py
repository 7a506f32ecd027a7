"""The ledger's Merkle log: the read API every command uses (heads, leaves, proofs).

The log is stored (revision 0005): ``log_leaves`` holds the leaves by ``position`` (0.., no
gaps) and ``log_nodes`` the hash of every complete perfect subtree (``ledger.store.merkle_log``
appends both in the transaction of the record). Every function here reads O(log n) rows:
roots and proofs are folds of stored subtree hashes (:mod:`.subtrees`), equal to RFC 9162
``MTH`` / ``PATH`` / ``PROOF`` over all leaf hashes. They read what is stored; whether the
stored leaves still match the records and the nodes the leaves is ``docket audit``'s job
(:mod:`.leaf_audit`). A node missing from the store raises :class:`IntegrityViolation` (exit 3).
Leaf bytes are defined in :mod:`.leaves`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, false, func, literal, or_, select, union_all
from sqlalchemy.orm import Session

from ..errors import IntegrityViolation
from ..store.db import Ledger
from ..store.models import LeafRow, NodeRow
from . import merkle, subtrees
from .leaves import leaf_body

__all__ = [
    "Leaf",
    "LogHead",
    "consistency_proof_between",
    "find_protocol_leaf",
    "inclusion_proof_at",
    "leaf_at",
    "log_head",
    "log_head_session",
    "log_size",
    "root_at",
    "stored_nodes",
]


@dataclass(frozen=True)
class LogHead:
    """``tree_size`` leaves whose RFC 9162 ``MTH`` is ``root_hash`` (32 bytes)."""

    tree_size: int
    root_hash: bytes


@dataclass(frozen=True)
class Leaf:
    """Leaf number ``index`` (0-based position in the log) and its canonical bytes."""

    index: int
    leaf: bytes

    @property
    def body(self) -> dict[str, Any]:
        return leaf_body(self.leaf)

    @property
    def hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf)


def stored_nodes(session: Session, wanted: Iterable[subtrees.Node]) -> dict[subtrees.Node, bytes]:
    """The stored hashes of ``wanted`` nodes (level 0: ``log_leaves.leaf_hash``); raises
    :class:`IntegrityViolation` naming the first one that is not stored."""
    wanted = set(wanted)
    found: dict[subtrees.Node, bytes] = {}
    leaves = [idx for level, idx in wanted if level == 0]
    by_level: dict[int, list[int]] = {}
    for level, idx in sorted(wanted):
        if level > 0:
            by_level.setdefault(level, []).append(idx)
    # one "level = L AND idx IN (...)" per level: SQLite scans the table for a row-value IN
    inner = or_(
        false(), *(and_(NodeRow.level == lv, NodeRow.idx.in_(ix)) for lv, ix in by_level.items())
    )
    query = union_all(
        select(literal(0), LeafRow.position, LeafRow.leaf_hash).where(LeafRow.position.in_(leaves)),
        select(NodeRow.level, NodeRow.idx, NodeRow.hash).where(inner),
    )
    for level, idx, h in session.execute(query):  # one query: O(log n) rows
        found[(int(level), int(idx))] = bytes.fromhex(h)
    missing = sorted(wanted - found.keys())
    if missing:
        level, idx = missing[0]
        raise IntegrityViolation(
            f"the Merkle log lacks the stored hash of leaves {idx << level}..."
            f"{((idx + 1) << level) - 1} (node level {level}, index {idx}): the log tables "
            "were truncated or edited; run `docket audit`"
        )
    return found


def _range_hashes(session: Session, ranges: list[tuple[int, int]]) -> list[bytes]:
    nodes = stored_nodes(session, subtrees.nodes_for(ranges))
    return [subtrees.range_hash(lo, hi, nodes) for lo, hi in ranges]


def log_size(session: Session) -> int:
    """Number of leaves in ``session``'s snapshot."""
    last = session.scalar(select(func.max(LeafRow.position)))
    return 0 if last is None else int(last) + 1


def leaf_at(session: Session, index: int) -> Leaf:
    """Leaf ``index``; IndexError if the log is shorter."""
    leaf = session.scalar(select(LeafRow.leaf).where(LeafRow.position == index))
    if leaf is None or index < 0:
        raise IndexError(f"leaf {index} does not exist (log size {log_size(session)})")
    return Leaf(index, leaf.encode("ascii"))


def root_at(session: Session, size: int) -> bytes:
    """``MTH`` of the first ``size`` leaves; ValueError if ``size`` exceeds the log."""
    n = log_size(session)
    if not 0 <= size <= n:
        raise ValueError(f"tree size {size} exceeds the log size {n}")
    if size == 0:
        return merkle.EMPTY_ROOT
    return _range_hashes(session, [(0, size)])[0]


def inclusion_proof_at(session: Session, index: int, size: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of the first ``size``."""
    n = log_size(session)
    if not 0 <= index < size <= n:
        raise ValueError(f"no leaf {index} in a tree of size {size} (log size {n})")
    return _range_hashes(session, subtrees.inclusion_ranges(index, size))


def consistency_proof_between(session: Session, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 2.1.4.1 consistency proof from the tree of ``old_size`` to ``new_size``."""
    n = log_size(session)
    if not 0 <= old_size <= new_size <= n:
        raise ValueError(f"sizes {old_size} -> {new_size} do not fit the log size {n}")
    return _range_hashes(session, subtrees.consistency_ranges(old_size, new_size))


def find_protocol_leaf(session: Session, protocol_id: str, version: int) -> Leaf | None:
    """The leaf recording the freeze of ``protocol_id`` version ``version``, if any (the first,
    by position, whose body names them)."""
    rows = session.execute(
        select(LeafRow.position, LeafRow.leaf)
        .where(LeafRow.kind == "protocol")
        .order_by(LeafRow.position)
    )
    for position, leaf in rows:
        try:
            body = leaf_body(leaf.encode("ascii"))
        except ValueError:
            continue  # an edited leaf: the audit names it
        if body.get("protocol_id") == protocol_id and body.get("version") == version:
            return Leaf(int(position), leaf.encode("ascii"))
    return None


def log_head_session(session: Session) -> LogHead:
    """The head of the log in ``session``'s snapshot."""
    n = log_size(session)
    return LogHead(n, root_at(session, n))


def log_head(ledger: Ledger) -> LogHead:
    """The current head, read in one read-only transaction (writes nothing)."""
    with ledger.read_session() as session:
        return log_head_session(session)
