"""``docket log head`` / ``docket log key`` on both backends: the STH covers exactly the
documented leaves of the journal and cost chains, verifies with the printed public key, and the
head after an append is provably an extension of the earlier one. The leaves are read from
the stored leaf table (revision 0005) and rebuilt here by hand from the chain rows."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from docketml.ledger.integrity.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
)
from docketml.ledger.integrity.sth import load_public_key, verify_tree_head


def _leaves_by_hand(url: str) -> list[bytes]:
    """The documented leaf bytes (docs/transparency.md), built from raw SQL rows of the journal
    and cost chains (not the library's query), in record-time order; also checks that the
    stored leaf table holds exactly these bytes, position by position."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [
                (str(at), "journal", seq, h)
                for at, seq, h in conn.execute(text("SELECT at, seq, hash FROM journal_entries"))
            ] + [
                (str(at), "cost", seq, h)
                for at, seq, h in conn.execute(text("SELECT at, seq, hash FROM costs"))
            ]
            stored = [
                leaf.encode()
                for (leaf,) in conn.execute(text("SELECT leaf FROM log_leaves ORDER BY position"))
            ]
    finally:
        engine.dispose()
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    leaves = [
        ('{"hash":"%s","kind":"%s","seq":%d}' % (h, kind, seq)).encode()  # noqa: UP031
        for _, kind, seq, h in rows
    ]
    assert stored == leaves
    return leaves


def test_log_head_signed_over_the_chains(
    docket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:  # noqa: ANN001
    key_path = tmp_path / "keys" / "sth.pem"
    monkeypatch.setenv("DOCKET_SIGNING_KEY", str(key_path))

    missing = docket("log", "head")
    assert missing.exit_code == 2
    assert "no signing key" in missing.output and "Traceback" not in missing.output

    created = docket("log", "key", "--create", "--json")
    assert created.exit_code == 0, created.output
    info = json.loads(created.output)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    pub = load_public_key(info["public_key_pem"])
    assert docket("log", "key", "--create").exit_code == 2  # never replaces a key

    empty = json.loads(docket("log", "head", "--json").output)
    assert empty["tree_size"] == 0 and empty["root_hash"] == EMPTY_ROOT.hex()
    assert verify_tree_head(empty, pub)

    assert docket("journal", "add", "--title", "t1", "--obs", "o").exit_code == 0
    first = json.loads(docket("log", "head", "--json").output)
    assert first["tree_size"] == 1

    assert docket("cost", "add", "--hardware", "a40", "--usd", "0.18").exit_code == 0
    assert docket("journal", "add", "--title", "t2", "--obs", "o").exit_code == 0
    out = tmp_path / "sth.json"
    result = docket("log", "head", "--out", str(out))
    assert result.exit_code == 0, result.output
    second = json.loads(out.read_text())
    assert second["tree_size"] == 3
    assert second["root_hash"] in result.output
    assert verify_tree_head(second, pub)

    leaves = _leaves_by_hand(docket.url)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    assert len(leaves) == 3 and b'"kind":"cost"' in leaves[1]
    assert root_hash(hashes).hex() == second["root_hash"]
    assert root_hash(hashes[:1]).hex() == first["root_hash"]
    proof = consistency_proof(hashes, 1)
    assert verify_consistency(
        1, 3, bytes.fromhex(first["root_hash"]), bytes.fromhex(second["root_hash"]), proof
    )

    # computing a head writes nothing: the same head again (new timestamp) and the same rows
    again = json.loads(docket("log", "head", "--json").output)
    assert (again["tree_size"], again["root_hash"]) == (3, second["root_hash"])
    assert _leaves_by_hand(docket.url) == leaves


def test_log_head_bad_key_file(docket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key\n")
    monkeypatch.setenv("DOCKET_SIGNING_KEY", str(bad))
    result = docket("log", "head")
    assert result.exit_code == 2
    assert "bad.pem" in result.output and "Traceback" not in result.output
