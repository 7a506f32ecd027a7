"""Receipts (``docket log receipt`` / ``docket verify``), kept heads (``docket log consistency``,
``docket audit --against``) and the head a verdict records, on SQLite and PostgreSQL.

The receipt's inclusion proof is also checked with a verifier written here from the recursive
definition of RFC 9162 2.1.1/2.1.3 (not the library's iterative algorithm). Tampering is done as
an attacker with the triggers dropped, on the rows the log's leaves are made of.

The attacker of :func:`_drop_last_journal_row` and :func:`_rewrite_protocol_bound` is a careful
one: besides the records, they rewrite the stored log itself (``log_leaves``, and every node of
``log_nodes`` recomputed), so that nothing inside the ledger disagrees; only a head kept outside
it can tell.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from test_merkle_log import _drop, _rebuild_nodes, _restore  # the careful forger's tools

from docketml.ledger.integrity.leaves import leaf_body
from docketml.ledger.integrity.sth import (
    load_public_key,
    public_key_pem,
    sign_tree_head,
    verify_tree_head,
)
from docketml.ledger.store import merkle_log
from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.models import ProtocolRow, SignCheckRow
from docketml.protocols.loader import load_protocol_text

STUDY = """\
docket: 1
id: receipted
title: Receipted study
hypotheses:
  - {id: H1, statement: s separates the classes, rule: r}
signals:
  s: {higher_means: positive}
labels: {source: judged}
groups: [g1]
decision_rules:
  r:
    kind: threshold
    statistic: auroc
    signal: s
    job: synth
    op: ">="
    bound: 0.6
    ci: {resamples: 200, seed: 1}
jobs:
  - name: synth
    kind: synthetic
    params: {groups: [g1], signals: {s: positive}, n_per_class: 20, effect: 2.0}
