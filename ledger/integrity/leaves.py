"""The leaf bytes of the ledger's Merkle log: one canonical JSON object per append-only record.

Pure functions (no database): ``docket verify`` rebuilds leaves from a receipt offline with
them. Every leaf is ``json.dumps(body, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)`` encoded as ASCII, and every body has a ``"kind"`` from :data:`LEAF_KINDS`.

Kinds and their fields (docs/transparency.md is the reader's copy of this list):

* ``protocol`` — a frozen protocol version: ``protocol_id``, ``version``, ``sha256`` (the
  canonical SHA-256 of the protocol), ``parent_sha256`` (the version it amends, or null),
  ``frozen_at`` (ISO 8601 UTC, microseconds, ``Z``).
* ``journal`` / ``cost`` — a row of the journal or cost hash chain: ``seq`` and ``hash`` (the
  row's stored chain hash, which covers its content and its predecessor).
* ``signcheck``, ``run``, ``verdict`` — defined by the leaf-table change (issue 14 item 1).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "LEAF_KINDS",
    "chain_leaf_bytes",
    "leaf_body",
    "leaf_bytes",
    "protocol_leaf_bytes",
    "utc_iso",
]

LEAF_KINDS = ("protocol", "signcheck", "run", "verdict", "cost", "journal")


def leaf_bytes(body: dict[str, Any]) -> bytes:
    """Canonical bytes of a leaf body (sorted keys, no whitespace, ASCII)."""
    if body.get("kind") not in LEAF_KINDS:
        raise ValueError(f"leaf kind must be one of {LEAF_KINDS}, found {body.get('kind')!r}")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def leaf_body(leaf: bytes) -> dict[str, Any]:
    """Parse leaf bytes back into their body; raises ValueError if they are not canonical."""
    body = json.loads(leaf.decode("ascii"))
    if not isinstance(body, dict) or leaf_bytes(body) != leaf:
        raise ValueError("leaf bytes are not the canonical JSON of a leaf body")
    return body


def utc_iso(at: datetime) -> str:
    """``2026-06-01T12:00:00.000000Z``; naive datetimes are refused."""
    if at.tzinfo is None:
        raise ValueError("naive datetime in a leaf")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def protocol_leaf_bytes(
    *,
    protocol_id: str,
    version: int,
    sha256: str,
    parent_sha256: str | None,
    frozen_at: datetime | str,
) -> bytes:
    """The leaf of a frozen protocol version."""
    at = frozen_at if isinstance(frozen_at, str) else utc_iso(frozen_at)
    return leaf_bytes(
        {
            "kind": "protocol",
            "protocol_id": protocol_id,
            "version": version,
            "sha256": sha256,
            "parent_sha256": parent_sha256,
            "frozen_at": at,
        }
    )


def chain_leaf_bytes(kind: str, seq: int, row_hash: str) -> bytes:
    """The leaf of a journal (``kind="journal"``) or cost (``kind="cost"``) chain row."""
    if kind not in ("journal", "cost"):
        raise ValueError(f"chain leaf kind must be journal or cost, found {kind!r}")
    return leaf_bytes({"kind": kind, "seq": seq, "hash": row_hash})
