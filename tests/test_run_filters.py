"""``docket runs list PROTOCOL --job J`` and ``docket protocol diff PROTOCOL A B``."""

from __future__ import annotations

import json
from pathlib import Path

from test_replicates import PID, freeze, ingest, rows, study_yaml


def test_runs_list_filters_by_protocol_argument_and_job(docket_sqlite, tmp_path: Path) -> None:
    freeze(docket_sqlite, tmp_path, "{name: probe, kind: synthetic}")
    first = ingest(docket_sqlite, tmp_path, rows([1.0] * 10))["run_id"]
    path = tmp_path / "other.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows([2.0] * 10)))
    r = docket_sqlite("ingest", PID, str(path), "--json")  # the default ingest job
    assert r.exit_code == 0, r.output
    other = json.loads(r.output)["run_id"]
    listed = json.loads(docket_sqlite("runs", "list", PID, "--json").output)
    assert [x["id"] for x in listed] == [first, other]
    probe = json.loads(docket_sqlite("runs", "list", PID, "--job", "probe", "--json").output)
    assert [(x["id"], x["job"]) for x in probe] == [(first, "probe")]
    text = docket_sqlite("runs", "list", PID, "--job", "ingest")
    assert text.exit_code == 0 and f"{other}" in text.output and "probe" not in text.output
    r = docket_sqlite("runs", "list", PID, "--job", "prob")
    assert r.exit_code == 2 and "not a job of rep-study" in r.output
    assert "Traceback" not in r.output


def test_protocol_diff_lists_changed_fields_by_dotted_path(docket_sqlite, tmp_path: Path) -> None:
    freeze(docket_sqlite, tmp_path, "{name: probe, kind: synthetic}")
    v2 = tmp_path / "v2.yaml"
    v2.write_text(
        study_yaml(
            "{name: probe, kind: synthetic, params: {n_per_class: 60}, "
            "replicates: {seeds: [0, 1]}, select: all}",
            bound=0.7,
        )
    )
    r = docket_sqlite("protocol", "amend", PID, str(v2), "--reason", "more data, two seeds")
    assert r.exit_code == 0, r.output
    r = docket_sqlite("protocol", "diff", PID, "1", "2", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["amendment_reason"] == "more data, two seeds"
    assert data["changes"] == [
        {"path": "decision_rules.r1.bound", "change": "changed", "old": 0.5, "new": 0.7},
        {"path": "jobs[probe].params.n_per_class", "change": "added", "old": None, "new": 60},
        {
            "path": "jobs[probe].replicates",
            "change": "added",
            "old": None,
            "new": {"seeds": [0, 1]},
        },
        {"path": "jobs[probe].select", "change": "added", "old": None, "new": "all"},
    ]
    text = docket_sqlite("protocol", "diff", PID, "1", "2")
    assert text.exit_code == 0 and "decision_rules.r1.bound" in text.output
    same = json.loads(docket_sqlite("protocol", "diff", PID, "2", "2", "--json").output)
    assert same["changes"] == []
    r = docket_sqlite("protocol", "diff", PID, "1", "3")
    assert r.exit_code == 2 and "no version 3; versions: 1, 2" in r.output
