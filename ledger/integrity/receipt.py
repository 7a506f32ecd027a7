"""Receipts: a signed tree head plus the inclusion proof of one protocol freeze, checkable offline.

A receipt is the JSON object (``format`` :data:`RECEIPT_FORMAT`)::

    {"format": "docket-receipt-v1",
     "sth": {<a signed tree head, docketml.ledger.integrity.sth>},
     "leaf": "<the protocol's freeze leaf, its canonical JSON bytes as ASCII text>",
     "leaf_index": <0-based position of the leaf in the log>,
     "inclusion_proof": ["<64 hex>", ...],   # RFC 9162 2.1.3.1 PATH(leaf_index, D[tree_size])
     "public_key_pem": "<the signer's Ed25519 public key, SubjectPublicKeyInfo PEM>"}

:func:`verify_receipt` checks, with no database and without importing the ledger's store:

1. ``leaf``: the leaf text is the canonical JSON of a ``protocol`` leaf (:mod:`.leaves`);
2. ``protocol``: the protocol file's canonical sha256 (:mod:`docketml.protocols.canonical`, so
   comments and formatting do not count, any value does) equals the leaf's ``sha256``;
3. ``inclusion``: the proof leads from ``SHA-256(0x00 || leaf)`` at ``leaf_index`` to the STH's
   ``root_hash`` in a tree of the STH's ``tree_size`` (RFC 9162 2.1.3.2);
4. ``signature``: the STH's Ed25519 signature verifies under the public key the reader trusts
   (``public_key``); without one, under the key inside the receipt, which proves only that the
   receipt is self-consistent (the result says so in ``warnings``).

Every check runs; the result names each failure. A receipt that is not a JSON object of this
shape is bad input (:class:`UserError` naming the field, exit 2); a well-formed receipt that
fails a check is an integrity failure (exit 3, decided by the caller).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from docketml.protocols.loader import load_protocol_file

from ..errors import UserError
from . import merkle
from .leaves import leaf_body
from .sth import (
    key_id,
    load_public_key,
    public_key_pem,
    sign_tree_head,
    verify_tree_head,
)

if TYPE_CHECKING:  # the store is imported only by the functions that read a ledger
    from sqlalchemy.orm import Session

    from ..store.models import ProtocolRow

__all__ = [
    "RECEIPT_FORMAT",
    "ReceiptCheck",
    "ReceiptVerification",
    "build_receipt",
    "check_receipt_shape",
    "protocol_inclusion",
    "read_json_file",
    "read_public_key_file",
    "read_receipt_file",
    "verify_receipt",
]

RECEIPT_FORMAT = "docket-receipt-v1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = ("format", "sth", "leaf", "leaf_index", "inclusion_proof", "public_key_pem")

NO_TRUSTED_KEY_WARNING = (
    "NO TRUSTED KEY: the signature was checked with the public key inside the receipt, so this "
    "only shows the receipt is self-consistent; anyone can make such a receipt. Get the ledger "
    "owner's public key (`docket log key`) through a channel you trust and pass --public-key."
)


def _protocol_row(session: Session, protocol_id: str, version: int | None) -> ProtocolRow:
    from ..store import protocols as store

    if version is None:
        return store.latest_frozen(session, protocol_id)
    row = store.version_row(session, protocol_id, version)
    if row.status != "frozen":
        raise UserError(
            f"protocol {protocol_id!r} v{version} is {row.status}, not frozen: only a frozen "
            "version has a freeze leaf to prove"
        )
    return row


def protocol_inclusion(
    session: Session, protocol_id: str, version: int | None = None
) -> dict[str, Any]:
    """The freeze leaf of ``protocol_id`` (``version``, default the latest frozen one) and its
    inclusion proof in the current head, read in ``session`` (writes nothing)::

        {"protocol_id", "version", "sha256", "leaf", "leaf_index", "tree_size", "root_hash",
         "inclusion_proof": [hex], "verifies": bool}

    ``verifies`` is the RFC 9162 check of that proof against the head's root, and also requires
    the leaf's ``sha256`` to be the row's. :class:`IntegrityViolation` if a frozen version has
    no leaf in the log."""
    from ..errors import IntegrityViolation
    from .log import find_protocol_leaf, inclusion_proof_at, log_head_session

    row = _protocol_row(session, protocol_id, version)
    found = find_protocol_leaf(session, row.protocol_id, row.version)
    if found is None:
        raise IntegrityViolation(
            f"protocol {row.protocol_id!r} v{row.version} is frozen but its freeze is not a leaf "
            "of the log"
        )
    head = log_head_session(session)
    proof = inclusion_proof_at(session, found.index, head.tree_size)
    verifies = merkle.verify_inclusion(
        found.index, head.tree_size, found.hash, proof, head.root_hash
    )
    return {
        "protocol_id": row.protocol_id,
        "version": row.version,
        "sha256": row.sha256,
        "leaf": found.leaf.decode("ascii"),
        "leaf_index": found.index,
        "tree_size": head.tree_size,
        "root_hash": head.root_hash.hex(),
        "inclusion_proof": [p.hex() for p in proof],
        "verifies": verifies and found.body.get("sha256") == row.sha256,
    }


def build_receipt(
    session: Session, protocol_id: str, version: int | None = None, *, key: Ed25519PrivateKey
) -> dict[str, Any]:
    """The receipt (module docstring) of ``protocol_id``'s freeze (``version``, default the
    latest frozen one): the current head signed with ``key`` now, the freeze leaf, its index and
    inclusion proof, and ``key``'s public key. Reads only. :class:`IntegrityViolation` if the
    proof does not verify against the head it was built from (the log is inconsistent)."""
    from ..errors import IntegrityViolation

    inc = protocol_inclusion(session, protocol_id, version)
    if not inc["verifies"]:
        raise IntegrityViolation(
            f"protocol {inc['protocol_id']!r} v{inc['version']}: the inclusion proof built from "
            f"the log does not verify against its own head (size {inc['tree_size']})"
        )
    sth = sign_tree_head(inc["tree_size"], bytes.fromhex(inc["root_hash"]), key)
    return {
        "format": RECEIPT_FORMAT,
        "sth": sth,
        "leaf": inc["leaf"],
        "leaf_index": inc["leaf_index"],
        "inclusion_proof": inc["inclusion_proof"],
        "public_key_pem": public_key_pem(key),
    }


def check_receipt_shape(receipt: Any, source: str = "receipt") -> None:
    """Raise :class:`UserError` (``<source>: field 'x': expected ...``) unless ``receipt`` has
    every field of the format with the right type. Says nothing about whether it verifies."""
    if not isinstance(receipt, Mapping):
        raise UserError(f"{source}: expected a JSON object (a docket receipt)")
    for name in _FIELDS:
        if name not in receipt:
            raise UserError(f"{source}: missing field '{name}'")
    if receipt["format"] != RECEIPT_FORMAT:
        raise UserError(
            f"{source}: field 'format': expected {RECEIPT_FORMAT!r}, got {receipt['format']!r}"
        )
    if not isinstance(receipt["leaf"], str) or not receipt["leaf"].isascii():
        raise UserError(f"{source}: field 'leaf': expected the leaf's canonical JSON as text")
    index = receipt["leaf_index"]
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UserError(f"{source}: field 'leaf_index': expected an integer >= 0")
    proof = receipt["inclusion_proof"]
    if not isinstance(proof, list):
        raise UserError(f"{source}: field 'inclusion_proof': expected a list of 64-hex hashes")
    for i, h in enumerate(proof):
        if not isinstance(h, str) or not _HEX64.match(h):
            raise UserError(
                f"{source}: field 'inclusion_proof[{i}]': expected 64 lowercase hex digits"
            )
    if not isinstance(receipt["public_key_pem"], str):
        raise UserError(f"{source}: field 'public_key_pem': expected PEM text")
    try:
        load_public_key(receipt["public_key_pem"])
    except UserError as exc:
        raise UserError(f"{source}: field 'public_key_pem': {exc}") from None
    try:
        verify_tree_head(receipt["sth"], load_public_key(receipt["public_key_pem"]))
    except UserError as exc:  # malformed STH (a well-formed one that fails is not raised)
        raise UserError(f"{source}: field 'sth': {exc}") from None


@dataclass(frozen=True)
class ReceiptCheck:
    """One check of :func:`verify_receipt`: ``name`` (leaf, protocol, inclusion, signature),
    whether it passed, and what was compared."""

    name: str
    ok: bool
    detail: str


@dataclass
class ReceiptVerification:
    """The outcome of :func:`verify_receipt`; ``ok`` iff every check passed."""

    checks: list[ReceiptCheck]
    key_source: str  # "given" (the reader's --public-key) or "receipt" (the receipt's own key)
    key_id: str
    leaf: dict[str, Any] | None
    sth: dict[str, Any]
    protocol_file: str
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[ReceiptCheck]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "key_source": self.key_source,
            "key_id": self.key_id,
            "leaf": self.leaf,
            "tree_size": self.sth["tree_size"],
            "root_hash": self.sth["root_hash"],
            "timestamp": self.sth["timestamp"],
            "protocol_file": self.protocol_file,
            "warnings": self.warnings,
        }


def _leaf_check(text: str) -> tuple[ReceiptCheck, dict[str, Any] | None]:
    try:
        body = leaf_body(text.encode("ascii"))
    except (ValueError, UnicodeError) as exc:
        return ReceiptCheck("leaf", False, f"the leaf is not a canonical leaf ({exc})"), None
    if body.get("kind") != "protocol" or not isinstance(body.get("sha256"), str):
        return (
            ReceiptCheck(
                "leaf", False, f"the leaf is a {body.get('kind')!r} leaf, not a protocol freeze"
            ),
            None,
        )
    what = f"{body.get('protocol_id')} v{body.get('version')} frozen {body.get('frozen_at')}"
    return ReceiptCheck("leaf", True, f"canonical protocol leaf: {what}"), body


def verify_receipt(
    receipt: Mapping[str, Any],
    protocol_path: str | Path,
    public_key: Ed25519PublicKey | None = None,
    *,
    source: str = "receipt",
) -> ReceiptVerification:
    """Check ``receipt`` against the protocol file at ``protocol_path`` and the reader's trusted
    ``public_key`` (module docstring). Offline: reads the two files' contents only. Raises
    :class:`UserError` for a malformed receipt and ``ProtocolErrors`` for an invalid protocol
    file (bad input); otherwise returns every check's outcome."""
    check_receipt_shape(receipt, source)
    sth = receipt["sth"]
    embedded = load_public_key(receipt["public_key_pem"])
    loaded = load_protocol_file(protocol_path)
    checks: list[ReceiptCheck] = []
    warnings: list[str] = []

    leaf_check, body = _leaf_check(receipt["leaf"])
    checks.append(leaf_check)

    if body is None:
        checks.append(ReceiptCheck("protocol", False, "no protocol leaf to compare the file with"))
    elif body["sha256"] == loaded.sha256:
        checks.append(
            ReceiptCheck(
                "protocol",
                True,
                f"{protocol_path}: canonical sha256 {loaded.sha256} equals the leaf's",
            )
        )
    else:
        named = f"protocol {loaded.protocol.id!r}"
        recorded = f"{body.get('protocol_id')!r} v{body.get('version')}"
        checks.append(
            ReceiptCheck(
                "protocol",
                False,
                f"{protocol_path} ({named}) has canonical sha256 {loaded.sha256}, the leaf "
                f"records {body['sha256']} for {recorded}: this is not the frozen protocol",
            )
        )

    size, index = sth["tree_size"], receipt["leaf_index"]
    proof = [bytes.fromhex(h) for h in receipt["inclusion_proof"]]
    leaf_hash = merkle.leaf_hash(receipt["leaf"].encode("ascii"))
    got = merkle.root_from_inclusion(index, size, leaf_hash, proof)
    if got is None:
        checks.append(
            ReceiptCheck(
                "inclusion",
                False,
                f"a proof of {len(proof)} hash(es) cannot place leaf {index} in a tree of "
                f"{size} leaves",
            )
        )
    elif got.hex() != sth["root_hash"]:
        checks.append(
            ReceiptCheck(
                "inclusion",
                False,
                f"the proof leads from leaf {index} to root {got.hex()}, the signed head says "
                f"{sth['root_hash']} (tree size {size}): the leaf or the proof was changed",
            )
        )
    else:
        checks.append(
            ReceiptCheck(
                "inclusion", True, f"leaf {index} is in the tree of {size} leaves with that root"
            )
        )

    if public_key is None:
        key, key_source = embedded, "receipt"
        warnings.append(NO_TRUSTED_KEY_WARNING)
    else:
        key, key_source = public_key, "given"
        if key_id(embedded) != key_id(public_key):
            warnings.append(
                f"the receipt carries another public key (key id {key_id(embedded)}) than the "
                f"one you trust ({key_id(public_key)}); only yours was used"
            )
    whose = "your trusted key" if key_source == "given" else "the key inside the receipt"
    if verify_tree_head(sth, key):
        checks.append(
            ReceiptCheck(
                "signature",
                True,
                f"the head (size {size}, {sth['timestamp']}) is signed by {whose} "
                f"(key id {key_id(key)})",
            )
        )
    elif sth["key_id"] != key_id(key):
        checks.append(
            ReceiptCheck(
                "signature",
                False,
                f"the head names key id {sth['key_id']}, {whose} is {key_id(key)}: signed by "
                "another key",
            )
        )
    else:
        checks.append(
            ReceiptCheck(
                "signature",
                False,
                f"the head's signature does not verify under {whose} (key id {key_id(key)}): "
                "the head or its signature was changed",
            )
        )
    return ReceiptVerification(
        checks, key_source, key_id(key), body, dict(sth), str(protocol_path), warnings
    )


def read_json_file(path: Path, what: str) -> Any:
    """JSON from ``path``; :class:`UserError` naming the file (and line) otherwise."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (expected {what})") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(f"{path}: cannot read it ({reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {exc.lineno}: not JSON ({exc.msg})") from None


def read_receipt_file(path: Path) -> dict[str, Any]:
    """A receipt read from ``path`` and checked for shape (:func:`check_receipt_shape`);
    :class:`UserError` naming the file (and field) otherwise."""
    data = read_json_file(path, "a docket receipt JSON")
    check_receipt_shape(data, str(path))
    return dict(data)


def read_public_key_file(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key (SubjectPublicKeyInfo PEM, e.g. ``signing_key.pub.pem``) at
    ``path``; :class:`UserError` naming the file otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (expected an Ed25519 public key PEM)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        return load_public_key(data)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
