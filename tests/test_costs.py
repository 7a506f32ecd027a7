"""The cost ledger: the receipts' bill, manual entries, exact totals, grouping, budgets.

Database tests run on SQLite and on PostgreSQL (``DOCKET_TEST_POSTGRES``).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from docketml.ledger.billing import bill as billing
from docketml.ledger.billing.budget import check_budget
from docketml.ledger.billing.costs import append_cost, verify_cost_chain
from docketml.ledger.billing.hardware import cost_micros, default_catalog
from docketml.ledger.billing.receipts import receipts_gpu_total_micros
from docketml.ledger.store import protocols as store
from docketml.ledger.store.models import CostRow
from docketml.protocols.loader import load_protocol_text

BUDGET_PROTOCOL = """\
docket: 1
id: budgeted
title: A protocol with a budget
hypotheses:
  - {id: H1, statement: it slept, rule: r}
decision_rules:
  r: {kind: threshold, statistic: metric, metric: slept_s, job: gpu_nap, op: ">=", bound: 0.0}
jobs:
  - {name: gpu_nap, kind: sleep, hardware: a40, estimate_seconds: 600, params: {seconds: 0.01}}
budget: {usd: 0.05}
"""


def register_and_freeze(docket, tmp_path: Path, text: str, name: str = "p.yaml") -> str:
    """Register and freeze ``text`` through the CLI (the real sign-check runs)."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = docket("protocol", "register", str(path), "--json")
    assert result.exit_code == 0, result.output
    pid = json.loads(result.output)["id"]
    frozen = docket("protocol", "freeze", pid)
    assert frozen.exit_code == 0, frozen.output
    return pid


# --------------------------------------------------------------------------- receipts


def test_receipts_import_gives_gpu_total_078_exactly(ledger) -> None:
    with ledger.session() as session:
        first = billing.import_receipts(session)
    assert first["gpu_micros"] == 780_000 == receipts_gpu_total_micros()
    assert len(first["imported"]) == 6 and first["skipped"] == []
    with ledger.session() as session:
        again = billing.import_receipts(session)  # idempotent: labels receipts:<run>
    assert again["imported"] == [] and len(again["skipped"]) == 6
    with ledger.session() as session:
        result = billing.bill(session, "hardware", catalog=default_catalog())
        rows = list(session.query(CostRow).order_by(CostRow.seq))
        assert verify_cost_chain(rows) == []
    assert result.gpu_micros == 780_000
    assert result.cpu_micros == 0
    assert result.total_micros == 780_000
    totals = {g.key: g.total_micros for g in result.groups}
    assert totals == {"cpu": 0, "rtx4090": 430_000, "a40": 350_000}
    assert [line.entry for line in result.lines] == [
        "receipts:v5",
        "receipts:v6",
        "receipts:v7",
        "receipts:v8a",
        "receipts:v8b",
        "receipts:splice",
    ]
    v7 = result.lines[2]
    assert (v7.hardware, v7.wall_s, v7.usd, v7.rate_micros_per_hour) == (
        "rtx4090",
        88.5,
        "$0.43",
        0,
    )
    assert "RTX 4090 SECURE (RunPod)" in (v7.note or "")


