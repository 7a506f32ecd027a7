"""Is today's log an extension of the one an earlier signed tree head (STH) committed to?

For a kept STH of size ``m`` and root ``r`` and the current log of ``n`` leaves, checked in one
read-only snapshot (:func:`check_heads`):

1. ``signature``: the STH verifies under the trusted public key (:func:`.sth.verify_tree_head`);
   a head that does not is not evidence of anything and fails (it takes no part in step 4);
2. ``truncated``: ``m > n``: the log no longer holds leaves ``n..m-1`` that the head signed;
3. ``rewritten``: ``m <= n`` and the RFC 9162 2.1.4 consistency proof from ``m`` to ``n`` (built
   from today's log, :func:`.log.consistency_proof_between`) does not verify from ``(m, r)`` to
   today's root: some leaf ``< m`` differs from what the head signed (changed, removed,
   inserted or reordered);
4. narrowing: a root covers its leaves as a whole, so one head can only say "somewhere in
   ``0..m-1``". With several kept heads, the largest *consistent* head of size ``k`` below a
   failing one proves leaves ``0..k-1`` intact, so the first bad position is in ``k..m-1``
   (``k..n`` for a truncation: leaf ``n`` is gone at the latest). ``first_bad`` /
   ``last_bad`` are those bounds (inclusive).

Nothing is written. A malformed STH is bad input (:class:`UserError` naming the file and field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from ..errors import UserError
from . import merkle
from .log import consistency_proof_between, log_head_session
from .receipt import read_json_file, read_public_key_file
from .sth import key_id, load_private_key, signing_key_path, verify_tree_head

__all__ = ["HeadCheck", "check_heads", "read_sth_file", "trusted_key"]


def trusted_key(path: Path | None) -> tuple[Ed25519PublicKey, str]:
    """The public key kept heads are checked with, and where it came from: the PEM file at
    ``path`` when given, else the public half of this machine's signing key
    (:func:`.sth.signing_key_path`). :class:`UserError` when neither can be read."""
    if path is not None:
        return read_public_key_file(path), f"the public key in {path}"
    where = signing_key_path()
    if not where.exists():
        raise UserError(
            f"no --public-key given and no signing key at {where}: pass the public key PEM the "
            "heads were signed with (docket log key prints it)"
        )
    return load_private_key(where).public_key(), f"this machine's signing key {where}"


@dataclass
class HeadCheck:
    """The outcome for one kept head. ``status``: ``consistent``, ``signature``, ``truncated``
    or ``rewritten``; ``first_bad``..``last_bad``: where the first differing leaf can be (None
    when consistent or unsigned); ``proof``: the consistency proof used (hex)."""

    source: str
    tree_size: int
    root_hash: str
    timestamp: str
    current_size: int
    current_root: str
    status: str
    problem: str | None
    first_bad: int | None = None
    last_bad: int | None = None
    proof: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "consistent"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["proof"] = list(self.proof)
        return data


def read_sth_file(path: Path) -> dict[str, Any]:
    """Read a kept STH (``docket log head --out``) from ``path``: a JSON object with every STH
    field well formed, else :class:`UserError` naming the file and the field."""
    data = read_json_file(path, "a signed tree head JSON")
    from .sth import _check_shape  # the one definition of a well-formed STH

    try:
        _check_shape(data)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return data


def _one(
    session: Session,
    source: str,
    sth: dict[str, Any],
    key: Ed25519PublicKey,
    size: int,
    root: bytes,
) -> HeadCheck:
    m, old_root = sth["tree_size"], sth["root_hash"]
    base = {
        "source": source,
        "tree_size": m,
        "root_hash": old_root,
        "timestamp": sth["timestamp"],
        "current_size": size,
        "current_root": root.hex(),
    }
    name = f"head {source} (size {m}, root {old_root[:16]}, {sth['timestamp']})"
    if not verify_tree_head(sth, key):
        why = (
            f"names key id {sth['key_id'][:16]}, the trusted key is {key_id(key)[:16]}"
            if sth["key_id"] != key_id(key)
            else "its signature does not verify under the trusted key"
        )
        return HeadCheck(
            **base, status="signature", problem=f"{name}: not signed by the trusted key: {why}"
        )
    if m > size:
        return HeadCheck(
            **base,
            status="truncated",
            problem=(
                f"{name}: the log has {size} leaves, the head signed {m}: leaves {size}..{m - 1} "
                "that it covered are gone (truncated)"
            ),
            first_bad=0,
            last_bad=size,
        )
    proof = consistency_proof_between(session, m, size)
    if merkle.verify_consistency(m, size, bytes.fromhex(old_root), root, proof):
        return HeadCheck(
            **base, status="consistent", problem=None, proof=tuple(p.hex() for p in proof)
        )
    return HeadCheck(
        **base,
        status="rewritten",
        problem=(
            f"{name}: the log no longer contains the first {m} leaves that head signed (the "
            f"consistency proof from size {m} to {size} fails): a leaf at a position in "
            f"0..{m - 1} was changed, removed, inserted or reordered"
        ),
        first_bad=0,
        last_bad=m - 1,
        proof=tuple(p.hex() for p in proof),
    )


def _narrow(checks: list[HeadCheck]) -> None:
    """Raise each failing head's ``first_bad`` to the largest consistent head size below it
    (module docstring, step 4) and say so in its problem."""
    good = sorted(c.tree_size for c in checks if c.ok)
    for c in checks:
        if c.status not in ("truncated", "rewritten") or c.last_bad is None:
            continue
        below = [k for k in good if k <= c.last_bad]
        if not below or below[-1] == 0:
            continue
        c.first_bad = below[-1]
        c.problem = (
            f"{c.problem}; a consistent kept head of size {below[-1]} proves leaves "
            f"0..{below[-1] - 1} intact, so the first bad leaf is in {c.first_bad}..{c.last_bad}"
        )


def check_heads(
    session: Session, heads: Sequence[tuple[str, dict[str, Any]]], public_key: Ed25519PublicKey
) -> list[HeadCheck]:
    """Check each ``(source, sth)`` against the log in ``session`` (module docstring), in the
    order given. STHs must be well formed (:func:`read_sth_file`)."""
    head = log_head_session(session)
    checks = [
        _one(session, source, sth, public_key, head.tree_size, head.root_hash)
        for source, sth in heads
    ]
    _narrow(checks)
    return checks
