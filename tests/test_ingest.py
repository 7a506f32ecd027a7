"""``docket ingest``: every bad row reported with its line, nothing written unless all valid."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.models import ObservationRow, RunRow

TABLES = (
    "protocols",
    "sign_checks",
    "runs",
    "observations",
    "metrics",
    "run_texts",
    "verdicts",
    "costs",
    "journal_entries",
)

REGIME_YAML = """\
docket: 1
id: ingest-test
title: ingest test
seed: 3
hypotheses:
  - {id: H1, statement: the entropy flags OOD, rule: rw}
signals:
  s_pos: {higher_means: positive}
  s_conf: {higher_means: negative, role: baseline}
  s_diag: {higher_means: positive, role: diagnostic}
labels: {source: regime, positive: ood, negative: in_domain, reference: in_domain}
groups: [in_domain, ood_a, ood_b]
decision_rules:
  rw:
    kind: regime_wins
    candidates: [s_pos]
    margin: 0.02
    ci: {resamples: 200, seed: 1}
    verdicts:
      PROVEN: {min_wins: 2}
      PARTIAL: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
jobs:
  - {name: probe, kind: synthetic}
"""

JUDGED_YAML = REGIME_YAML.replace("id: ingest-test", "id: ingest-judged").replace(
    "labels: {source: regime, positive: ood, negative: in_domain, reference: in_domain}",
    "labels: {source: judged, positive: failure, negative: ok}",
)


def counts(url: str) -> dict[str, int]:
    led = open_ledger(url)
    try:
        with led.session() as s:
            return {t: s.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in TABLES}
    finally:
        led.engine.dispose()


def frozen(docket, tmp_path: Path, yaml_text: str = REGIME_YAML) -> str:
    path = tmp_path / "proto.yaml"
    path.write_text(yaml_text)
    r = docket("protocol", "register", str(path))
    assert r.exit_code == 0, r.output
    pid = "ingest-test" if "id: ingest-test" in yaml_text else "ingest-judged"
    r = docket("protocol", "freeze", pid)
    assert r.exit_code == 0, r.output
    return pid


def good_rows(n: int = 6) -> list[dict]:
    rows = []
    for g in ("in_domain", "ood_a", "ood_b"):
        for i in range(n):
            shift = 0.0 if g == "in_domain" else 1.0
            rows.append(
                {
                    "group": g,
                    "item": f"{g}-{i}",
                    "label": "" if i % 2 else ("in_domain" if g == "in_domain" else "ood"),
                    "signals": {
                        "s_pos": shift + i * 0.1,
                        "s_conf": 1.0 - shift + i * 0.05,
                        "s_diag": float(i),
                    },
                }
            )
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_valid_jsonl_and_csv_are_recorded_as_runs(docket, tmp_path: Path) -> None:
    pid = frozen(docket, tmp_path)
    jsonl = write_jsonl(tmp_path / "res.jsonl", good_rows())
    r = docket("ingest", pid, str(jsonl), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["items"] == 18 and data["observations"] == 54 and data["job"] == "ingest"
    assert data["file_sha256"] == hashlib.sha256(jsonl.read_bytes()).hexdigest()

    csv_path = tmp_path / "res.csv"
    lines = ["group,item,label,s_pos,s_conf"]
    for row in good_rows():
        lab = row["label"]
        lines.append(
            f"{row['group']},{row['item']},{lab},{row['signals']['s_pos']},"
            f"{row['signals']['s_conf']}"
        )
    csv_path.write_text("\n".join(lines) + "\n")
    r = docket("ingest", pid, str(csv_path), "--job", "probe")
    assert r.exit_code == 0, r.output
    assert "ingested 18 items x 2 signals (36 observations)" in r.output

    led = open_ledger(docket.url)
    try:
        with led.session() as s:
            runs = list(s.scalars(select(RunRow).order_by(RunRow.id)))
            assert [(x.job, x.source, x.status) for x in runs] == [
                ("ingest", "ingest", "succeeded"),
                ("probe", "ingest", "succeeded"),
            ]
            assert runs[0].input_sha256 == data["file_sha256"]
            n = s.scalar(select(func.count()).select_from(ObservationRow))
            assert n == 54 + 36
            labels = dict(
                s.execute(
                    select(ObservationRow.group, ObservationRow.label).where(
                        ObservationRow.run_id == runs[1].id
                    )
                ).all()
            )
            # regime labels: the group decides (empty label cells are filled in)
            assert labels == {"in_domain": 0, "ood_a": 1, "ood_b": 1}
    finally:
        led.engine.dispose()


def test_every_bad_row_is_reported_and_nothing_is_written(docket, tmp_path: Path) -> None:
    pid = frozen(docket, tmp_path)
    rows: list = good_rows(3)
    sig = {"s_pos": 1.0, "s_conf": 0.5, "s_diag": 0.0}
    rows += [
        '{"group": "ood_a", "item": "x1", "signals": {"s_pos": NaN, "s_conf": 1, "s_diag": 0}}',
        {"group": "ood_a", "item": "x2", "signals": {"s_pos": 1.0, "s_diag": 0.0}},
        {"group": "ood_a", "item": "x3", "signals": {**sig, "s_other": 2.0}},
        {"group": "nowhere", "item": "x4", "signals": sig},
        {"group": "ood_b", "item": "ood_b-0", "signals": sig},
        {"group": "ood_b", "item": "x6", "signals": {**sig, "s_conf": "abc"}},
        {"group": "ood_b", "item": "x7", "label": "maybe", "signals": sig},
        '{"group": "ood_b", "item": "x8", "signals": {"s_pos": 1.0,',
        '{"group": "ood_b", "item": "x9", "signals": {"s_pos": Infinity, "s_conf": 1, '
        '"s_diag": 1}}',
        {"group": "in_domain", "item": "x10", "label": "ood", "signals": sig},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    before = counts(docket.url)
    r = docket("ingest", pid, str(path))
    assert r.exit_code == 2, r.output
    out = r.output
    expected = {
        10: "signal 's_pos': value nan is not finite",
        11: "missing signal(s) s_conf",
        12: "unknown signal 's_other'",
        13: "unknown group 'nowhere'",
        14: "duplicate item 'ood_b-0' in group 'ood_b' (first on line 7)",
        15: "signal 's_conf': non-numeric value 'abc'",
        16: "bad label 'maybe'",
        17: "malformed JSON",
        18: "signal 's_pos': value inf is not finite",
        19: "label 'ood' contradicts the regime: group 'in_domain' is the reference",
    }
    for line, message in expected.items():
        assert f"{path}:{line}: {message}" in out, (line, out)
    assert "10 problem(s); nothing was recorded" in out
    assert counts(docket.url) == before


def test_csv_problems_with_lines(docket_sqlite, tmp_path: Path) -> None:
    docket = docket_sqlite
    pid = frozen(docket, tmp_path, JUDGED_YAML)
    path = tmp_path / "bad.csv"
    path.write_text(
        "group,item,label,s_pos,s_conf\n"
        "ood_a,1,failure,0.5,0.2\n"  # 2 ok
        "ood_a,2,ok,nan,0.2\n"  # 3 NaN
        "ood_a,3,,0.1,0.2\n"  # 4 judged labels are required
        "ood_a,4,1,,0.2\n"  # 5 missing value
        "ood_a,5,0,x,0.2\n"  # 6 non-numeric
        "ood_a,6,0,0.1\n"  # 7 wrong field count
        "ood_a,1,0,0.1,0.3\n"  # 8 duplicate
    )
    before = counts(docket.url)
    r = docket("ingest", pid, str(path))
    assert r.exit_code == 2
    for line, msg in [
        (3, "signal 's_pos': value 'nan' is not finite"),
        (4, "missing label: this protocol's labels are judged"),
        (5, "missing signal(s) s_pos"),
        (6, "signal 's_pos': non-numeric value 'x'"),
        (7, "expected 5 fields, found 4"),
        (8, "duplicate item '1' in group 'ood_a' (first on line 2)"),
    ]:
        assert f"{path}:{line}: {msg}" in r.output, (line, r.output)
    assert counts(docket.url) == before
    # an unknown signal column is reported on the header line
    path.write_text("group,item,label,s_pos,bogus\nood_a,1,1,0.5,0.2\n")
    r = docket("ingest", pid, str(path))
    assert r.exit_code == 2 and f"{path}:1: unknown signal column 'bogus'" in r.output


def test_not_frozen_is_refused_with_exit_1(docket_sqlite, tmp_path: Path) -> None:
    path = tmp_path / "proto.yaml"
    path.write_text(REGIME_YAML)
    assert docket_sqlite("protocol", "register", str(path)).exit_code == 0
    before = counts(docket_sqlite.url)
    r = docket_sqlite("ingest", "ingest-test", str(write_jsonl(tmp_path / "r.jsonl", good_rows())))
    assert r.exit_code == 1
    assert "not frozen" in r.output and "docket protocol freeze ingest-test" in r.output
    assert counts(docket_sqlite.url) == before


def test_unknown_job_and_required_signals(docket_sqlite, tmp_path: Path) -> None:
    pid = frozen(docket_sqlite, tmp_path)
    path = write_jsonl(tmp_path / "r.jsonl", good_rows())
    r = docket_sqlite("ingest", pid, str(path), "--job", "nope")
    assert r.exit_code == 2 and "--job 'nope' is not a job of ingest-test" in r.output
    # a rule reads s_conf (the baseline): a file without it anywhere is refused on every row
    rows = [{**row, "signals": {"s_pos": 1.0}} for row in good_rows(2)]
    r = docket_sqlite("ingest", pid, str(write_jsonl(tmp_path / "r2.jsonl", rows)))
    assert r.exit_code == 2
    assert "r2.jsonl:1: missing signal(s) s_conf (read by this protocol's rules)" in r.output
    assert "6 problem(s)" in r.output


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file_is_refused(docket_sqlite, tmp_path: Path, content: str) -> None:
    pid = frozen(docket_sqlite, tmp_path)
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    r = docket_sqlite("ingest", pid, str(path))
    assert r.exit_code == 2 and "no result rows" in r.output
