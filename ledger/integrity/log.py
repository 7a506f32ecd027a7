"""The ledger's Merkle log: the read API every command uses (heads, leaves, proofs).

INTERIM implementation (computed, O(n)): the log is computed on every call from the rows it
covers — frozen protocol versions, journal rows and cost rows — ordered by record time
(``frozen_at`` / ``at``), ties by kind then id/seq. The leaf-table change (issue 14 item 1)
replaces the bodies of these functions with a stored, position-ordered leaf table and stored
interior nodes (O(log n) appends and proofs) **without changing their signatures**, and adds
the sign-check, run and verdict leaves. Leaf bytes are defined in :mod:`.leaves`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.db import Ledger
from ..store.models import CostRow, JournalEntryRow, ProtocolRow
from . import merkle
from .leaves import chain_leaf_bytes, leaf_body, protocol_leaf_bytes

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


def _computed_leaves(session: Session) -> list[bytes]:
    rows: list[tuple[Any, int, int, bytes]] = []
    parents = dict(session.execute(select(ProtocolRow.id, ProtocolRow.sha256)).all())
    for p in session.scalars(select(ProtocolRow).where(ProtocolRow.status == "frozen")):
        assert p.frozen_at is not None
        leaf = protocol_leaf_bytes(
            protocol_id=p.protocol_id,
            version=p.version,
            sha256=p.sha256,
            parent_sha256=parents.get(p.parent_id) if p.parent_id is not None else None,
            frozen_at=p.frozen_at,
        )
        rows.append((p.frozen_at, 0, p.id, leaf))
    for at, seq, h in session.execute(
        select(JournalEntryRow.at, JournalEntryRow.seq, JournalEntryRow.hash)
    ):
        rows.append((at, 1, seq, chain_leaf_bytes("journal", seq, h)))
    for at, seq, h in session.execute(select(CostRow.at, CostRow.seq, CostRow.hash)):
        rows.append((at, 2, seq, chain_leaf_bytes("cost", seq, h)))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [r[3] for r in rows]


def _hashes(session: Session) -> list[bytes]:
    return [merkle.leaf_hash(leaf) for leaf in _computed_leaves(session)]


def log_size(session: Session) -> int:
    """Number of leaves in ``session``'s snapshot."""
    return len(_computed_leaves(session))


def leaf_at(session: Session, index: int) -> Leaf:
    """Leaf ``index``; IndexError if the log is shorter."""
    leaves = _computed_leaves(session)
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} does not exist (log size {len(leaves)})")
    return Leaf(index, leaves[index])


def root_at(session: Session, size: int) -> bytes:
    """``MTH`` of the first ``size`` leaves; ValueError if ``size`` exceeds the log."""
    hashes = _hashes(session)
    if not 0 <= size <= len(hashes):
        raise ValueError(f"tree size {size} exceeds the log size {len(hashes)}")
    return merkle.root_hash(hashes[:size])


def inclusion_proof_at(session: Session, index: int, size: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of the first ``size``."""
    hashes = _hashes(session)
    if not 0 <= index < size <= len(hashes):
        raise ValueError(f"no leaf {index} in a tree of size {size} (log size {len(hashes)})")
    return merkle.inclusion_proof(hashes[:size], index)


def consistency_proof_between(session: Session, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 2.1.4.1 consistency proof from the tree of ``old_size`` to ``new_size``."""
    hashes = _hashes(session)
    if not 0 <= old_size <= new_size <= len(hashes):
        raise ValueError(f"sizes {old_size} -> {new_size} do not fit the log size {len(hashes)}")
    return merkle.consistency_proof(hashes[:new_size], old_size)


def find_protocol_leaf(session: Session, protocol_id: str, version: int) -> Leaf | None:
    """The leaf recording the freeze of ``protocol_id`` version ``version``, if any."""
    for index, leaf in enumerate(_computed_leaves(session)):
        body = leaf_body(leaf)
        if (
            body["kind"] == "protocol"
            and body["protocol_id"] == protocol_id
            and body["version"] == version
        ):
            return Leaf(index, leaf)
    return None


def log_head_session(session: Session) -> LogHead:
    """The head of the log in ``session``'s snapshot."""
    hashes = _hashes(session)
    return LogHead(len(hashes), merkle.root_hash(hashes))


def log_head(ledger: Ledger) -> LogHead:
    """The current head, computed in one read-only transaction (writes nothing)."""
    with ledger.read_session() as session:
        return log_head_session(session)
