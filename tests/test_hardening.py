"""Regression tests for the adversarial probe of v0.1 (issue 16): bad input is exit 2 with one
clear line naming file, line and field; never a traceback, a hang or silent acceptance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from docketml.ledger.cli.main import cli

BASE = """\
docket: 1
id: hard
title: hardening
seed: 7
hypotheses:
  - {id: H1, statement: the candidate wins, rule: wins}
  - {id: H2, statement: the mean is high, rule: high_mean}
signals:
  cand: {higher_means: positive}
  base: {higher_means: negative, role: baseline}
labels: {source: regime, positive: ood, reference: in_domain}
groups: [in_domain, ood_a, ood_b]
decision_rules:
  wins:
    kind: regime_wins
    candidates: [cand]
    margin: 0.02
    ci: {resamples: 1000, seed: 3}
    verdicts:
      PROVEN: {min_wins: 2}
      PARTIAL: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
  high_mean: {kind: threshold, statistic: mean, signal: cand, job: probe, bound: 0.5}
metrics:
  gap: {expr: a - b, direction: lower_is_better}
jobs:
  - {name: train, kind: pretrain, params: {model: tiny}}
  - {name: probe, kind: probe, after: [train]}
claims:
  c1: {job: probe, metric: auroc, expected: 0.8, tolerance: 0.01}
"""


def validate(tmp_path: Path, text: str | bytes, name: str = "p.yaml"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["protocol", "validate", str(path)], catch_exceptions=False)
    return path, result


def refused(tmp_path: Path, text: str | bytes, *fragments: str) -> str:
    """Validate ``text``; assert exit 2, no traceback, every fragment in the first error line."""
    path, result = validate(tmp_path, text)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"{path}:"), first
    for fragment in fragments:
        assert fragment in first, f"{fragment!r} not in {first!r}"
    return first


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_base_is_valid(tmp_path: Path) -> None:
    _, result = validate(tmp_path, BASE)
    assert result.exit_code == 0, result.output


# --- group 1: loader / canonical ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("tolerance: 0.01", 'tolerance: "inf"', "claims.c1.tolerance"),
        ("bound: 0.5", 'bound: "nan"', "decision_rules.high_mean.bound"),
        ("expected: 0.8", 'expected: "-Infinity"', "claims.c1.expected"),
        ("margin: 0.02", 'margin: "0.02"', "decision_rules.wins.margin"),
    ],
)
def test_quoted_numbers_in_float_fields_are_refused(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    text = BASE.replace(old, new)
    refused(tmp_path, text, f":{line_of(text, new)}: {field}:")


def test_long_metric_expression_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    expr = " + ".join(["a"] * 400)
    first = refused(tmp_path, BASE.replace("expr: a - b", f"expr: {expr}"), "metrics.gap.expr")
    assert "levels deep" in first
    # a deeply parenthesised one too (ast.parse itself recurses)
    deep = "(" * 300 + "a" + ")" * 300
    refused(tmp_path, BASE.replace("expr: a - b", f"expr: {deep}"), "metrics.gap.expr")
    # a long but reasonable one is fine and hashes
    ok = " + ".join(["a"] * 60)
    _, result = validate(tmp_path, BASE.replace("expr: a - b", f"expr: {ok}"))
    assert result.exit_code == 0, result.output


def test_aliases_of_a_long_string_are_bounded(tmp_path: Path) -> None:
    big = "x" * 50_000
    text = (
        BASE.replace("title: hardening", f"title: &t {big}")
        + "authors: ["
        + ", ".join(["*t"] * 100)
        + "]\n"
    )
    assert len(text) < 60_000
    first = refused(tmp_path, text, "authors", "characters")
    assert f":{line_of(text, 'authors:')}:" in first


def test_non_regular_files_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)  # opening it for reading would block forever without a writer
    result = CliRunner().invoke(cli, ["protocol", "validate", str(fifo)], catch_exceptions=False)
    assert result.exit_code == 2 and "FIFO" in result.stderr, result.output
    result = CliRunner().invoke(cli, ["protocol", "validate", "/dev/zero"], catch_exceptions=False)
    assert result.exit_code == 2 and "character device" in result.stderr, result.output


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    from docketml.protocols.loader import MAX_BYTES

    first = refused(tmp_path, BASE + "#" * MAX_BYTES + "\n", f"at most {MAX_BYTES}")
    assert "larger than" in first


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_line_numbers_count_physical_newlines(tmp_path: Path, sep: str) -> None:
    text = BASE.replace("title: hardening", f'title: "hard{sep}ening"').replace(
        "bound: 0.5", "bound: high"
    )
    refused(tmp_path, text, f":{line_of(text, 'bound: high')}: decision_rules.high_mean.bound:")


def test_form_feed_is_refused_on_its_physical_line(tmp_path: Path) -> None:
    text = BASE.replace("seed: 7", "seed: 7 # page\x0cbreak")
    refused(tmp_path, text, f":{line_of(text, 'seed: 7')}:", "control character 0x0c")


INGEST_YAML = """\
docket: 1
id: hard-ingest
title: ingest hardening
hypotheses:
  - {id: H1, statement: the candidate wins, rule: wins}
