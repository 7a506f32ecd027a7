"""``docket ingest`` carries what an executed run records (provenance of the user's working
directory, per-step metrics, generated texts, a metered or recorded cost), and ``docket cost add
--run`` attaches a cost to an existing run; bad companion lines are refused with nothing written."""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from test_ingest import counts, frozen, good_rows, write_jsonl

from docketml.ledger.billing.hardware import billed_seconds, cost_micros, load_catalog

METRICS = [
    {"name": "bpb", "value": 2.5, "step": 100},
    {"name": "bpb", "value": 2.1, "step": 400},
    {"name": "auroc", "value": 0.81},
]
TEXTS = [{"item": "ood_a-1", "text": "I don't know."}, {"item": 7, "text": "Paris"}]


def git(cwd: Path, *args: str) -> bytes:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    ).stdout


def dirty_repo(path: Path) -> tuple[str, str]:
    """A git work tree at ``path`` with one committed file then changed: (HEAD, diff sha256)."""
    git(path, "init", "-q")
    (path / "train.py").write_text("print('v1')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "v1")
    (path / "train.py").write_text("print('v2')\n")
    head = git(path, "rev-parse", "HEAD").decode().strip()
    diff = git(path, "diff", "HEAD", "--binary", "--full-index")
    return head, hashlib.sha256(diff).hexdigest()


def run_json(docket, run_id: int) -> dict:
    r = docket("runs", "show", str(run_id), "--texts", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def bill_lines(docket) -> list[dict]:
    r = docket("costs", "--json")
    assert r.exit_code == 0, r.output
    return [line for g in json.loads(r.output)["groups"] for line in g["lines"]]


def test_ingest_records_provenance_metrics_texts_and_a_metered_cost(docket, tmp_path: Path) -> None:
    head, diff_sha = dirty_repo(tmp_path)
    pid = frozen(docket, tmp_path)
    res = write_jsonl(tmp_path / "res.jsonl", good_rows())
    met = write_jsonl(tmp_path / "metrics.jsonl", METRICS)
    txt = write_jsonl(tmp_path / "texts.jsonl", TEXTS)
    r = docket(
        "ingest", pid, str(res), "--metrics", str(met), "--texts", str(txt),
        "--hardware", "a40", "--seconds", "90.5", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    expected = cost_micros(load_catalog()["a40"], Decimal("90.5"))
    assert out["metrics"] == 3 and out["texts"] == 2 and out["cost_micros"] == expected > 0

    run = run_json(docket, out["run_id"])
    prov = run["config"]["provenance"]
    assert prov == {
        "git_commit": head,
        "git_dirty": True,
        "git_diff_sha256": diff_sha,
        "python": platform.python_version(),
        "torch": prov["torch"],  # whatever this venv has; the key is there
        "cuda": prov["cuda"],
        "host": socket.gethostname(),
        "device": "cuda",  # a40 is a GPU class
    }
    assert run["git_sha"] == head and run["hardware"] == "a40"
    assert run["metrics"]["bpb"]["value"] == 2.1 and run["metrics"]["bpb"]["step"] == 400
    assert run["metrics"]["auroc"]["value"] == 0.81
    assert [(m["name"], m["step"]) for m in run["metric_history"]] == [
        ("bpb", 100),
        ("bpb", 400),
        ("auroc", None),
    ]
    assert run["texts"] == {"ood_a-1": "I don't know.", "7": "Paris"}
    assert run["cost_micros"] == expected
    (line,) = bill_lines(docket)
    assert line["run_id"] == out["run_id"] and line["usd_micros"] == expected
    assert (
        line["billed_s"] == billed_seconds(load_catalog()["a40"], Decimal("90.5"))
        and line["hardware"] == "a40"
    )
    assert docket("audit").exit_code == 0


def test_ingest_with_usd_records_the_amount_and_unknown_device_without_hardware(
    docket, tmp_path: Path
) -> None:
    pid = frozen(docket, tmp_path)
    res = write_jsonl(tmp_path / "res.jsonl", good_rows())
    r = docket("ingest", pid, str(res), "--hardware", "rtx4090", "--usd", "0.18", "--json")
    assert r.exit_code == 0, r.output
    run = run_json(docket, json.loads(r.output)["run_id"])
    assert run["cost_micros"] == 180_000 and bill_lines(docket)[0]["usd_micros"] == 180_000
    assert run["config"]["provenance"]["git_commit"] is None  # tmp_path is no git work tree
    r = docket("ingest", pid, str(res), "--hardware", "a40", "--usd", "0.5")
    assert r.exit_code == 0 and "cost #2: $0.50" in r.output and "not a git work tree" in r.output
    r = docket("ingest", pid, str(res), "--json")
    run = run_json(docket, json.loads(r.output)["run_id"])
    assert run["config"]["provenance"]["device"] is None and run["cost_micros"] == 0


@pytest.mark.parametrize(
    ("flag", "line", "field"),
    [
        ("--metrics", {"name": "bpb", "value": "2.1", "step": 1}, "value: non-numeric"),
        ("--metrics", {"name": "bpb", "value": float("nan")}, "value: "),
        ("--metrics", {"name": "bpb", "value": 1.0, "step": -1}, "step must be an integer"),
        ("--metrics", {"name": "bpb", "value": 1.0, "step": 1.5}, "step must be an integer"),
        ("--metrics", {"name": "", "value": 1.0}, "name must be a non-empty string"),
        ("--metrics", {"name": "bpb", "value": 1.0, "stp": 3}, "unknown key(s) stp"),
        ("--metrics", {"value": 1.0}, "missing key(s) name"),
        ("--metrics", {"name": "bpb", "value": 2.5, "step": 100}, "duplicate metric 'bpb'"),
        ("--metrics", "{not json", "malformed JSON"),
        ("--texts", {"item": "a", "text": 3}, "text must be a string"),
        ("--texts", {"item": "", "text": "x"}, "item must be a non-empty string"),
        ("--texts", {"item": "ood_a-1", "text": "again"}, "duplicate item 'ood_a-1'"),
        ("--texts", {"item": "a", "text": "x\x00"}, "NUL"),
        ("--texts", {"text": "x"}, "missing key(s) item"),
    ],
)
def test_a_bad_companion_line_is_refused_naming_file_line_and_field(
    docket_sqlite, tmp_path: Path, flag: str, line: object, field: str
) -> None:
    docket = docket_sqlite
    pid = frozen(docket, tmp_path)
    res = write_jsonl(tmp_path / "res.jsonl", good_rows())
    good = METRICS if flag == "--metrics" else TEXTS
    bad = write_jsonl(tmp_path / "companion.jsonl", [*good, line if isinstance(line, str) else
                      json.dumps(line)])  # fmt: skip
    before = counts(docket.url)
    r = docket("ingest", pid, str(res), flag, str(bad), "--hardware", "a40", "--seconds", "9")
    assert r.exit_code == 2, r.output
    assert f"{bad}:{len(good) + 1}: " in r.output and field in r.output, r.output
    assert "nothing was recorded" in r.output and "Traceback" not in r.output
    assert counts(docket.url) == before


def test_bad_cost_flags_write_nothing(docket_sqlite, tmp_path: Path) -> None:
    docket = docket_sqlite
    pid = frozen(docket, tmp_path)
    res = write_jsonl(tmp_path / "res.jsonl", good_rows())
    before = counts(docket.url)
    for args, says in (
        (("--hardware", "nope", "--seconds", "9"), "--hardware"),
        (("--hardware", "a40"), "--seconds"),
        (("--seconds", "9"), "need --hardware"),
        (("--hardware", "a40", "--seconds", "-1"), "--seconds"),
        (("--hardware", "a40", "--usd", "abc"), "--usd"),
    ):
        r = docket("ingest", pid, str(res), *args)
        assert r.exit_code == 2 and says in r.output, (args, r.output)
    assert counts(docket.url) == before


def test_cost_add_run_links_into_the_chain_and_keeps_the_run_cost(docket, tmp_path: Path) -> None:
    pid = frozen(docket, tmp_path)
    res = write_jsonl(tmp_path / "res.jsonl", good_rows())
    r = docket("ingest", pid, str(res), "--hardware", "a40", "--seconds", "60", "--json")
    run_id = json.loads(r.output)["run_id"]
    first = run_json(docket, run_id)["cost_micros"]
    r = docket("cost", "add", "--run", str(run_id), "--hardware", "a40", "--seconds", "30",
               "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    added = json.loads(r.output)
    assert added["run_id"] == run_id and added["seq"] == 2
    assert added["usd_micros"] == cost_micros(load_catalog()["a40"], Decimal(30))
    run = run_json(docket, run_id)
    assert run["cost_micros"] == first + added["usd_micros"]
    lines = bill_lines(docket)
    assert [(ln["run_id"], ln["job"]) for ln in lines] == [(run_id, "ingest")] * 2
    assert sum(ln["usd_micros"] for ln in lines) == run["cost_micros"]
    assert lines[1]["protocol"] == pid and lines[1]["label"] == "ingest"
    audited = docket("audit")
    assert audited.exit_code == 0, audited.output  # the cost chain still verifies

    before = counts(docket.url)
    r = docket("cost", "add", "--run", "999", "--hardware", "a40", "--usd", "1")
    assert r.exit_code == 2 and "--run 999: no run #999" in r.output, r.output
    r = docket("cost", "add", "--run", str(run_id), "--protocol", pid, "--hardware", "a40",
               "--usd", "1")  # fmt: skip
    assert r.exit_code == 2 and "not both" in r.output
    assert counts(docket.url) == before


def test_cost_add_refuses_a_run_that_has_not_ended(docket_sqlite, tmp_path: Path) -> None:
    """A running run's metered cost is written when it finishes (which sets its cost_micros);
    a cost attached before would be overwritten, so it is refused."""
    from docketml.ledger.store.db import open_ledger
    from docketml.ledger.store.models import ProtocolRow
    from docketml.ledger.store.runs import create_run, start_run

    docket = docket_sqlite
    pid = frozen(docket, tmp_path)
    led = open_ledger(docket.url)
    try:
        with led.session() as s:
            proto = s.query(ProtocolRow).filter_by(protocol_id=pid).one()
            run = create_run(
                s, protocol_pk=proto.id, protocol_sha256=proto.sha256, job="probe",
                kind="synthetic", config={},
            )  # fmt: skip
            start_run(s, run.id, worker="test")
            run_id = run.id
    finally:
        led.engine.dispose()
    before = counts(docket.url)
    r = docket("cost", "add", "--run", str(run_id), "--hardware", "a40", "--usd", "1")
    assert r.exit_code == 2 and "the run is running" in r.output, r.output
    assert counts(docket.url) == before
