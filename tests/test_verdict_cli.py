"""``docket verdict`` through the CLI on SQLite and PostgreSQL: register, freeze, ingest,
verdict; amendments; silent_noop runs; the recorded inputs hash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sqlalchemy import func, select, update

from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.models import ObservationRow, VerdictRow
from docketml.ledger.store.runs import complete_run, create_run
from docketml.ledger.verdicts import recompute_inputs_sha256

PROTOCOL = (
    Path(__file__).resolve().parents[1] / "protocols" / "library" / "router_entropy_metacog.yaml"
)
PID = "router-entropy-metacog"
GROUPS = [
    "in_domain",
    "ood_topic",
    "ood_style",
    "long_input",
    "gibberish",
    "factual_misleading",
    "neo_false_inability",
]
N = 20


def probe_rows(seed: int, effect: float = 1.5, abstain: float = 1.0) -> list[dict]:
    """Per-item results of a probe: router entropy separates OOD, the confidences barely."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in GROUPS:
        ood = g != "in_domain"
        for i in range(N):
            rows.append(
                {
                    "group": g,
                    "item": f"{g}-{i:02d}",
                    "label": "ood" if ood else "in_domain",
                    "signals": {
                        "router_entropy_mean": float(rng.normal(effect * ood)),
                        "router_conf": float(-rng.normal(0.2 * ood)),
                        "max_softmax_mean": float(-rng.normal(0.1 * ood)),
                        "max_softmax_last": float(-rng.normal(0.0)),
                        "abstain_p": float(rng.normal(abstain * ood)),
                    },
                }
            )
    return rows


def ingest(docket, tmp_path: Path, job: str, rows: list[dict]) -> int:
    path = tmp_path / f"{job}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = docket("ingest", PID, str(path), "--job", job, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["run_id"]


def freeze_shipped(docket) -> None:
    r = docket("protocol", "register", str(PROTOCOL))
    assert r.exit_code == 0, r.output
    r = docket("protocol", "freeze", PID)
    assert r.exit_code == 0, r.output


