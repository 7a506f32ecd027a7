"""The budget check is serialised: concurrent ``docket run`` never commit more than the budget.

Issue 16: 4 concurrent ``docket run`` of a $0.04 job under a $0.05 budget all ran, on both
backends, because spend counted only finished runs. Now a run opened by the executor reserves its
estimate (``ledger.billing.budget``) under the protocol's budget lock, and the reservation is
counted while the run is queued or running. 4 processes (spawn) wait at a barrier and then each
invoke the real CLI (``docket run``): exactly one runs, three are refused with exit 1 and the
budget message naming the reservation.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from docketml.ledger.billing.budget import RESERVATION_KEY, reserved_micros, spent_micros
from docketml.ledger.errors import CheckFailed
from docketml.ledger.store.db import open_ledger
from docketml.ledger.store.models import ProtocolRow, RunRow, utcnow
from docketml.ledger.store.runs import reap_abandoned
from docketml.runners.context import KnobAudit
from docketml.runners.execute.executor import finish_job, open_job

# a40: $0.40/h, 300 s setup, per-minute billing: 60 s estimated = 360 s billed = $0.04 per run
# (a 5 s run costs the same); under a $0.05 budget exactly one fits
RACE_PROTOCOL = """\
docket: 1
id: race
title: Four runs of a four-cent job under a five-cent budget
hypotheses:
  - {id: H1, statement: it slept, rule: r}
decision_rules:
  r: {kind: threshold, statistic: metric, metric: slept_s, job: nap, op: ">=", bound: 0.0}
jobs:
  - {name: nap, kind: sleep, hardware: a40, estimate_seconds: 60, params: {seconds: SLEEP}}
budget: {usd: 0.05}
"""
RACERS = 4


def _freeze(docket: Any, tmp_path: Path, seconds: float, budget: str = "0.05") -> str:
    path = tmp_path / "race.yaml"
    text = RACE_PROTOCOL.replace("SLEEP", str(seconds)).replace("usd: 0.05", f"usd: {budget}")
    path.write_text(text, encoding="utf-8")
    registered = docket("protocol", "register", str(path), "--json")
    assert registered.exit_code == 0, registered.output
    pid = json.loads(registered.output)["id"]
    frozen = docket("protocol", "freeze", pid)
    assert frozen.exit_code == 0, frozen.output
    return pid


def _racer(url: str, cwd: str, pid: str, barrier: Any, results: Any) -> None:
    """One ``docket run`` through the real CLI, started together with the others."""
    from click.testing import CliRunner

    from docketml.ledger.cli.main import cli

    os.chdir(cwd)
    runner = CliRunner()
    barrier.wait(timeout=120)
    result = runner.invoke(cli, ["--db", url, "run", pid, "--no-progress"])
    results.put((result.exit_code, result.output))


@pytest.mark.slow
def test_concurrent_runs_never_exceed_the_budget(docket: Any, tmp_path: Path) -> None:
    pid = _freeze(docket, tmp_path, seconds=5.0)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(RACERS), ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(docket.url, str(tmp_path), pid, barrier, results))
        for _ in range(RACERS)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    codes = sorted(code for code, _ in outcomes)
    assert codes == [0, 1, 1, 1], outcomes
    for code, output in outcomes:
        if code == 1:
            assert "budget exceeded for job 'nap'" in output, output
            # refused while the one run holds its reservation (or, on a machine slow enough
            # that it already finished, by its real cost): never a second run
            reserved = "reserved $0.04 by 1 running run(s)" in output
            assert reserved or "spent $0.04 +" in output, output
            assert "Traceback" not in output
    runs = json.loads(docket("runs", "list", "--json").output)
    assert [r["status"] for r in runs] == ["succeeded"]
    bill = json.loads(docket("costs", "--protocol", pid, "--json").output)
    assert bill["total_micros"] <= 50_000


def test_reservation_is_counted_while_running_and_released_at_the_end(
    docket: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An open run's estimate counts against the budget until the run ends: finishing it (its
    real cost replaces the reservation) or reaping it releases the reservation."""
    monkeypatch.setenv("DOCKET_ARTIFACTS", str(tmp_path / "artifacts"))
    pid = _freeze(docket, tmp_path, seconds=0.01, budget="0.09")  # two runs fit, not three
    ledger = open_ledger(docket.url)
    with ledger.session() as session:
        pk = session.scalars(select(ProtocolRow.id).where(ProtocolRow.protocol_id == pid)).one()
    first = open_job(ledger, pk, "nap")
    with ledger.session() as session:
        assert reserved_micros(session, pid) == (40_000, 1)
        extra = json.loads(session.get(RunRow, first.run_id).extra_json)
        assert extra == {RESERVATION_KEY: 40_000}
    second = open_job(ledger, pk, "nap")
    with pytest.raises(CheckFailed, match=r"reserved \$0\.08 by 2 running run\(s\)"):
        open_job(ledger, pk, "nap")
    outcome = finish_job(ledger, first, result=None, knobs=KnobAudit({}), wall_s=1.0, error="x")
    assert outcome.status == "failed" and outcome.cost_micros == 40_000
    with ledger.session() as session:  # the real cost replaced the first reservation
        assert reserved_micros(session, pid) == (40_000, 1)
        assert spent_micros(session, pid) == 40_000
        past = utcnow() - timedelta(seconds=5)
        session.execute(
            update(RunRow).where(RunRow.id == second.run_id).values(lease_expires_at=past)
        )
    with ledger.session() as session:
        assert [r.id for r in reap_abandoned(session)] == [second.run_id]
        assert reserved_micros(session, pid) == (0, 0)
        assert spent_micros(session, pid) > 40_000  # the reaped run is billed what it used
    ledger.engine.dispose()
