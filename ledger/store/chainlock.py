"""Serialising appends to a hash-chained table across processes.

The next ``seq`` and ``prev_hash`` must be read and the new row written with nobody appending in
between. SQLite: every docket transaction starts with ``BEGIN IMMEDIATE`` (ledger/db.py), which
already holds the database's write lock. PostgreSQL: a transaction-scoped advisory lock keyed by
the table name.
"""

from __future__ import annotations

import zlib

from sqlalchemy import text
from sqlalchemy.orm import Session


def lock_key(table: str) -> int:
    """The PostgreSQL advisory lock key of ``table``'s append lock."""
    return zlib.crc32(f"docket:{table}".encode())


def lock_chain(session: Session, table: str) -> None:
    """Hold the append lock of ``table`` until the current transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(table)})