signals:
  cand: {higher_means: positive}
  base: {higher_means: negative, role: baseline}
labels: {source: regime, positive: ood, reference: in_domain}
groups: [in_domain, ood_a]
decision_rules:
  wins:
    kind: regime_wins
    candidates: [cand]
    margin: 0.02
    ci: {resamples: 200, seed: 3}
    verdicts:
      PROVEN: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
"""


def frozen_ingest(docket, tmp_path: Path) -> str:
    path = tmp_path / "ingest.yaml"
    path.write_text(INGEST_YAML)
    assert docket("protocol", "register", str(path)).exit_code == 0
    r = docket("protocol", "freeze", "hard-ingest")
    assert r.exit_code == 0, r.output
    return "hard-ingest"


def jsonl_row(group: str, item: str, cand: object = 0.5, base: object = 0.1) -> str:
    import json

    signals = {"cand": cand, "base": base}
    return json.dumps({"group": group, "item": item, "signals": signals}, ensure_ascii=False)


def ingest_refused(docket, tmp_path: Path, name: str, content: str | bytes) -> str:
    """Ingest ``content``; assert exit 2, nothing recorded, no traceback; return stderr."""
    from sqlalchemy import func, select

    from docketml.ledger.store.db import open_ledger
    from docketml.ledger.store.models import RunRow

    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    r = docket("ingest", "hard-ingest", str(path))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    led = open_ledger(docket.url)
    try:
        with led.session() as s:
            assert s.execute(select(func.count()).select_from(RunRow)).scalar_one() == 0
    finally:
        led.engine.dispose()
    return r.stderr


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x0c", "\x1c"])
def test_ingest_lines_count_physical_newlines(docket_sqlite, tmp_path: Path, sep: str) -> None:
    frozen_ingest(docket_sqlite, tmp_path)
    rows = [jsonl_row("in_domain", f"a{sep}b"), jsonl_row("ood_a", "c"), jsonl_row("ood_x", "d")]
    err = ingest_refused(docket_sqlite, tmp_path, "r.jsonl", "\n".join(rows) + "\n")
    assert "r.jsonl:3: unknown group 'ood_x'" in err, err
    csv_text = f"group,item,label,cand,base\nin_domain,a{sep}b,,0.5,0.1\nood_x,c,,0.5,0.1\n"
    err = ingest_refused(docket_sqlite, tmp_path, "r.csv", csv_text)
    assert "r.csv:3: unknown group 'ood_x'" in err, err


# --- group 2: refused at validate, before anything can be frozen ------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field", "fragment"),
    [
        ("seed: 7", "seed: -1", "seed", "greater than or equal to 0"),
        ("seed: 7", f"seed: {2**63}", "seed", "less than"),
        ("seed: 3}", "seed: -5}", "decision_rules.wins.ci.seed", "greater than or equal"),
        ("kind: probe, after", "kind: prob, after", "jobs[1].kind", "unknown job kind"),
        ("kind: pretrain,", "kind: pretrain, hardware: tpu9000,", "jobs[0].hardware", "unknown"),
        ("docket: 1", "docket: true", "docket", ""),
        ("margin: 0.02", "margin: true", "decision_rules.wins.margin", "valid number"),
        ("resamples: 1000", "resamples: true", "decision_rules.wins.ci.resamples", "integer"),
        ("after: [train]", "after: [train, train]", "jobs[1].after[1]", "duplicate entry"),
        ("candidates: [cand]", "candidates: [cand, cand]", "candidates[1]", "duplicate entry"),
        ("PROVEN: {min_wins: 2}", "PROVEN: {min_wins: 3}", "PROVEN.min_wins", "never be met"),
        (
            "PARTIAL: {min_wins: 1}",
            "PARTIAL: {min_wins: 2, max_wins: 1}",
            "PARTIAL.min_wins",
            "min_wins 2 > max_wins 1",
        ),
        ("title: hardening", 'title: "   "', "title", "pattern"),
        ("source: regime,", "source: judged,", "labels.reference", "only for source: regime"),
    ],
)
def test_protocols_that_cannot_run_are_refused_at_validate(
    tmp_path: Path, old: str, new: str, field: str, fragment: str
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    first = refused(tmp_path, text, f":{line_of(text, new)}: ", fragment)
    assert f" {field}:" in first or f".{field}:" in first, first


def test_duplicate_hypotheses_in_of_and_unused_rule(tmp_path: Path) -> None:
    text = BASE.replace(
        "  - {id: H2, statement: the mean is high, rule: high_mean}\n",
        "  - {id: H2, statement: the mean is high, rule: high_mean}\n"
        "  - {id: H3, statement: both, rule: both}\n",
    ).replace(
        "  high_mean: {kind:",
        "  both: {kind: all_of, of: [H1, H1]}\n  high_mean: {kind:",
    )
    refused(tmp_path, text, f":{line_of(text, 'both: {kind')}: decision_rules.both.of[1]:")
    unused = BASE.replace("  - {id: H2, statement: the mean is high, rule: high_mean}\n", "")
    refused(
        tmp_path,
        unused,
        f":{line_of(unused, 'high_mean: {')}: decision_rules.high_mean:",
        "not used by any hypothesis",
    )


def test_register_refuses_an_unknown_job_kind_and_writes_nothing(docket_sqlite, tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE.replace("kind: probe, after", "kind: prob, after"))
    r = docket_sqlite("protocol", "register", str(path))
    assert r.exit_code == 2 and "unknown job kind" in r.stderr, r.output
    assert docket_sqlite("protocol", "show", "hard").exit_code == 2


# --- group 3: ingest ---------------------------------------------------------------------------


def test_ingest_refuses_huge_numbers_deep_json_duplicate_keys_and_text_numbers(
    docket_sqlite, tmp_path: Path
) -> None:
    frozen_ingest(docket_sqlite, tmp_path)
    lines = [
        jsonl_row("in_domain", "a"),  # 1 fine
        '{"group": "ood_a", "item": "b", "signals": {"cand": 1' + "0" * 350 + ', "base": 0.1}}',
        '{"group": "ood_a", "item": "c", "signals": {"cand": 1' + "0" * 5000 + ', "base": 0.1}}',
        '{"group": "ood_a", "item": "d", "signals": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"group": "ood_a", "group": "in_domain", "item": "e", "signals": {"cand": 1, "base": 0}}',
        '{"group": "ood_a", "item": "f", "signals": {"cand": 1, "cand": 2, "base": 0}}',
        jsonl_row("ood_a", "g", cand="1_000"),
        jsonl_row("ood_a", "h", cand="0.5"),
        '{"group": "ood_a", "item": 1' + "0" * 5000 + ', "signals": {"cand": 1, "base": 0}}',
    ]
    err = ingest_refused(docket_sqlite, tmp_path, "r.jsonl", "\n".join(lines) + "\n")
    expected = {
        2: "signal 'cand': integer (huge) is too large",
        3: "signal 'cand': an integer of 5001 digits is too large",
        4: "JSON nested too deeply",
        5: "duplicate JSON key 'group'",
        6: "duplicate JSON key 'cand'",
        7: "signal 'cand': non-numeric value '1_000'",
        8: "signal 'cand': non-numeric value '0.5' (a string",
        9: "item must be a non-empty string or integer, found an integer of 5001 digits",
    }
    for line, fragment in expected.items():
        assert f"r.jsonl:{line}: {fragment}" in err, (line, err)
    assert "r.jsonl:1:" not in err
    csv_text = "group,item,label,cand,base\nin_domain,a,,1_000,0.1\nood_a,b,,0x10,0.1\n"
    err = ingest_refused(docket_sqlite, tmp_path, "r.csv", csv_text)
    assert "r.csv:2: signal 'cand': non-numeric value '1_000'" in err, err
    assert "r.csv:3: signal 'cand': non-numeric value '0x10'" in err, err


def test_ingest_checks_column_lengths_and_nul_on_both_backends(docket, tmp_path: Path) -> None:
    frozen_ingest(docket, tmp_path)
    lines = [
        jsonl_row("in_domain", "x" * 201),
        jsonl_row("ood_a", "a\x00b"),
        jsonl_row("ood_a", "x" * 200),  # exactly the column: fine
    ]
    err = ingest_refused(docket, tmp_path, "r.jsonl", "\n".join(lines) + "\n")
    assert "r.jsonl:1: item is 201 characters long; at most 200" in err, err
    assert "r.jsonl:2: item contains a NUL character" in err, err
    assert "r.jsonl:3:" not in err and "database error" not in err


def test_ingest_refuses_a_fifo(docket_sqlite, tmp_path: Path) -> None:
    frozen_ingest(docket_sqlite, tmp_path)
    fifo = tmp_path / "r.jsonl"
    os.mkfifo(fifo)
    r = docket_sqlite("ingest", "hard-ingest", str(fifo))
    assert r.exit_code == 2 and "FIFO" in r.stderr, r.output


# --- group 4: configuration --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "1e308", "0", "-5", "0.5", "86401"])
def test_bad_lease_is_a_user_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from docketml.ledger.errors import UserError
    from docketml.ledger.store.runs import lease_seconds

    monkeypatch.setenv("DOCKET_LEASE_S", value)
    with pytest.raises(UserError, match="DOCKET_LEASE_S") as info:
        lease_seconds()
    assert info.value.exit_code == 2


def test_good_lease_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from docketml.ledger.store.runs import DEFAULT_LEASE_S, lease_seconds

    monkeypatch.setenv("DOCKET_LEASE_S", " 12.5 ")
    assert lease_seconds() == 12.5
    monkeypatch.delenv("DOCKET_LEASE_S")
    assert lease_seconds() == DEFAULT_LEASE_S


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "file not found"),
        (b"hardware:\n  box: {usd_per_hour: 1, description: caf\xe9}\n", ":2: not valid UTF-8"),
        ("fifo", "FIFO"),
    ],
)
def test_bad_hardware_file_is_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | str | None, fragment: str
) -> None:
    hw = tmp_path / "hw.yaml"
    if content == "fifo":
        os.mkfifo(hw)
    elif isinstance(content, bytes):
        hw.write_bytes(content)
    monkeypatch.setenv("DOCKET_HARDWARE", str(hw))
    path = tmp_path / "p.yaml"
    path.write_text(BASE)
    result = CliRunner().invoke(cli, ["protocol", "validate", str(path)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"docket: {hw}" in result.stderr and fragment in result.stderr, result.stderr


def test_a_protocol_registered_by_an_older_docket_still_reads_from_the_ledger() -> None:
    """Stored text is re-read with admission=False: lenient numbers, no new admission checks,
    the same canonical hash as the strict spelling; NaN stays refused."""
    from docketml.protocols.errors import ProtocolErrors
    from docketml.protocols.loader import load_protocol_text

    old = BASE.replace("margin: 0.02", 'margin: "0.02"').replace(
        "  - {id: H2, statement: the mean is high, rule: high_mean}\n", ""
    )
    with pytest.raises(ProtocolErrors):
        load_protocol_text(old, "old.yaml")
    stored = load_protocol_text(old, "ledger:hard@v1", admission=False)
    assert stored.protocol.decision_rules["wins"].margin == 0.02
    strict = load_protocol_text(
        BASE.replace("  - {id: H2, statement: the mean is high, rule: high_mean}\n", ""),
        admission=False,
    )
    assert stored.sha256 == strict.sha256
    with pytest.raises(ProtocolErrors, match="finite"):
        load_protocol_text(old.replace('"0.02"', '"nan"'), admission=False)