"""


# ---------------------------------------------------------------------------------------------
# An independent RFC 9162 inclusion check, from the recursive definitions
# ---------------------------------------------------------------------------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _ref_root(index: int, size: int, leaf_hash: bytes, path: list[bytes]) -> bytes:
    """The root ``PATH(index, D[size])`` implies (2.1.3.1: PATH(m, D[n]) = PATH(m, D[0:k]) :
    MTH(D[k:n]) for m < k, else PATH(m - k, D[k:n]) : MTH(D[0:k]); the last element is the
    sibling nearest the root)."""
    if size == 1:
        assert not path and index == 0
        return leaf_hash
    k = 1
    while k * 2 < size:
        k *= 2
    assert path, "proof too short"
    if index < k:
        return _h(b"\x01" + _ref_root(index, k, leaf_hash, path[:-1]) + path[-1])
    return _h(b"\x01" + path[-1] + _ref_root(index - k, size - k, leaf_hash, path[:-1]))


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def keyed(docket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """A ledger (each backend) with its own signing key, ``receipted`` registered and frozen,
    then a journal entry (so the freeze is not the only leaf)."""
    monkeypatch.setenv("DOCKET_SIGNING_KEY", str(tmp_path / "keys" / "sk.pem"))
    created = docket("log", "key", "--create", "--json")
    assert created.exit_code == 0, created.output
    # what the owner hands a reader: the printed public key, saved as a file
    _pub(tmp_path).write_text(json.loads(created.stdout)["public_key_pem"], encoding="ascii")
    (tmp_path / "receipted.yaml").write_text(STUDY, encoding="utf-8")
    for args in (
        ("protocol", "register", "receipted.yaml"),
        ("protocol", "freeze", "receipted"),
        ("journal", "add", "--protocol", "receipted", "--title", "frozen", "--obs", "o"),
    ):
        result = docket(*args)
        assert result.exit_code == 0, (args, result.output)
    return docket


def _pub(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "sk.pub.pem"


def _receipt(docket, tmp_path: Path, name: str = "receipt.json") -> dict:  # noqa: ANN001
    out = tmp_path / name
    result = docket("log", "receipt", "receipted", "--out", str(out))
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def _write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def _verify(docket, receipt: Path, protocol: Path, key: Path | None, *extra: str):  # noqa: ANN001, ANN202
    args = ["verify", str(receipt), "--protocol", str(protocol), *extra]
    if key is not None:
        args += ["--public-key", str(key)]
    return docket(*args)


LOG_TABLES = ["log_leaves", "log_nodes"]


def _drop_last_journal_row(url: str) -> None:
    """Truncate the log's tail: delete the newest journal row and its leaf (the last one), rebuild
    the nodes, triggers dropped and restored."""
    led = open_ledger(url)
    try:
        _drop(led, ["journal_entries", *LOG_TABLES])
        with led.engine.begin() as conn:
            (seq,) = conn.execute(text("SELECT MAX(seq) FROM journal_entries")).one()
            (last,) = conn.execute(text("SELECT MAX(position) FROM log_leaves")).one()
            kind = conn.execute(
                text("SELECT kind FROM log_leaves WHERE position = :p"), {"p": last}
            ).scalar()
            assert kind == "journal"
            conn.execute(text("DELETE FROM journal_entries WHERE seq = :s"), {"s": seq})
            conn.execute(text("DELETE FROM log_leaves WHERE position = :p"), {"p": last})
        _rebuild_nodes(led)
        _restore(led, ["journal_entries", *LOG_TABLES])
    finally:
        led.engine.dispose()


def _rewrite_protocol_bound(url: str, new_bound: str) -> str:
    """The attack of issue 14 -- rewrite the frozen protocol's bound, recompute its canonical
    JSON and sha256 (and the sign-check's sha256 so "frozen means sign-checked" still holds),
    rewrite their two leaves in the documented format and every node, restore the triggers.
    Returns the new YAML."""
    led = open_ledger(url)
    try:
        with led.engine.connect() as conn:
            (yaml_text,) = conn.execute(
                text("SELECT yaml_text FROM protocols WHERE protocol_id = 'receipted'")
            ).one()
        forged = yaml_text.replace("bound: 0.6", f"bound: {new_bound}")
        loaded = load_protocol_text(forged)
        _drop(led, ["protocols", "sign_checks", *LOG_TABLES])
        with led.engine.begin() as conn:
            (old_sha,) = conn.execute(
                text("SELECT sha256 FROM protocols WHERE protocol_id = 'receipted'")
            ).one()
            conn.execute(
                text(
                    "UPDATE protocols SET yaml_text = :y, canonical_json = :c, sha256 = :s "
                    "WHERE protocol_id = 'receipted'"
                ),
                {"y": forged, "c": loaded.canonical, "s": loaded.sha256},
            )
            conn.execute(
                text("UPDATE sign_checks SET protocol_sha256 = :s WHERE protocol_sha256 = :o"),
                {"s": loaded.sha256, "o": old_sha},
            )
        with led.session() as session:
            row = session.query(ProtocolRow).filter_by(protocol_id="receipted").one()
            forged_leaves = {("protocol", row.id): merkle_log.protocol_leaf(session, row)}
            for check in session.query(SignCheckRow).filter_by(protocol_sha256=loaded.sha256):
                forged_leaves[("signcheck", check.id)] = merkle_log.signcheck_leaf(check)
            session.rollback()
        with led.engine.begin() as conn:
            for (kind, rid), leaf in forged_leaves.items():
                conn.execute(
                    text(
                        "UPDATE log_leaves SET leaf = :l, leaf_hash = :h "
                        "WHERE kind = :k AND record_id = :r"
                    ),
                    {"l": leaf.decode(), "h": _h(b"\x00" + leaf).hex(), "k": kind, "r": rid},
                )
        _rebuild_nodes(led)
        _restore(led, ["protocols", "sign_checks", *LOG_TABLES])
        return forged
    finally:
        led.engine.dispose()


# ---------------------------------------------------------------------------------------------
# Receipts
# ---------------------------------------------------------------------------------------------


def test_receipt_round_trip_verifies_offline(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    receipt = _receipt(keyed, tmp_path)
    head = json.loads(keyed("log", "head", "--json").output)
    sth = receipt["sth"]
    assert (sth["tree_size"], sth["root_hash"]) == (head["tree_size"], head["root_hash"])
    assert sth["tree_size"] == 3  # the sign-check, the freeze and the journal entry
    pub = load_public_key(_pub(tmp_path).read_text())
    assert verify_tree_head(sth, pub)
    body = leaf_body(receipt["leaf"].encode("ascii"))
    assert body["kind"] == "protocol" and body["protocol_id"] == "receipted"
    assert body["sha256"] == load_protocol_text(STUDY).sha256
    # the proof, checked with the recursive definition written above
    leaf_hash = _h(b"\x00" + receipt["leaf"].encode("ascii"))
    proof = [bytes.fromhex(p) for p in receipt["inclusion_proof"]]
    assert (
        _ref_root(receipt["leaf_index"], sth["tree_size"], leaf_hash, proof).hex()
        == (sth["root_hash"])
    )
    # the receipt printed to stdout is the same kind of object
    printed = json.loads(keyed("log", "receipt", "receipted").output)
    assert printed["leaf"] == receipt["leaf"] and printed["leaf_index"] == receipt["leaf_index"]

    # offline, as a reader: a fresh process, DOCKET_DB pointing at a ledger that must not appear
    reader = tmp_path / "reader"
    reader.mkdir()
    never = tmp_path / "never" / "ledger.db"
    env = {
        **os.environ,
        "DOCKET_DB": f"sqlite:///{never}",
        "XDG_CONFIG_HOME": str(reader / "cfg"),
    }
    env.pop("DOCKET_SIGNING_KEY", None)
    cmd = [
        sys.executable,
        "-m",
        "docketml.ledger.cli.main",
        "verify",
        str(tmp_path / "receipt.json"),
    ]
    cmd += ["--protocol", str(tmp_path / "receipted.yaml"), "--public-key", str(_pub(tmp_path))]
    done = subprocess.run(cmd + ["--json"], cwd=reader, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] and out["key_source"] == "given" and out["warnings"] == []
    assert [c["name"] for c in out["checks"]] == ["leaf", "protocol", "inclusion", "signature"]
    assert all(c["ok"] for c in out["checks"])
    assert not never.parent.exists(), "docket verify created a ledger directory"
    assert not (reader / ".docket").exists() and not (reader / "cfg").exists()

    human = _verify(keyed, tmp_path / "receipt.json", tmp_path / "receipted.yaml", _pub(tmp_path))
    assert human.exit_code == 0 and "VERIFIED" in human.output and "UNTRUSTED" not in human.output
    # without a trusted key it still checks, and says loudly whose key it used
    loose = _verify(keyed, tmp_path / "receipt.json", tmp_path / "receipted.yaml", None)
    assert loose.exit_code == 0, loose.output
    assert "NO TRUSTED KEY" in loose.output and "VERIFIED, UNTRUSTED KEY" in loose.output
    as_json = _verify(keyed, tmp_path / "receipt.json", tmp_path / "receipted.yaml", None, "--json")
    assert json.loads(as_json.stdout)["key_source"] == "receipt"
    assert "NO TRUSTED KEY" in as_json.stderr  # also loud when the output is JSON


def test_verify_receipt_imports_no_ledger_store(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    _receipt(keyed, tmp_path)
    code = (
        "import json, sys; from pathlib import Path\n"
        "from docketml.ledger.integrity.receipt import verify_receipt, read_public_key_file\n"
        f"r = json.loads(Path({str(tmp_path / 'receipt.json')!r}).read_text())\n"
        f"k = read_public_key_file(Path({str(_pub(tmp_path))!r}))\n"
        f"v = verify_receipt(r, {str(tmp_path / 'receipted.yaml')!r}, k)\n"
        "bad = [m for m in sys.modules if m.startswith(('sqlalchemy', 'docketml.ledger.store',"
        " 'docketml.ledger.integrity.log', 'psycopg', 'alembic'))]\n"
        "print(json.dumps({'ok': v.ok, 'bad': bad}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "bad": []}


def test_the_verify_command_imports_no_store_and_no_scipy(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    """``docket verify`` through the real CLI entry point: the reader's command loads neither
    the store (SQLAlchemy, Alembic, a driver) nor the statistics (SciPy) nor torch."""
    _receipt(keyed, tmp_path)
    args = [
        "verify",
        str(tmp_path / "receipt.json"),
        "--protocol",
        str(tmp_path / "receipted.yaml"),
        "--public-key",
        str(_pub(tmp_path)),
    ]
    code = (
        "import json, sys\n"
        "from docketml.ledger.cli.main import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    status = e.code\n"
        "heavy = ('sqlalchemy', 'alembic', 'psycopg', 'scipy', 'torch',"
        " 'docketml.ledger.store.db')\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules if m.startswith(heavy)})\n"
        "print(json.dumps({'status': status, 'bad': bad}), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"status": 0, "bad": []}, done.stdout + done.stderr
    assert "VERIFIED" in done.stdout


def test_tampered_receipts_are_rejected_with_the_reason(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    receipt = _receipt(keyed, tmp_path)
    good = tmp_path / "receipted.yaml"
    pub = _pub(tmp_path)
    assert _verify(keyed, tmp_path / "receipt.json", good, pub).exit_code == 0

    # a comment or a reformatting is not a change of the protocol (canonical sha256) ...
    commented = _write(tmp_path, "commented.yaml", "# a note\n" + STUDY.replace(": ", ":  "))
    assert _verify(keyed, tmp_path / "receipt.json", commented, pub).exit_code == 0
    # ... one changed byte of a value is
    changed = _write(tmp_path, "changed.yaml", STUDY.replace("bound: 0.6", "bound: 0.7"))
    assert len(changed.read_bytes()) == len(good.read_bytes())
    result = _verify(keyed, tmp_path / "receipt.json", changed, pub, "--json")
    assert result.exit_code == 3
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["protocol"]["ok"] and checks["inclusion"]["ok"] and checks["signature"]["ok"]
    assert "protocol check failed" in result.stderr and "not the frozen protocol" in result.stderr

    attacker = Ed25519PrivateKey.generate()
    attacker_pem = _write(tmp_path, "attacker.pub.pem", public_key_pem(attacker))

    def rejected(name: str, data: dict, key: Path | None, failing: set[str], why: str) -> None:
        path = _write(tmp_path, f"{name}.json", data)
        res = _verify(keyed, path, good, key, "--json")
        assert res.exit_code == 3, (name, res.output)
        got = {c["name"] for c in json.loads(res.stdout)["checks"] if not c["ok"]}
        assert got == failing, (name, got)
        assert why in res.stderr, (name, res.stderr)
        assert "Traceback" not in res.output

    # the key inside the receipt swapped for another: the real head does not verify under it
    rejected(
        "swapped-key",
        receipt | {"public_key_pem": public_key_pem(attacker)},
        None,
        {"signature"},
        "signed by another key",
    )
    # a head re-signed by another key (with that key embedded): the reader's key refuses it
    forged_sth = sign_tree_head(
        receipt["sth"]["tree_size"], bytes.fromhex(receipt["sth"]["root_hash"]), attacker
    )
    forged = receipt | {"sth": forged_sth, "public_key_pem": public_key_pem(attacker)}
    rejected("other-key", forged, pub, {"signature"}, "signed by another key")
    # ... which is exactly what trusting the receipt's own key cannot see
    loose = _verify(keyed, _write(tmp_path, "forged.json", forged), good, None)
    assert loose.exit_code == 0 and "NO TRUSTED KEY" in loose.output
    # the attacker's key given as the trusted one verifies the forgery: the key is the trust root
    assert _verify(keyed, tmp_path / "forged.json", good, attacker_pem).exit_code == 0

    # a modified proof (one hex digit)
    proof = list(receipt["inclusion_proof"])
    proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]
    rejected("proof", receipt | {"inclusion_proof": proof}, pub, {"inclusion"}, "inclusion")
    rejected("short-proof", receipt | {"inclusion_proof": []}, pub, {"inclusion"}, "cannot place")
    sibling = receipt["leaf_index"] ^ 1  # same proof length, other side of the tree
    rejected(
        "index", receipt | {"leaf_index": sibling}, pub, {"inclusion"}, "inclusion check failed"
    )
    # a modified leaf, still canonical: another freeze time
    body = leaf_body(receipt["leaf"].encode("ascii"))
    later = json.dumps(
        body | {"frozen_at": "2030-01-01T00:00:00.000000Z"},
        sort_keys=True,
        separators=(",", ":"),
    )
    rejected("leaf", receipt | {"leaf": later}, pub, {"inclusion"}, "the leaf or the proof")
    # a leaf naming the changed protocol's sha256 (the forger's file then matches the leaf)
    swapped = json.dumps(
        body | {"sha256": load_protocol_text(changed.read_text()).sha256},
        sort_keys=True,
        separators=(",", ":"),
    )
    path = _write(tmp_path, "swapped-leaf.json", receipt | {"leaf": swapped})
    res = _verify(keyed, path, changed, pub, "--json")
    assert res.exit_code == 3
    assert {c["name"] for c in json.loads(res.stdout)["checks"] if not c["ok"]} == {"inclusion"}
    # a leaf that is not canonical JSON
    rejected(
        "spaced-leaf",
        receipt | {"leaf": receipt["leaf"].replace(",", ", ", 1)},
        pub,
        {"leaf", "protocol", "inclusion"},
        "not a canonical leaf",
    )
    # a head whose size or root was edited: the signature no longer covers it
    # (+4: a size whose tree gives this leaf a longer path, so the proof no longer fits either;
    # for some sizes a root does not bind the size, which is why the STH signs it)
    grown = receipt | {"sth": receipt["sth"] | {"tree_size": receipt["sth"]["tree_size"] + 4}}
    rejected("size", grown, pub, {"inclusion", "signature"}, "does not verify")


def test_verify_bad_input_is_exit_2_naming_file_and_field(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    receipt = _receipt(keyed, tmp_path)
    good = tmp_path / "receipted.yaml"
    pub = _pub(tmp_path)
    cases = [
        (_write(tmp_path, "not-json.json", "{nope"), "not JSON", pub),
        (_write(tmp_path, "list.json", [1]), "expected a JSON object", pub),
        (
            _write(tmp_path, "no-leaf.json", {k: v for k, v in receipt.items() if k != "leaf"}),
            "missing field 'leaf'",
            pub,
        ),
        (_write(tmp_path, "fmt.json", receipt | {"format": "v0"}), "field 'format'", pub),
        (
            _write(tmp_path, "hex.json", receipt | {"inclusion_proof": ["zz"]}),
            "field 'inclusion_proof[0]'",
            pub,
        ),
        (_write(tmp_path, "idx.json", receipt | {"leaf_index": -1}), "field 'leaf_index'", pub),
        (
            _write(tmp_path, "sth.json", receipt | {"sth": receipt["sth"] | {"root_hash": "x"}}),
            "field 'sth': signed tree head: field 'root_hash'",
            pub,
        ),
        (tmp_path / "receipt.json", "bad.pem", _write(tmp_path, "bad.pem", "not a key")),
        (tmp_path / "missing.json", "missing.json: no such file", pub),
    ]
    for path, why, key in cases:
        res = _verify(keyed, path, good, key)
        assert res.exit_code == 2, (path, res.output)
        named = key.name if why == "bad.pem" else path.name
        assert why in res.stderr and named in res.stderr, (why, res.stderr)
        assert "Traceback" not in res.output
    bad_yaml = _write(tmp_path, "bad.yaml", STUDY.replace("bound: 0.6", "bound: [oops"))
    res = _verify(keyed, tmp_path / "receipt.json", bad_yaml, pub)
    assert res.exit_code == 2 and "bad.yaml" in res.stderr


def test_receipt_of_a_version_and_of_an_unfrozen_protocol(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    assert keyed("log", "receipt", "receipted", "--version", "1").exit_code == 0
    missing = keyed("log", "receipt", "receipted", "--version", "2")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    draft = STUDY.replace("id: receipted", "id: draft")
    _write(tmp_path, "draft.yaml", draft)
    assert keyed("protocol", "register", "draft.yaml").exit_code == 0
    unfrozen = keyed("log", "receipt", "draft")
    assert unfrozen.exit_code == 1 and "not frozen" in unfrozen.output


# ---------------------------------------------------------------------------------------------
# Kept heads
# ---------------------------------------------------------------------------------------------


def _head(docket, tmp_path: Path, name: str) -> Path:  # noqa: ANN001
    out = tmp_path / name
    assert docket("log", "head", "--out", str(out)).exit_code == 0
    return out


def test_log_consistency_after_appends_and_after_a_tail_truncation(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    h2 = _head(keyed, tmp_path, "h2.json")
    base = json.loads(h2.read_text())["tree_size"]
    assert keyed("cost", "add", "--hardware", "a40", "--usd", "0.18").exit_code == 0
    for title in ("a", "b", "c"):  # the last journal row is the last leaf
        assert keyed("journal", "add", "--title", title, "--obs", "o").exit_code == 0
    h6 = _head(keyed, tmp_path, "h6.json")
    size = base + 4
    assert json.loads(h6.read_text())["tree_size"] == size
    for h in (h2, h6):
        res = keyed("log", "consistency", str(h), "--json")
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["ok"] and data["status"] == "consistent" and data["current_size"] == size
    assert keyed("log", "consistency", str(h2), "--public-key", str(_pub(tmp_path))).exit_code == 0

    # a kept head signed by another key proves nothing
    other = Ed25519PrivateKey.generate()
    sth = json.loads(h2.read_text())
    forged = _write(
        tmp_path,
        "forged.json",
        sign_tree_head(sth["tree_size"], bytes.fromhex(sth["root_hash"]), other),
    )
    res = keyed("log", "consistency", str(forged))
    assert res.exit_code == 3 and "not signed by the trusted key" in res.stderr

    # malformed heads: exit 2 naming the file and the field
    bad = _write(tmp_path, "bad.json", sth | {"tree_size": "six"})
    res = keyed("log", "consistency", str(bad))
    assert res.exit_code == 2 and "bad.json" in res.stderr and "'tree_size'" in res.stderr
    res = keyed("log", "consistency", str(_write(tmp_path, "junk.json", "[")))
    assert res.exit_code == 2 and "junk.json" in res.stderr and "not JSON" in res.stderr

    _drop_last_journal_row(keyed.url)
    assert keyed("audit").exit_code == 0  # consistent with itself: only a kept head can tell
    res = keyed("log", "consistency", str(h6), "--json")
    assert res.exit_code == 3
    data = json.loads(res.stdout)
    assert data["status"] == "truncated" and data["current_size"] == size - 1
    assert f"leaves {size - 1}..{size - 1} that it covered are gone (truncated)" in res.stderr
    assert keyed("log", "consistency", str(h2)).exit_code == 0  # the prefix it signed is intact

    # two kept heads: the consistent one narrows where the damage starts
    res = keyed("audit", "--against", str(h2), "--against", str(h6), "--json")
    assert res.exit_code == 3
    report = json.loads(res.stdout)
    assert [h["status"] for h in report["against"]] == ["consistent", "truncated"]
    assert report["checked"]["kept_heads"] == 2
    (finding,) = [f for f in report["findings"] if f["table"] == "log"]
    assert finding["row"] == str(h6)
    assert f"first bad leaf is in {base}..{size - 1}" in finding["problem"]
    assert report["against"][1]["first_bad"] == base
    assert report["against"][1]["last_bad"] == size - 1


def test_rewritten_frozen_protocol_is_found_against_kept_heads(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    h2 = _head(keyed, tmp_path, "h2.json")
    assert keyed("journal", "add", "--title", "later", "--obs", "o").exit_code == 0
    h3 = _head(keyed, tmp_path, "h3.json")
    n2, n3 = (json.loads(h.read_text())["tree_size"] for h in (h2, h3))
    clean = keyed("audit", "--against", str(h2), "--against", str(h3))
    assert clean.exit_code == 0, clean.output
    assert "kept head" in clean.output and "consistent" in clean.output

    forged = _rewrite_protocol_bound(keyed.url, "0.05")
    assert keyed("audit").exit_code == 0  # consistent with itself: only a kept head can tell
    res = keyed("log", "consistency", str(h3), "--json")
    assert res.exit_code == 3
    assert json.loads(res.stdout)["status"] == "rewritten"
    assert f"the log no longer contains the first {n3} leaves that head signed" in res.stderr
    res = keyed("audit", "--against", str(h2), "--against", str(h3), "--json")
    assert res.exit_code == 3
    report = json.loads(res.stdout)
    assert [h["status"] for h in report["against"]] == ["rewritten", "rewritten"]
    problems = [f["problem"] for f in report["findings"] if f["table"] == "log"]
    assert len(problems) == 2
    assert all(f"0..{n2 - 1}" in p or f"0..{n3 - 1}" in p for p in problems), problems
    # a receipt made today proves the forged protocol, under a head that is not h3's, and the
    # original file no longer matches what the log holds
    _write(tmp_path, "forged.yaml", forged)
    receipt = _receipt(keyed, tmp_path, "forged-receipt.json")
    assert receipt["sth"]["root_hash"] != json.loads(h3.read_text())["root_hash"]
    ok = _verify(
        keyed, tmp_path / "forged-receipt.json", tmp_path / "receipted.yaml", _pub(tmp_path)
    )
    assert ok.exit_code == 3
    assert (
        _verify(
            keyed, tmp_path / "forged-receipt.json", tmp_path / "forged.yaml", _pub(tmp_path)
        ).exit_code
        == 0
    )


def test_audit_against_needs_a_readable_key_and_heads(keyed, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    h = _head(keyed, tmp_path, "h.json")
    res = keyed("audit", "--against", str(tmp_path / "gone.json"))
    assert res.exit_code == 2 and "gone.json" in res.stderr
    monkeypatch.setenv("DOCKET_SIGNING_KEY", str(tmp_path / "nokey.pem"))
    res = keyed("audit", "--against", str(h))
    assert res.exit_code == 2 and "--public-key" in res.stderr
    assert keyed("audit", "--against", str(h), "--public-key", str(_pub(tmp_path))).exit_code == 0


# ---------------------------------------------------------------------------------------------
# Verdicts record their head; the report shows the receipt
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def verdicted(keyed) -> Iterator[object]:  # noqa: ANN001
    assert keyed("run", "receipted", "--no-progress").exit_code == 0
    yield keyed


def test_verdict_records_its_head_without_making_a_look_a_verdict(
    verdicted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    docket = verdicted
    before = json.loads(docket("log", "head", "--json").output)
    first = json.loads(docket("verdict", "receipted", "--json").output)
    assert first["recorded"] == "verdict"
    head = first["log_head"]
    assert (head["tree_size"], head["root_hash"]) == (before["tree_size"], before["root_hash"])
    pub = load_public_key(_pub(tmp_path).read_text())
    assert head["sth"] is not None and verify_tree_head(head["sth"], pub)
    assert head["sth"]["root_hash"] == head["root_hash"] and head["unsigned"] is None
    shown = docket("verdict", "receipted")
    # a look: it sees the head after the verdict's own leaf
    now = json.loads(docket("log", "head", "--json").output)
    assert now["tree_size"] == head["tree_size"] + 1
    assert f"log head: size {now['tree_size']}, root {now['root_hash'][:16]}" in shown.output

    led = open_ledger(docket.url)
    try:
        with led.engine.connect() as conn:
            rows = conn.execute(text("SELECT details_json FROM verdicts")).all()
        assert len(rows) == 1 and json.loads(rows[0][0])["log_head"] == head
        # the head moves, the inputs do not: a look, not a new verdict row
        assert docket("journal", "add", "--title", "moved", "--obs", "o").exit_code == 0
        monkeypatch.setenv("DOCKET_SIGNING_KEY", str(tmp_path / "absent.pem"))  # no key now
        second = json.loads(docket("verdict", "receipted", "--json").output)
        assert second["recorded"] == "look" and second["verdict_id"] == first["verdict_id"]
        # the verdict's own leaf and the journal entry
        assert second["log_head"]["tree_size"] == head["tree_size"] + 2
        assert second["log_head"]["sth"] is None and "absent.pem" in second["log_head"]["unsigned"]
        assert second["verdict_log_head"] == head
        with led.engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM verdicts")).scalar() == 1
            # the human `docket verdict` above and this one: two looks
            assert conn.execute(text("SELECT COUNT(*) FROM verdict_looks")).scalar() == 2
    finally:
        led.engine.dispose()
    # the audit's re-derivation does not compare the head: still clean
    monkeypatch.setenv("DOCKET_SIGNING_KEY", str(tmp_path / "keys" / "sk.pem"))
    res = docket("audit")
    assert res.exit_code == 0, res.output


def test_report_shows_the_receipt(verdicted, tmp_path: Path) -> None:  # noqa: ANN001
    docket = verdicted
    assert docket("verdict", "receipted").exit_code == 0
    head = json.loads(docket("log", "head", "--json").output)
    out = tmp_path / "report"
    assert docket("report", "receipted", "--out", str(out)).exit_code == 0, "report failed"
    page = (out / "index.html").read_text()
    section = page[page.index("Transparency log receipt") :]
    section = section[: section.index("Protocol YAML")]
    receipt = json.loads(docket("log", "receipt", "receipted").output)
    assert f'<span class="mono">{receipt["leaf_index"]}</span>' in section
    assert f'<span class="mono">{head["tree_size"]}</span>' in section
    assert head["root_hash"] in section
    assert '<span class="pill ok">verifies</span>' in section
    assert "docket verify receipt.json" in section and "docket log receipt receipted" in section
    assert "The verdict was computed at log head size" in section


def test_receipt_consistency_and_audit_against_write_nothing(keyed, tmp_path: Path) -> None:  # noqa: ANN001
    from sqlalchemy import MetaData, select

    h = _head(keyed, tmp_path, "h.json")
    led = open_ledger(keyed.url)
    try:

        def snapshot() -> dict[str, list[tuple]]:
            meta = MetaData()
            meta.reflect(led.engine)
            with led.engine.connect() as conn:
                return {
                    name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
                    for name, table in meta.tables.items()
                }

        before = snapshot()
        for args in (
            ("log", "receipt", "receipted"),
            ("log", "receipt", "receipted", "--out", str(tmp_path / "r.json")),
            ("log", "consistency", str(h), "--json"),
            ("audit", "--against", str(h), "--json"),
            ("verify", str(tmp_path / "r.json"), "--protocol", str(tmp_path / "receipted.yaml")),
        ):
            result = keyed(*args)
            assert result.exit_code == 0, (args, result.output)
        assert snapshot() == before, "a read-only command wrote to the ledger"
    finally:
        led.engine.dispose()


def test_a_verdicts_recorded_head_catches_a_consistent_rewrite_before_it(verdicted) -> None:  # noqa: ANN001
    """A verdict is a kept head inside the ledger: the careful forger of
    :func:`_rewrite_protocol_bound` (records, leaves and every node rewritten, triggers restored)
    is found by the audit alone once a verdict recorded a head covering the rewritten leaf; a
    later leaf removed past the verdict's head is not blamed on the verdict."""
    docket = verdicted
    recorded = json.loads(docket("verdict", "receipted", "--json").output)
    assert recorded["recorded"] == "verdict"
    assert docket("journal", "add", "--title", "after", "--obs", "o").exit_code == 0
    _drop_last_journal_row(docket.url)  # truncation after the verdict's head: not its finding
    clean = json.loads(docket("audit", "--json").output)
    assert not [f for f in clean["findings"] if f["table"] == "verdicts"], clean["findings"]
    _rewrite_protocol_bound(docket.url, "0.05")
    res = docket("audit", "--json")
    assert res.exit_code == 3
    heads = [
        f
        for f in json.loads(res.stdout)["findings"]
        if f["table"] == "verdicts" and "the log before this verdict was rewritten" in f["problem"]
    ]
    assert [f["row"] for f in heads] == [recorded["verdict_id"]], heads
    size = recorded["log_head"]["tree_size"]
    assert f"of {size} leaves; the first {size} leaves now hash to" in heads[0]["problem"]
