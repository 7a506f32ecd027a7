"""Ed25519 signed tree heads: key handling (0600, env/config path), signing, verification and
its rejections. The signature is checked with the ``cryptography`` primitive directly over the
documented byte string, so the documented format is what is tested."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from docketml.ledger.errors import UserError
from docketml.ledger.integrity.merkle import leaf_hash, root_hash
from docketml.ledger.integrity.sth import (
    create_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
    sign_tree_head,
    signing_key_path,
    verify_tree_head,
)

ROOT = root_hash([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])


def test_key_path_env_and_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKET_SIGNING_KEY", str(tmp_path / "k.pem"))
    assert signing_key_path() == tmp_path / "k.pem"
    monkeypatch.delenv("DOCKET_SIGNING_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert signing_key_path() == tmp_path / "cfg" / "docket" / "signing_key.pem"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert signing_key_path() == tmp_path / "home" / ".config" / "docket" / "signing_key.pem"


def test_create_key_0600_and_never_overwrites(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DOCKET_SIGNING_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    key = create_key()
    path = tmp_path / "cfg" / "docket" / "signing_key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key()
    assert key_id(loaded) == key_id(key)
    before = path.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        create_key()
    assert path.read_bytes() == before


def test_load_key_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no signing key"):
        load_private_key(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    with pytest.raises(UserError, match="bad.pem"):
        load_private_key(bad)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = tmp_path / "ec.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(UserError, match="Ed25519"):
        load_private_key(other)


def test_sign_and_verify_documented_bytes() -> None:
    key = Ed25519PrivateKey.generate()
    sth = sign_tree_head(3, ROOT, key, timestamp="2026-01-02T03:04:05.000000Z")
    assert sth["tree_size"] == 3 and sth["root_hash"] == ROOT.hex()
    # The documented byte string, built here by hand, is what the signature covers.
    body = (
        '{"key_id":"' + key_id(key) + '","root_hash":"' + ROOT.hex() + '",'
        '"timestamp":"2026-01-02T03:04:05.000000Z","tree_size":3,"version":1}'
    )
    key.public_key().verify(bytes.fromhex(sth["signature"]), b"docket-sth-v1\n" + body.encode())
    pub = load_public_key(public_key_pem(key))
    assert verify_tree_head(sth, pub)
    # survives a JSON round trip (what a user keeps in git)
    assert verify_tree_head(json.loads(json.dumps(sth)), pub)


def test_default_timestamp_is_utc() -> None:
    sth = sign_tree_head(0, root_hash([]), Ed25519PrivateKey.generate())
    assert sth["timestamp"].endswith("Z") and "T" in sth["timestamp"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tree_size", 4),
        ("root_hash", root_hash([leaf_hash(b"a")]).hex()),
        ("timestamp", "2026-01-02T03:04:06.000000Z"),
    ],
)
def test_any_changed_field_fails(field: str, value: object) -> None:
    key = Ed25519PrivateKey.generate()
    sth = sign_tree_head(3, ROOT, key, timestamp="2026-01-02T03:04:05.000000Z")
    sth[field] = value
    assert not verify_tree_head(sth, key.public_key())


def test_swapped_key_and_flipped_signature_fail() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sth = sign_tree_head(3, ROOT, key)
    assert not verify_tree_head(sth, other.public_key())
    # a head re-signed by another key but claiming the first key's id
    forged = sign_tree_head(3, ROOT, other, timestamp=sth["timestamp"])
    forged["key_id"] = sth["key_id"]
    assert not verify_tree_head(forged, key.public_key())
    flipped = dict(sth)
    sig = bytearray(bytes.fromhex(sth["signature"]))
    sig[0] ^= 1
    flipped["signature"] = sig.hex()
    assert not verify_tree_head(flipped, key.public_key())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("signature"), "missing field 'signature'"),
        (lambda s: s.__setitem__("tree_size", "3"), "'tree_size'"),
        (lambda s: s.__setitem__("tree_size", True), "'tree_size'"),
        (lambda s: s.__setitem__("root_hash", "ab"), "'root_hash'"),
        (lambda s: s.__setitem__("version", 2), "'version'"),
        (lambda s: s.__setitem__("signature", "zz" * 64), "'signature'"),
    ],
)
def test_malformed_sth_is_user_error(mutate, message: str) -> None:  # noqa: ANN001
    key = Ed25519PrivateKey.generate()
    sth = sign_tree_head(3, ROOT, key)
    mutate(sth)
    with pytest.raises(UserError, match=message):
        verify_tree_head(sth, key.public_key())
    with pytest.raises(UserError, match="JSON object"):
        verify_tree_head([sth], key.public_key())


def test_docket_init_creates_the_key_once_with_0600(
    docket_sqlite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``docket init`` makes the signing key if there is none (0600, public key beside it, 0644)
    and keeps it on the next init; ``--no-key`` makes none."""
    key = tmp_path / "keys" / "sk.pem"
    monkeypatch.setenv("DOCKET_SIGNING_KEY", str(key))
    first = json.loads(docket_sqlite("init", "--json").output)["signing_key"]
    assert first["created"] is True and first["path"] == str(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = Path(first["public_key_path"])
    assert pub.read_text() == first["public_key"] and stat.S_IMODE(pub.stat().st_mode) == 0o644
    before = key.read_bytes()
    second = json.loads(docket_sqlite("init", "--json").output)["signing_key"]
    assert second["created"] is False and second["key_id"] == first["key_id"]
    assert key.read_bytes() == before
    other = tmp_path / "other.pem"
    monkeypatch.setenv("DOCKET_SIGNING_KEY", str(other))
    plain = json.loads(docket_sqlite("init", "--no-key", "--json").output)
    assert "signing_key" not in plain and not other.exists()
    text = docket_sqlite("init").output
    assert "signing key created" in text and str(other) in text
