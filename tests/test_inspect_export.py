"""`docket runs show / compare` and `docket export`: what a run recorded, side by side, and as
files that round-trip through pandas with exact values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from distributed_helpers import freeze
from sqlalchemy import select

from docketml.ledger.store.db import Ledger
from docketml.ledger.store.models import ProtocolRow
from docketml.ledger.store.runs import complete_run, create_run, start_run

VALUES = [0.1, 1 / 3, 2.0**-40, 123456.789012345678, -0.0]


def _run(ledger: Ledger, pk: int, lr: float, shift: float) -> int:
    with ledger.session() as session:
        row = session.get(ProtocolRow, pk)
        job = {"name": "synth", "kind": "synthetic", "params": {"lr": lr, "steps": 10}}
        run = create_run(
            session, protocol_pk=pk, protocol_sha256=row.sha256, job="synth",
            kind="synthetic", config={"job": job}, seed=7,
        )  # fmt: skip
        start_run(session, run.id, worker=f"w{run.id}")
        obs = [
            {"group": g, "item": f"{g}-{i}", "label": i % 2, "signal": "s", "value": v + shift}
            for g in ("a", "b")
            for i, v in enumerate(VALUES)
        ]
        metrics = [
            {"name": "acc", "value": 0.70, "step": 100},
            {"name": "acc", "value": 0.90 + shift},  # no step: the final value, it counts
            {"name": "bpb", "value": 2.5, "step": 10},
            {"name": "bpb", "value": 2.25, "step": 20},  # highest step counts
        ]
        assert complete_run(
            session, run.id, status="succeeded", observations=obs, metrics=metrics,
            texts={"a-0": "I don't know.", "a-1": "Paris"}, wall_s=1.5,
        )  # fmt: skip
        return run.id


@pytest.fixture
def two_runs(ledger: Ledger) -> tuple[Ledger, int, int]:
    pk = freeze(ledger, "inspect-me", [{"name": "synth", "kind": "synthetic"}])
    return ledger, _run(ledger, pk, 3e-4, 0.0), _run(ledger, pk, 1e-3, 0.05)


def test_runs_show_reports_the_rows_that_count(two_runs, docket) -> None:
    _, first, _ = two_runs
    shown = json.loads(docket("runs", "show", str(first), "--json").stdout)
    assert shown["protocol"] == "inspect-me" and shown["protocol_version"] == 1
    assert shown["metrics"]["acc"]["value"] == 0.90 and shown["metrics"]["acc"]["step"] is None
    assert shown["metrics"]["bpb"] == {"value": 2.25, "ci_low": None, "ci_high": None, "step": 20}
    assert len(shown["metric_history"]) == 4
    a = next(s for s in shown["signals"] if s["group"] == "a")
    assert a["n"] == 5 and a["mean"] == pytest.approx(sum(VALUES) / 5)
    assert a["mean_pos"] == pytest.approx((VALUES[1] + VALUES[3]) / 2)
    assert "texts" not in shown and shown["n_texts"] == 2
    with_texts = json.loads(docket("runs", "show", str(first), "--texts", "--json").stdout)
    assert with_texts["texts"] == {"a-0": "I don't know.", "a-1": "Paris"}
    human = docket("runs", "show", str(first), "--texts")
    assert human.exit_code == 0 and "Paris" in human.output and "acc" in human.output


def test_runs_compare_marks_what_differs(two_runs, docket) -> None:
    _, first, second = two_runs
    data = json.loads(docket("runs", "compare", str(first), str(second), "--json").stdout)
    assert data["params"]["lr"] == {"values": [3e-4, 1e-3], "same": False}
    assert data["params"]["steps"] == {"values": [10, 10], "same": True}
    assert (
        data["metrics"]["acc"]["values"] == [0.90, 0.90 + 0.05]
        and not data["metrics"]["acc"]["same"]
    )
    assert data["metrics"]["bpb"]["same"]
    assert docket("runs", "compare", str(first), "--json").exit_code == 2


def test_unknown_run_is_exit_2_naming_the_range(two_runs, docket) -> None:
    result = docket("runs", "show", "999")
    assert result.exit_code == 2 and "no run #999" in result.output and "1..2" in result.output


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips_through_pandas_exactly(two_runs, docket, tmp_path: Path, fmt) -> None:
    pd = pytest.importorskip("pandas")
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    ledger, first, second = two_runs
    out = tmp_path / f"export-{fmt}"
    result = docket("export", "inspect-me", "--format", fmt, "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    tables = json.loads(result.stdout)["tables"]
    assert tables["observations"]["rows"] == 20 and tables["runs"]["rows"] == 2
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    obs = read(out / f"observations.{fmt}")
    assert list(obs.columns) == ["run_id", "job", "group", "item", "label", "signal", "value"]
    mine = obs[obs.run_id == first].sort_values("item")
    expected = sorted((f"{g}-{i}", v) for g in ("a", "b") for i, v in enumerate(VALUES))
    assert [(i, v) for i, v in zip(mine["item"], mine["value"], strict=True)] == expected
    metrics = read(out / f"metrics.{fmt}")
    counted = metrics[(metrics.run_id == second) & metrics.effective.astype(bool)]
    assert dict(zip(counted.name, counted.value, strict=True)) == {"acc": 0.90 + 0.05, "bpb": 2.25}
    runs = read(out / f"runs.{fmt}")
    assert list(runs.id) == [first, second] and set(runs.status) == {"succeeded"}
    if fmt == "csv":
        with (out / "observations.csv").open() as fh:
            header = next(csv.reader(fh))
        assert header[0] == "run_id"
    with ledger.session() as session:
        assert session.scalars(select(ProtocolRow)).first().protocol_id == "inspect-me"


def test_export_of_an_unknown_protocol_is_exit_2(docket, tmp_path: Path) -> None:
    result = docket("export", "nope", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "nope" in result.output
    assert not (tmp_path / "x").exists()
