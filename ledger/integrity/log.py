"""The ledger's Merkle log as it can be computed today: a read-only RFC 9162 tree over the rows
of the two existing hash chains (``journal_entries`` and ``costs``).

Leaf bytes (one per chain row), canonical JSON with keys sorted and no whitespace::

    {"chain":"journal"|"costs","hash":"<the row's stored chain hash>","seq":<the row's seq>}

Since each row's chain hash covers its content and its predecessor's hash, the leaf commits to
the row's content as the chain defines it.

Leaf order: by the row's recorded time ``at``, ties broken by chain name then ``seq``. Appends
keep earlier leaves in place (so consistency proofs between heads hold) only while record times
never go backwards; a dedicated leaf table with its own position column (issue 14 item 1) is
what makes the order independent of clocks. Not yet leaves: protocol versions, sign-checks,
runs (observations, metrics), verdicts. See docs/transparency.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..store.db import Ledger
from ..store.models import CostRow, JournalEntryRow
from .merkle import leaf_hash, root_hash

__all__ = ["LogHead", "chain_leaves", "log_head", "log_head_session"]


@dataclass(frozen=True)
class LogHead:
    """``tree_size`` leaves whose RFC 9162 ``MTH`` is ``root_hash`` (32 bytes)."""

    tree_size: int
    root_hash: bytes


def _leaf(chain: str, seq: int, row_hash: str) -> bytes:
    body = {"chain": chain, "hash": row_hash, "seq": seq}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def chain_leaves(session: Session) -> list[bytes]:
    """The leaf byte strings in log order (see the module docstring)."""
    rows: list[tuple[object, str, int, str]] = []
    for at, seq, h in session.execute(
        select(JournalEntryRow.at, JournalEntryRow.seq, JournalEntryRow.hash)
    ):
        rows.append((at, "journal", seq, h))
    for at, seq, h in session.execute(select(CostRow.at, CostRow.seq, CostRow.hash)):
        rows.append((at, "costs", seq, h))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    return [_leaf(chain, seq, h) for _, chain, seq, h in rows]


def log_head_session(session: Session) -> LogHead:
    """The head of the log in ``session``'s snapshot."""
    leaves = chain_leaves(session)
    return LogHead(len(leaves), root_hash([leaf_hash(leaf) for leaf in leaves]))


def log_head(ledger: Ledger) -> LogHead:
    """The current head, computed in one read-only transaction (writes nothing)."""
    with ledger.read_session() as session:
        return log_head_session(session)
