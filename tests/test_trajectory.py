"""``docket trajectory``: metrics against checkpoint step, from the latest frozen version's
succeeded runs (table, --json, --metric, --out; the old --plot name still works)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DocketCli

from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import init_ledger
from docketml.ledger.store.runs import complete_run, create_run, start_run

PROTOCOL = """\
docket: 1
id: traj-demo
title: Trajectory demo
hypotheses:
  - {id: H1, statement: speedup at the last checkpoint is at least 1.3, rule: fast}
decision_rules:
  fast: {kind: threshold, statistic: metric, metric: speedup, op: ">=", bound: 1.3}
"""


def _record(
    url: str, metrics: list[dict], status: str = "succeeded", job: str = "trajectory"
) -> int:
    """A run of the frozen version with ``metrics``, through the ledger's run API."""
    led = init_ledger(url)
    with led.session() as session:
        row = store.latest_frozen(session, "traj-demo")
        run = create_run(
            session,
            protocol_pk=row.id,
            protocol_sha256=row.sha256,
            job=job,
            kind="poe_trajectory",
            config={},
        )
        start_run(session, run.id, worker="test")
        assert complete_run(session, run.id, status=status, metrics=metrics, wall_s=0.5)
        run_id = run.id
    led.engine.dispose()
    return run_id


def _series(step_values: dict[int, float], name: str, **extra: float) -> list[dict]:
    return [{"name": name, "value": v, "step": s, **extra} for s, v in step_values.items()]


@pytest.fixture
def traj(tmp_path: Path, docket_sqlite: DocketCli) -> DocketCli:
    (tmp_path / "p.yaml").write_text(PROTOCOL)
    assert docket_sqlite("protocol", "register", "p.yaml").exit_code == 0
    assert docket_sqlite("protocol", "freeze", "traj-demo").exit_code == 0
    first = _record(
        docket_sqlite.url,
        _series({100: 3.0, 200: 2.5}, "bpb_full")
        + _series({100: 0.70, 200: 0.80}, "alpha")
        + _series({100: 1.1, 200: 1.2}, "speedup", ci_low=1.0, ci_high=1.3)
        + [{"name": "speedup", "value": 1.25}],  # no step: not part of the trajectory
    )
    # a later run re-records step 200 of bpb_full and adds step 300: the later run wins
    second = _record(docket_sqlite.url, _series({200: 2.4, 300: 2.2}, "bpb_full"))
    # a failed run never counts
    _record(docket_sqlite.url, _series({100: 99.0}, "bpb_full"), status="failed")
    assert (first, second) == (1, 2)
    return docket_sqlite


def test_table(traj: DocketCli) -> None:
    result = traj("trajectory", "traj-demo")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "traj-demo v1: metrics by checkpoint step" in out
    header = next(line for line in out.splitlines() if "step" in line and "alpha" in line)
    assert header.index("alpha") < header.index("bpb_full") < header.index("speedup")
    row200 = next(line for line in out.splitlines() if line.strip("│ ").startswith("200"))
    assert "2.4" in row200 and "0.8" in row200 and "1.2" in row200
    assert "99" not in out


def test_json(traj: DocketCli) -> None:
    result = traj("trajectory", "traj-demo", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["protocol"] == "traj-demo" and data["version"] == 1
    assert data["metrics"] == ["alpha", "bpb_full", "speedup"]
    assert data["steps"] == [100, 200, 300]
    assert data["rows"][2] == {"step": 300, "alpha": None, "bpb_full": 2.2, "speedup": None}
    bpb = data["series"]["bpb_full"]
    assert [(p["step"], p["value"], p["run_id"]) for p in bpb] == [
        (100, 3.0, 1),
        (200, 2.4, 2),
        (300, 2.2, 2),
    ]
    speedup = data["series"]["speedup"]
    assert [(p["ci_low"], p["ci_high"]) for p in speedup] == [(1.0, 1.3), (1.0, 1.3)]


def test_metric_filter_and_unknown_metric(traj: DocketCli) -> None:
    result = traj("trajectory", "traj-demo", "--metric", "alpha", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["metrics"] == ["alpha"] and data["steps"] == [100, 200]
    bad = traj("trajectory", "traj-demo", "--metric", "nope")
    assert bad.exit_code == 2
    assert "no trajectory recorded for nope" in bad.output
    assert "recorded: alpha, bpb_full, speedup" in bad.output


def test_plot(traj: DocketCli, tmp_path: Path) -> None:
    png = tmp_path / "plots" / "traj.png"
    result = traj("trajectory", "traj-demo", "--out", str(png), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["plot"] == str(png)
    blob = png.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 10_000
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)
    assert pixels.shape[1] > 1000  # three panels side by side
    assert float(pixels[..., :3].std()) > 0.05


def test_unfrozen_and_empty(tmp_path: Path, docket_sqlite: DocketCli) -> None:
    (tmp_path / "p.yaml").write_text(PROTOCOL)
    assert docket_sqlite("protocol", "register", "p.yaml").exit_code == 0
    result = docket_sqlite("trajectory", "traj-demo")
    assert result.exit_code == 1
    assert "not frozen" in result.output
    assert docket_sqlite("protocol", "freeze", "traj-demo").exit_code == 0
    _record(docket_sqlite.url, [{"name": "speedup", "value": 1.4}])  # no step
    result = docket_sqlite("trajectory", "traj-demo")
    assert result.exit_code == 0, result.output
    assert "none recorded" in result.output
    result = docket_sqlite("trajectory", "traj-demo", "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 2
    assert "nothing to plot" in result.output
    assert not (tmp_path / "x.png").exists()
    unknown = docket_sqlite("trajectory", "nope")
    assert unknown.exit_code == 2 and "unknown protocol 'nope'" in unknown.output


def test_two_jobs_never_interleave_and_job_selects_one(
    tmp_path: Path, docket_sqlite: DocketCli
) -> None:
    (tmp_path / "p.yaml").write_text(PROTOCOL)
    assert docket_sqlite("protocol", "register", "p.yaml").exit_code == 0
    assert docket_sqlite("protocol", "freeze", "traj-demo").exit_code == 0
    a = _record(docket_sqlite.url, _series({100: 3.0, 200: 2.5}, "bpb"), job="train_a")
    b = _record(docket_sqlite.url, _series({100: 9.0, 300: 8.0}, "bpb"), job="train_b")
    _record(docket_sqlite.url, _series({100: 0.5}, "alpha"), job="train_a")
    data = json.loads(docket_sqlite("trajectory", "traj-demo", "--json").output)
    assert data["metrics"] == ["alpha", "train_a/bpb", "train_b/bpb"]
    assert [(p["step"], p["value"], p["run_id"]) for p in data["series"]["train_a/bpb"]] == [
        (100, 3.0, a),
        (200, 2.5, a),
    ]
    assert {p["job"] for p in data["series"]["train_b/bpb"]} == {"train_b"}
    only = json.loads(docket_sqlite("trajectory", "traj-demo", "--job", "train_b", "--json").output)
    assert only["metrics"] == ["bpb"]
    assert [(p["step"], p["value"], p["run_id"]) for p in only["series"]["bpb"]] == [
        (100, 9.0, b),
        (300, 8.0, b),
    ]
    by_metric = json.loads(
        docket_sqlite("trajectory", "traj-demo", "--metric", "bpb", "--json").output
    )
    assert by_metric["metrics"] == ["train_a/bpb", "train_b/bpb"]
    r = docket_sqlite("trajectory", "traj-demo", "--job", "nope")
    assert r.exit_code == 2 and "train_a, train_b" in r.output and "Traceback" not in r.output