def verdict_json(docket) -> dict:
    r = docket("verdict", PID, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def runner_run(
    led, job: str, status: str, rows: list[dict] | None = None, knobs: tuple[str, ...] = ()
) -> int:
    """A run recorded the way the executor records one (source runner)."""
    with led.session() as s:
        row = store.latest_frozen(s, PID)
        run = create_run(
            s,
            protocol_pk=row.id,
            protocol_sha256=row.sha256,
            job=job,
            kind="probe",
            config={},
            status="running",
        )
        obs = [
            {
                "group": r["group"],
                "item": r["item"],
                "label": int(r["group"] != "in_domain"),
                "signal": k,
                "value": v,
            }
            for r in rows or []
            for k, v in r["signals"].items()
        ]
        assert complete_run(s, run.id, status=status, observations=obs, silent_noop_knobs=knobs)
        return run.id


def test_register_freeze_ingest_verdict(docket, tmp_path: Path) -> None:
    freeze_shipped(docket)
    base = probe_rows(1)
    ingest(docket, tmp_path, "probe_base", base)
    ingest(docket, tmp_path, "probe_v7", probe_rows(2, abstain=1.2))
    ingest(docket, tmp_path, "probe_splice", probe_rows(3, abstain=1.1))
    ingest(docket, tmp_path, "probe_corollary", probe_rows(4, abstain=2.0))
    data = verdict_json(docket)

    led = open_ledger(docket.url)
    try:
        with led.session() as s:
            row = store.latest_frozen(s, PID)
            assert data["protocol_sha256"] == row.sha256 and data["version"] == 1
            recorded = list(s.scalars(select(VerdictRow)))
            assert len(recorded) == 1 and recorded[0].id == data["verdict_id"]
            assert recorded[0].inputs_sha256 == data["inputs_sha256"]
            assert recompute_inputs_sha256(s, recorded[0]) == data["inputs_sha256"]
    finally:
        led.engine.dispose()

    hyps = {h["id"]: h for h in data["hypotheses"]}
    assert set(hyps) == {"H1", "H2", "H3", "D1", "D2", "D3", "H4"}
    # the held-out refusal gate reads job idk_gate, which has no run here
    assert hyps["D3"]["verdict"] == "INCONCLUSIVE" and "idk_gate" in hyps["D3"]["why"]
    assert hyps["H4"]["verdict"] in ("INCONCLUSIVE", "DISPROVEN")
    assert data["verdict"] == hyps["H1"]["verdict"] and data["primary"] == "H1"
    h1 = hyps["H1"]
    assert isinstance(h1["wins"], int) and len(h1["groups"]) == 12  # 6 contests x 2 candidates
    for g in h1["groups"]:
        assert set(g) >= {
            "group",
            "candidate",
            "auroc",
            "baseline",
            "baseline_auroc",
            "delta",
            "ci_low",
            "ci_high",
            "win",
        }
    # one AUROC against scikit-learn: gibberish vs in_domain, router_entropy_mean
    row = next(
        g
        for g in h1["groups"]
        if g["group"] == "gibberish" and g["candidate"] == "router_entropy_mean"
    )
    pos = [r["signals"]["router_entropy_mean"] for r in base if r["group"] == "gibberish"]
    neg = [r["signals"]["router_entropy_mean"] for r in base if r["group"] == "in_domain"]
    assert abs(row["auroc"] - roc_auc_score([1] * N + [0] * N, pos + neg)) < 1e-12
    assert hyps["H2"]["paired"] is True and hyps["H2"]["verdict"] in (
        "PROVEN",
        "PARTIAL",
        "DISPROVEN",
    )
    assert hyps["H3"]["value"] > 0.75
    assert data["ignored_runs"]["count"] == 0 and data["amendments"]["exist"] is False

    again = verdict_json(docket)  # deterministic: same inputs, same numbers
    assert again["inputs_sha256"] == data["inputs_sha256"]
    assert again["hypotheses"] == data["hypotheses"]

    human = docket("verdict", PID)
    assert human.exit_code == 0
    for word in ("best baseline", "its AUROC", "delta", "CI", "win", "verdict:", "H2", "H3"):
        assert word in human.output


def test_amended_version_ignores_runs_of_other_versions(docket, tmp_path: Path) -> None:
    freeze_shipped(docket)
    for job, seed in (("probe_base", 1), ("probe_v7", 2), ("probe_splice", 3)):
        ingest(docket, tmp_path, job, probe_rows(seed))
    v1 = verdict_json(docket)
    assert v1["version"] == 1

    amended = tmp_path / "amended.yaml"
    amended.write_text(PROTOCOL.read_text().replace("margin: 0.02", "margin: 0.03"))
    r = docket("protocol", "amend", PID, str(amended), "--reason", "tighter margin")
    assert r.exit_code == 0, r.output
    # v2 is registered but not frozen: the verdict still uses v1 and says v2 exists
    pending = verdict_json(docket)
    assert pending["version"] == 1 and pending["amendments"]["exist"] is True
    assert "v2" in pending["amendments"]["note"] and "not used" in pending["amendments"]["note"]

    assert docket("protocol", "freeze", PID).exit_code == 0
    v2 = verdict_json(docket)
    assert v2["version"] == 2 and v2["protocol_sha256"] != v1["protocol_sha256"]
    assert v2["ignored_runs"]["count"] == 3 and v2["ignored_runs"]["by_version"] == {"v1": 3}
    assert "3 run(s) bound to other versions ignored" in v2["ignored_runs"]["note"]
    assert v2["amendments"]["exist"] is True
    assert [v["used"] for v in v2["amendments"]["versions"]] == [False, True]
    assert v2["amendments"]["versions"][1]["amendment_reason"] == "tighter margin"
    h1 = v2["hypotheses"][0]
    assert h1["verdict"] == "INCONCLUSIVE"
    assert f"job 'probe_base' has no succeeded run bound to {PID} v2" in h1["why"]
    assert v2["runs"] == []

    ingest(docket, tmp_path, "probe_base", probe_rows(1))  # binds to v2
    v2b = verdict_json(docket)
    assert v2b["hypotheses"][0]["verdict"] != "INCONCLUSIVE"
    assert [r["job"] for r in v2b["runs"]] == ["probe_base"]
    human = docket("verdict", PID).output
    assert "amended" in human and "ignored" in human


def test_silent_noop_runs_make_the_verdict_inconclusive(docket, tmp_path: Path) -> None:
    freeze_shipped(docket)
    ingest(docket, tmp_path, "probe_base", probe_rows(1))
    led = open_ledger(docket.url)
    try:
        runner_run(led, "probe_splice", "succeeded", probe_rows(3))
        runner_run(led, "probe_v7", "succeeded", probe_rows(2))
        before = verdict_json(docket)
        h2 = before["hypotheses"][1]
        assert h2["verdict"] != "INCONCLUSIVE", h2["why"]
        # the v7 finetune (an ancestor of probe_v7) turns out to be a silent no-op
        noop = runner_run(led, "v7", "silent_noop", knobs=("mc_weight",))
        after = verdict_json(docket)
        h2 = after["hypotheses"][1]
        assert h2["verdict"] == "INCONCLUSIVE"
        assert f"run #{noop} of job 'v7' is silent_noop: knob(s) mc_weight" in h2["why"]
        assert after["hypotheses"][0]["verdict"] == before["hypotheses"][0]["verdict"]
        # the primary hypothesis's own job: a later silent_noop rerun of probe_base is not the
        # run the verdict reads (select: first keeps the ingested run), so it taints nothing
        runner_run(led, "probe_base", "silent_noop", probe_rows(1), knobs=("temperature",))
        last = verdict_json(docket)
        assert last["hypotheses"][0] == after["hypotheses"][0]
        assert "temperature" not in json.dumps(last["hypotheses"])
        # a silent_noop run of record stays one: a later succeeded splice run does not cleanse
        # the first, silent_noop run of the splice job (probe_splice's ancestor)
        first = runner_run(led, "splice", "silent_noop", knobs=("groups",))
        runner_run(led, "splice", "succeeded")
        h2 = verdict_json(docket)["hypotheses"][1]
        assert h2["verdict"] == "INCONCLUSIVE"
        assert f"run #{first} of job 'splice' is silent_noop: knob(s) groups" in h2["why"]
    finally:
        led.engine.dispose()


def test_tampered_observation_changes_the_recomputed_inputs_hash(docket, tmp_path: Path) -> None:
    freeze_shipped(docket)
    ingest(docket, tmp_path, "probe_base", probe_rows(1))
    data = verdict_json(docket)
    led = open_ledger(docket.url)
    try:
        with led.session() as s:
            vrow = s.scalars(select(VerdictRow)).one()
            assert recompute_inputs_sha256(s, vrow) == data["inputs_sha256"]
            first = s.scalar(select(func.min(ObservationRow.id)))
            s.execute(update(ObservationRow).where(ObservationRow.id == first).values(value=9.0))
        with led.session() as s:
            vrow = s.scalars(select(VerdictRow)).one()
            assert recompute_inputs_sha256(s, vrow) != data["inputs_sha256"]
    finally:
        led.engine.dispose()


def test_verdict_of_an_unfrozen_protocol_exits_1(docket_sqlite) -> None:
    assert docket_sqlite("protocol", "register", str(PROTOCOL)).exit_code == 0
    r = docket_sqlite("verdict", PID)
    assert r.exit_code == 1 and "not frozen" in r.output


def test_repeated_looks_add_no_verdict_rows_and_are_all_logged(docket, tmp_path: Path) -> None:
    freeze_shipped(docket)
    for seed, job in enumerate(("probe_base", "probe_v7", "probe_splice"), 1):
        ingest(docket, tmp_path, job, probe_rows(seed, abstain=1.0 + seed / 10))
    first = verdict_json(docket)
    assert first["recorded"] == "verdict"
    again = [verdict_json(docket) for _ in range(3)]
    assert [a["recorded"] for a in again] == ["look"] * 3
    assert {a["verdict_id"] for a in again} == {first["verdict_id"]}
    assert {a["inputs_sha256"] for a in again} == {first["inputs_sha256"]}
    # new inputs (a job's first run; a rerun of probe_v7 would not count under select: first)
    ingest(docket, tmp_path, "probe_corollary", probe_rows(9, abstain=1.3))
    changed = verdict_json(docket)
    assert changed["recorded"] == "verdict" and changed["verdict_id"] != first["verdict_id"]
    assert changed["inputs_sha256"] != first["inputs_sha256"]

    led = open_ledger(docket.url)
    try:
        with led.session() as s:
            assert len(list(s.scalars(select(VerdictRow)))) == 2
    finally:
        led.engine.dispose()
    history = json.loads(docket("verdict", PID, "--history", "--json").stdout)
    assert [e["kind"] for e in history] == ["verdict", "look", "look", "look", "verdict"]
    assert all(e["verdict_id"] == first["verdict_id"] for e in history[:4])
    assert history[1]["who"] and "@" in history[1]["who"]
    human = docket("verdict", PID, "--history")
    assert human.exit_code == 0 and "look" in human.output


def test_bracketed_text_prints_literally_not_as_rich_markup() -> None:
    """Rule texts and cells such as ``[gibberish, factual_misleading]`` are data: rich must not
    swallow them as markup tags."""
    from rich.console import Console

    from docketml.ledger.cli.common import table
    from docketml.ledger.cli.verdict import print_verdict

    data = {
        "protocol": "p[x]",
        "version": 1,
        "protocol_sha256": "0" * 64,
        "amendments": {"note": "no amendments [none]"},
        "ignored_runs": {"note": "ignored [bold]nothing[/bold]"},
        "runs": [{"id": 1, "job": "probe[v7]"}],
        "hypotheses": [
            {
                "id": "H1",
                "rule": "r",
                "kind": "other",
                "verdict": "PROVEN",
                "why": "needs one of [gibberish, factual_misleading]",
            }
        ],
        "verdict": "PROVEN",
        "primary": "H1",
        "inputs_sha256": "1" * 64,
    }
    console = Console(record=True, width=200)
    print_verdict(data, console)
    console.print(table("t", ["group"], [["[red]g[/red]"]]))
    out = console.export_text()
    for literal in (
        "p[x]",
        "[none]",
        "[bold]nothing[/bold]",
        "probe[v7]",
        "[gibberish, factual_misleading]",
        "[red]g[/red]",
    ):
        assert literal in out, literal