def test_receipts_cli_bill(docket) -> None:
    result = docket("cost", "import-receipts")
    assert result.exit_code == 0, result.output
    assert "imported 6" in result.output and "GPU $0.78" in result.output
    assert "0 imported" not in docket("cost", "import-receipts").output
    assert "imported 0" in docket("cost", "import-receipts").output
    out = docket("costs", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert (data["gpu"], data["gpu_micros"], data["cpu"], data["total"]) == (
        "$0.78",
        780_000,
        "$0.00",
        "$0.78",
    )
    human = docket("costs", "--by", "hardware")
    assert human.exit_code == 0
    assert "Total $0.78  (GPU $0.78, CPU $0.00)" in human.output
    assert "subtotal a40" in human.output and "$0.35" in human.output


# --------------------------------------------------------------------------- manual entries


def test_cost_add_sums_exactly(docket) -> None:
    for _ in range(3):
        result = docket("cost", "add", "--hardware", "cpu", "--usd", "0.1", "--note", "tenth")
        assert result.exit_code == 0, result.output
    data = json.loads(docket("costs", "--json").output)
    assert data["total_micros"] == 300_000  # 0.1 + 0.1 + 0.1 == 0.30 exactly, no float sum
    assert data["total"] == "$0.30"
    assert data["cpu_micros"] == 300_000 and data["gpu_micros"] == 0
    # a dollar amount written with a $ and thousands separators is still exact
    big = docket("cost", "add", "--hardware", "h100", "--usd", "$1,234.567891", "--json")
    assert json.loads(big.output)["usd_micros"] == 1_234_567_891


def test_cost_add_computes_from_catalog(docket) -> None:
    result = docket(
        "cost", "add", "--hardware", "a40", "--seconds", "180", "--label", "v8a", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    hw = default_catalog()["a40"]
    assert data["usd_micros"] == cost_micros(hw, Decimal("180"))  # (180 + 300 setup) s at $0.40/h
    assert data["billed_s"] == 480 and data["computed"] is True
    recorded = json.loads(
        docket(
            "cost", "add", "--hardware", "A40", "--seconds", "180", "--usd", "0.18", "--json"
        ).output
    )
    assert (recorded["usd_micros"], recorded["computed"], recorded["hardware"]) == (
        180_000,
        False,
        "a40",
    )


BAD_COST_ADD = [
    (["--hardware", "tpu-v9", "--usd", "1"], "known: a100-80gb, a40, cpu, h100, h200, rtx4090"),
    (["--hardware", "a40", "--usd", "0.1234567"], "--usd"),
    (["--hardware", "a40", "--usd", "1e3"], "--usd"),
    (["--hardware", "a40", "--usd", "-1"], "must be >= 0"),
    (["--hardware", "a40"], "--seconds"),
    (["--hardware", "a40", "--seconds", "soon"], "--seconds"),
    (["--hardware", "a40", "--usd", "1", "--protocol", "nope"], "unknown protocol 'nope'"),
]


def test_cost_add_rejects_bad_input(docket_sqlite) -> None:
    for args, needle in BAD_COST_ADD:
        result = docket_sqlite("cost", "add", *args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output, (args, result.output)
    assert json.loads(docket_sqlite("costs", "--json").output)["total_micros"] == 0


def test_bill_groupings_and_unknown_hardware(ledger) -> None:
    loaded = load_protocol_text(BUDGET_PROTOCOL)
    with ledger.session() as session:
        pk = store.register(session, loaded).row.id
        append_cost(session, hardware="a40", usd_micros=180_000, protocol_pk=pk, label="v8a")
        append_cost(session, hardware="a40", usd_micros=170_000, protocol_pk=pk, label="v8b")
        append_cost(session, hardware="cpu", usd_micros=0, label="splice")
        append_cost(session, hardware="old-box", usd_micros=1_000_001, note="renamed machine")
    catalog = default_catalog()
    with ledger.session() as session:
        by_protocol = billing.bill(session, "protocol", catalog=catalog)
        by_hardware = billing.bill(session, "hardware", catalog=catalog)
        by_month = billing.bill(session, "month", catalog=catalog)
        by_run = billing.bill(session, "run", catalog=catalog)
        only = billing.bill(session, "run", protocol_id="budgeted", catalog=catalog)
    assert {g.key: g.total_micros for g in by_protocol.groups} == {
        "budgeted": 350_000,
        "(none)": 1_000_001,
    }
    assert {g.key: g.total_micros for g in by_hardware.groups} == {
        "a40": 350_000,
        "cpu": 0,
        "old-box (unknown)": 1_000_001,
    }
    for result in (by_protocol, by_hardware, by_month, by_run):
        assert result.total_micros == 1_350_001
        assert (result.gpu_micros, result.cpu_micros, result.unknown_micros) == (
            350_000,
            0,
            1_000_001,
        )
        assert result.unknown_hardware == ["old-box"]
    assert len(by_month.groups) == 1 and by_month.groups[0].key == by_month.lines[0].month
    assert [g.key for g in by_run.groups] == ["v8a", "v8b", "splice", "manual #4"]
    assert [line.label for line in only.lines] == ["v8a", "v8b"]
    data = by_hardware.as_dict()
    assert data["unknown_hardware_micros"] == 1_000_001 and data["total"] == "$1.35"


def test_hardware_list_and_user_override(docket_sqlite, tmp_path: Path) -> None:
    data = json.loads(docket_sqlite("hardware", "list", "--json").output)
    names = [h["name"] for h in data["hardware"]]
    assert {"cpu", "rtx4090", "a40", "a100-80gb", "h100", "h200"} <= set(names)
    assert data["source"] is None
    (tmp_path / ".docket").mkdir(exist_ok=True)
    (tmp_path / ".docket" / "hardware.yaml").write_text(
        "hardware:\n  rtx4090: {usd_per_hour: '0.34'}\n  lab-box: {usd_per_hour: 1, is_gpu: true}\n"
    )
    data = json.loads(docket_sqlite("hardware", "list", "--json").output)
    by_name = {h["name"]: h for h in data["hardware"]}
    assert by_name["rtx4090"]["usd_per_hour"] == "0.34"
    assert by_name["lab-box"]["rate_micros_per_hour"] == 1_000_000
    added = docket_sqlite("cost", "add", "--hardware", "lab-box", "--seconds", "3600", "--json")
    assert json.loads(added.output)["usd_micros"] == 1_000_000
    (tmp_path / ".docket" / "hardware.yaml").write_text("hardware:\n  x: {rate: 1}\n")
    bad = docket_sqlite("hardware", "list")
    assert bad.exit_code == 2 and "hardware.yaml:2" in bad.output and "rate" in bad.output


# --------------------------------------------------------------------------- budgets


def test_check_budget_numbers(ledger) -> None:
    loaded = load_protocol_text(BUDGET_PROTOCOL)
    protocol = loaded.protocol
    a40 = default_catalog()["a40"]
    with ledger.session() as session:
        pk = store.register(session, loaded).row.id
        check = check_budget(session, "budgeted", protocol, protocol.job("gpu_nap"), a40)
        assert check.ok is False
        assert (check.budget_micros, check.spent_micros, check.estimate_micros) == (
            50_000,
            0,
            100_000,
        )
        message = check.message("gpu_nap")
        assert "$0.10" in message and "$0.05" in message and "600 s" in message
        append_cost(session, hardware="cpu", usd_micros=50_000, protocol_pk=pk)
        cpu_job = protocol.job("gpu_nap").model_copy(update={"estimate_seconds": None})
        check = check_budget(session, "budgeted", protocol, cpu_job, default_catalog()["cpu"])
        assert check.ok is True  # spent == budget and nothing estimated: still within
        append_cost(session, hardware="cpu", usd_micros=1, protocol_pk=pk)
        check = check_budget(session, "budgeted", protocol, cpu_job, default_catalog()["cpu"])
        assert check.ok is False and check.spent_micros == 50_001


def test_budget_refusal_and_override_through_docket_run(docket, tmp_path: Path) -> None:
    pid = register_and_freeze(docket, tmp_path, BUDGET_PROTOCOL)
    refused = docket("run", pid, "--no-progress")
    assert refused.exit_code == 1, refused.output
    assert "budget exceeded" in refused.output
    assert "$0.10" in refused.output and "$0.05" in refused.output
    assert json.loads(docket("runs", "list", "--json").output) == []
    no_reason = docket("run", pid, "--no-progress", "--allow-over-budget")
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    ok = docket(
        "run", pid, "--no-progress", "--allow-over-budget", "--reason", "the number matters"
    )
    assert ok.exit_code == 0, ok.output
    entries = json.loads(docket("journal", "list", "--protocol", pid, "--json").output)
    assert len(entries) == 1
    entry = entries[0]["entry"]
    assert entry["protocol"] == pid
    text = json.dumps(entry)
    assert "the number matters" in text and "$0.10" in text and "$0.05" in text
    bill = json.loads(docket("costs", "--protocol", pid, "--json").output)
    assert bill["gpu_micros"] == cost_micros(default_catalog()["a40"], Decimal("0.01"))  # 360 s
    assert docket("audit").exit_code == 0
