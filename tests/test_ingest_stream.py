"""``docket ingest`` streams its file: the problems it keeps are bounded yet the report is the
whole-file one (count, first ``MAX_PROBLEMS_SHOWN`` in line order, same order within a line),
and a valid file's observations arrive in the ledger in file order."""

from __future__ import annotations

import json

from sqlalchemy import select
from test_ingest import JUDGED_YAML, counts, frozen, write_jsonl

from docketml.ledger.ingest import MAX_PROBLEMS_SHOWN
from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.models import ObservationRow

SIG = {"s_pos": 1.0, "s_conf": 0.5}


def test_many_problems_count_all_show_the_first_in_line_order(docket_sqlite, tmp_path) -> None:
    """3,000 bad rows: problems found while reading (bad label) and after it (duplicates,
    missing signals) are counted in full, and the first 200 by line are shown."""
    docket = docket_sqlite
    pid = frozen(docket, tmp_path, JUDGED_YAML)
    rows: list = []
    expected: list[tuple[int, str]] = []
    for k in range(3000):
        line = k + 1
        if k % 3 == 0:
            rows.append({"group": "ood_a", "item": f"i{k}", "label": "maybe", "signals": SIG})
            expected.append((line, "bad label 'maybe'"))
        elif k % 3 == 1:
            rows.append({"group": "ood_a", "item": f"i{k}", "label": 1, "signals": {"s_pos": 1}})
            expected.append((line, "missing signal(s) s_conf"))
        else:
            rows.append({"group": "ood_a", "item": f"i{k - 2}", "label": 0, "signals": SIG})
            expected.append((line, f"duplicate item 'i{k - 2}' in group 'ood_a' (first on line "
                                   f"{line - 2})"))  # fmt: skip
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    before = counts(docket.url)
    r = docket("ingest", pid, str(path))
    assert r.exit_code == 2
    assert "3000 problem(s); nothing was recorded" in r.output
    shown = [ln for ln in r.output.splitlines() if ln.startswith(f"{path}:")]
    assert len(shown) == MAX_PROBLEMS_SHOWN
    for got, (line, message) in zip(shown, expected, strict=False):
        assert got.startswith(f"{path}:{line}: {message}"), (got, line, message)
    assert f"... and {3000 - MAX_PROBLEMS_SHOWN} more problem(s)" in r.output
    assert counts(docket.url) == before


def test_problems_of_one_line_keep_their_order(docket_sqlite, tmp_path) -> None:
    """A row that is a duplicate, has a bad label, a bad value and misses a signal reports them
    in that order (fields, duplicate, label, values, then the missing signal)."""
    docket = docket_sqlite
    pid = frozen(docket, tmp_path, JUDGED_YAML)
    rows = [
        {"group": "ood_a", "item": "a", "label": 1, "signals": SIG},
        {"group": "ood_a", "item": "a", "label": "maybe", "signals": {"s_pos": "x"}},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    r = docket("ingest", pid, str(path))
    assert r.exit_code == 2
    got = [ln.split(": ", 1)[1] for ln in r.output.splitlines() if ln.startswith(f"{path}:2")]
    assert [g.split(" ")[0] for g in got] == ["duplicate", "bad", "signal", "missing"], got


def test_bad_utf8_anywhere_is_the_one_problem(docket_sqlite, tmp_path) -> None:
    """A bad byte after a broken header is still the file's one problem (as when the whole file
    was decoded first), with its physical line."""
    docket = docket_sqlite
    pid = frozen(docket, tmp_path, JUDGED_YAML)
    path = tmp_path / "bad.csv"
    path.write_bytes(b"grp,item,label,s_pos\nood_a,1,1,0.5\nood_a,2,1,\xff\n")
    r = docket("ingest", pid, str(path))
    assert r.exit_code == 2
    at = path.read_bytes().index(b"\xff")
    assert f"{path}:3: not valid UTF-8 at byte {at}" in r.output
    assert "1 problem(s)" in r.output


def test_valid_file_is_written_in_file_order(docket, tmp_path) -> None:
    """25,000 rows (more than one spool batch and one insert chunk): every observation stored,
    in file order, with its value."""
    pid = frozen(docket, tmp_path, JUDGED_YAML)
    rows = [
        {"group": "ood_b", "item": f"it{k}", "label": k % 2,
         "signals": {"s_pos": k / 7, "s_conf": -k / 3}}
        for k in range(25_000)
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "ok.jsonl", rows)
    r = docket("ingest", pid, str(path), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["observations"] == 50_000
    led = open_ledger(docket.url)
    try:
        with led.session() as s:
            got = s.execute(
                select(ObservationRow.item, ObservationRow.signal, ObservationRow.value).order_by(
                    ObservationRow.id
                )
            ).all()
    finally:
        led.engine.dispose()
    want = [(f"it{k}", sig, k / 7 if sig == "s_pos" else -k / 3)
            for k in range(25_000) for sig in ("s_pos", "s_conf")]  # fmt: skip
    assert [tuple(g) for g in got] == want


def test_spool_that_cannot_be_written_is_exit_4(docket_sqlite, tmp_path, monkeypatch) -> None:
    """The temporary spool's directory refusing the file is the environment's problem (exit
    4, one line naming the directory), and nothing is written."""
    import tempfile

    docket = docket_sqlite
    pid = frozen(docket, tmp_path, JUDGED_YAML)
    path = write_jsonl(tmp_path / "ok.jsonl", [{"group": "ood_a", "item": "a", "label": 1,
                                               "signals": SIG}])  # fmt: skip
    before = counts(docket.url)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    r = docket("ingest", pid, str(path))
    assert r.exit_code == 4, r.output
    assert "cannot write ingest's temporary file in" in r.output and "Traceback" not in r.output
    assert counts(docket.url) == before


def test_file_over_the_limit_is_refused_before_reading(docket_sqlite, tmp_path, monkeypatch):
    """The size limit still holds for a streamed file: exit 2, one line, nothing written."""
    import docketml.ledger.ingest as ingest

    docket = docket_sqlite
    pid = frozen(docket, tmp_path, JUDGED_YAML)
    rows = [{"group": "ood_a", "item": f"i{k}", "label": 1, "signals": SIG} for k in range(20)]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    monkeypatch.setattr(ingest, "MAX_INGEST_BYTES", 300)
    before = counts(docket.url)
    r = docket("ingest", pid, str(path))
    assert r.exit_code == 2, r.output
    assert f"{path}: is larger than 300 bytes" in r.output
    assert counts(docket.url) == before
