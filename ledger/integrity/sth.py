"""Ed25519 signed tree heads (STH) over the RFC 9162 Merkle tree of :mod:`.merkle`.

An STH is the JSON object::

    {"version": 1, "tree_size": N, "root_hash": "<64 hex>", "timestamp": "<RFC 3339 UTC>",
     "key_id": "<64 hex>", "signature": "<128 hex>"}

``key_id`` is ``sha256(raw 32-byte Ed25519 public key)`` in hex. ``signature`` is the Ed25519
signature (RFC 8032, pure Ed25519) of the **signed bytes**, exactly::

    b"docket-sth-v1\\n" + canonical_json({"key_id", "root_hash", "timestamp", "tree_size",
                                          "version"}).encode("utf-8")

where ``canonical_json`` is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)`` (no whitespace, keys sorted, ASCII only); ``root_hash`` and ``key_id`` are
lowercase hex, ``tree_size`` a JSON integer. The prefix separates these signatures from any
other use of the key. A verifier recomputes the bytes from the STH's fields and checks the
signature with a public key it trusts (never the one a file claims to carry).

Key: an Ed25519 private key in unencrypted PKCS#8 PEM, outside the ledger. Its path is
``$DOCKET_SIGNING_KEY`` when set, else ``<user config dir>/docket/signing_key.pem`` with the
user config dir ``$XDG_CONFIG_HOME`` or ``~/.config``. :func:`create_key` writes it with
permissions 0600 (directory 0700) and never overwrites an existing key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import UserError

__all__ = [
    "SIGNED_PREFIX",
    "create_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_pem",
    "sign_tree_head",
    "signed_bytes",
    "signing_key_path",
    "verify_tree_head",
]

SIGNED_PREFIX = b"docket-sth-v1\n"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")
_FIELDS = ("version", "tree_size", "root_hash", "timestamp", "key_id", "signature")


def signing_key_path() -> Path:
    """``$DOCKET_SIGNING_KEY``, else ``$XDG_CONFIG_HOME/docket/signing_key.pem`` (default
    ``~/.config/docket/signing_key.pem``)."""
    env = os.environ.get("DOCKET_SIGNING_KEY")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "docket" / "signing_key.pem"


def create_key(path: Path | None = None) -> Ed25519PrivateKey:
    """Generate an Ed25519 key and write it as PKCS#8 PEM to ``path`` (default
    :func:`signing_key_path`) with mode 0600, creating the directory with mode 0700.
    Raises :class:`UserError` if a file is already there (a key is never replaced silently)."""
    path = path or signing_key_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{path}: a signing key already exists; not replacing it") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, 0o600)  # the umask cannot widen it, but be explicit
    return key


def load_private_key(path: Path | None = None) -> Ed25519PrivateKey:
    """Read the Ed25519 private key at ``path`` (default :func:`signing_key_path`).
    :class:`UserError` naming the file if it is missing, unreadable or not an Ed25519 key."""
    path = path or signing_key_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(
            f"{path}: no signing key (set DOCKET_SIGNING_KEY to a PEM file or create one)"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read signing key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def ensure_signing_key(path: Path | None = None) -> dict[str, object]:
    """The signing key at ``path`` (default :func:`signing_key_path`), created (0600) if absent;
    a key that is there is loaded, never replaced. The public key is also written beside it as
    ``<name>.pub.pem`` (mode 0644) for readers. Returns ``{"path", "created", "key_id",
    "public_key", "public_key_path"}``."""
    path = path or signing_key_path()
    created = not path.exists()
    key = create_key(path) if created else load_private_key(path)
    public = public_key_pem(key)
    pub_path = path.with_name(path.stem + ".pub.pem")
    if not pub_path.exists() or pub_path.read_text(encoding="ascii") != public:
        pub_path.write_text(public, encoding="ascii")
        os.chmod(pub_path, 0o644)
    return {
        "path": str(path),
        "created": created,
        "key_id": key_id(key),
        "public_key": public,
        "public_key_path": str(pub_path),
    }


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as SubjectPublicKeyInfo PEM text (what a reader is given)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Parse a SubjectPublicKeyInfo PEM Ed25519 public key; :class:`UserError` otherwise."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise UserError(f"not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def key_id(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """``sha256(raw 32-byte public key)`` as lowercase hex."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signed_bytes(tree_size: int, root_hash_hex: str, timestamp: str, key_id_hex: str) -> bytes:
    """The exact bytes an STH's signature covers (see the module docstring)."""
    body = {
        "key_id": key_id_hex,
        "root_hash": root_hash_hex,
        "timestamp": timestamp,
        "tree_size": tree_size,
        "version": 1,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return SIGNED_PREFIX + text.encode("utf-8")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def sign_tree_head(
    tree_size: int, root_hash: bytes, key: Ed25519PrivateKey, timestamp: str | None = None
) -> dict[str, Any]:
    """Sign (``tree_size``, ``root_hash``) at ``timestamp`` (default: now, RFC 3339 UTC with
    microseconds and ``Z``) and return the STH dict."""
    if tree_size < 0 or len(root_hash) != 32:
        raise ValueError("tree_size must be >= 0 and root_hash 32 bytes")
    ts = timestamp or _now()
    kid = key_id(key)
    sig = key.sign(signed_bytes(tree_size, root_hash.hex(), ts, kid))
    return {
        "version": 1,
        "tree_size": tree_size,
        "root_hash": root_hash.hex(),
        "timestamp": ts,
        "key_id": kid,
        "signature": sig.hex(),
    }


def _check_shape(sth: Any) -> None:
    if not isinstance(sth, dict):
        raise UserError("signed tree head: expected a JSON object")
    for name in _FIELDS:
        if name not in sth:
            raise UserError(f"signed tree head: missing field '{name}'")
    if sth["version"] != 1:
        raise UserError(f"signed tree head: field 'version': expected 1, got {sth['version']!r}")
    size = sth["tree_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UserError("signed tree head: field 'tree_size': expected an integer >= 0")
    for name, pattern, what in (
        ("root_hash", _HEX64, "64 lowercase hex digits"),
        ("key_id", _HEX64, "64 lowercase hex digits"),
        ("signature", _HEX128, "128 lowercase hex digits"),
    ):
        if not isinstance(sth[name], str) or not pattern.match(sth[name]):
            raise UserError(f"signed tree head: field '{name}': expected {what}")
    if not isinstance(sth["timestamp"], str):
        raise UserError("signed tree head: field 'timestamp': expected a string")


def verify_tree_head(sth: Any, public_key: Ed25519PublicKey) -> bool:
    """True iff ``sth`` is well formed, names ``public_key``'s key id and its signature over
    :func:`signed_bytes` verifies with ``public_key``. A malformed STH raises
    :class:`UserError` (bad input, exit 2); a well-formed one that does not verify gives False."""
    _check_shape(sth)
    if sth["key_id"] != key_id(public_key):
        return False
    msg = signed_bytes(sth["tree_size"], sth["root_hash"], sth["timestamp"], sth["key_id"])
    try:
        public_key.verify(bytes.fromhex(sth["signature"]), msg)
    except InvalidSignature:
        return False
    return True
