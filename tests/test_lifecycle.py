"""Run lifecycle under crashes: queued -> running (heartbeat lease) -> succeeded | failed |
abandoned, on SQLite and PostgreSQL.

- A real ``docket run`` process is killed with SIGKILL mid-job: its run stays ``running`` until the
  lease expires, then any docket command (here ``docket runs list``) marks it ``abandoned``; its
  cost is kept (a cost row metered to its last heartbeat), it has no observations (results are
  written only in the completing transaction), and re-running the job afterwards succeeds.
- A run whose lease expired while its process was still alive cannot complete: ``complete_run``
  returns False and writes nothing; through ``execute_job`` the outcome is ``abandoned``, the
  results are refused and the cost rows still add up to the full metered cost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from distributed_helpers import (
    DOCKET,
    cost_rows,
    docket_env,
    freeze,
    observation_count,
    runs_of,
    subprocess_group,
    wait_for,
)
from sqlalchemy import select

from docketml.ledger.billing.costs import verify_cost_chain
from docketml.ledger.billing.hardware import cost_micros, load_catalog
from docketml.ledger.store.db import Ledger
from docketml.ledger.store.models import CostRow, RunRow, utcnow
from docketml.ledger.store.runs import complete_run, create_run, reap_abandoned, start_run
from docketml.runners.execute.executor import execute_job

LEASE_S = "1.5"


def _status(ledger: Ledger, run_id: int) -> str:
    """The stored status, read without reaping (no docket command involved)."""
    with ledger.session() as session:
        return session.scalar(select(RunRow.status).where(RunRow.id == run_id))


def test_sigkilled_runner_is_abandoned_cost_kept_and_rerun_works(
    ledger: Ledger, docket, ledger_url: str, tmp_path: Path
) -> None:
    pk = freeze(
        ledger,
        "lifecycle",
        [{"name": "long", "kind": "synthetic", "hardware": "a40", "params": {"seconds": 3}}],
    )
    env = docket_env(DOCKET_LEASE_S=LEASE_S, DOCKET_ARTIFACTS=str(tmp_path / "artifacts"))
    args = [DOCKET, "--db", ledger_url, "run", "lifecycle", "--job", "long", "--no-progress"]
    with subprocess_group(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE) as proc:

        def running_run() -> RunRow | None:
            assert proc.poll() is None, "docket run exited before it could be killed"
            runs = runs_of(ledger, pk).get("long", [])
            return runs[0] if runs and runs[0].status == "running" else None

        run = wait_for(running_run, 90, "the run to be running", every=0.05)
        assert run.worker.startswith(f"local:{proc.pid}#")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    # nobody has looked yet: the row still says running (the lease decides, not the pid)
    assert _status(ledger, run.id) == "running"

    def listed_expired() -> list[dict]:
        result = docket("runs", "list", "--json")
        assert result.exit_code == 0, result.output
        return [r for r in json.loads(result.stdout) if r["lease_expired"]]

    expired = wait_for(listed_expired, 15, "docket runs list to show the lease expired", every=0.3)
    assert [r["id"] for r in expired] == [run.id] and expired[0]["status"] == "running"
    assert _status(ledger, run.id) == "running"  # the query wrote nothing
    reaped = docket("runs", "reap", "--json")
    assert reaped.exit_code == 0, reaped.output
    assert [r["id"] for r in json.loads(reaped.stdout)] == [run.id]
    abandoned = json.loads(docket("runs", "list", "--status", "abandoned", "--json").stdout)
    assert [r["id"] for r in abandoned] == [run.id]
    assert "lease expired" in abandoned[0]["error"]
    assert abandoned[0]["cost_micros"] > 0
    # its cost is kept: one cost row, metered to the last heartbeat at the a40 rate
    costs = cost_rows(ledger, run.id)
    assert len(costs) == 1 and costs[0].hardware == "a40" and "abandoned" in costs[0].note
    assert costs[0].usd_micros == abandoned[0]["cost_micros"]
    assert costs[0].wall_s == pytest.approx(abandoned[0]["wall_s"])
    # its observations never count: it has none
    assert observation_count(ledger, run.id) == 0
    # re-running the job afterwards works
    result = docket("run", "lifecycle", "--job", "long", "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    [outcome] = json.loads(result.stdout)
    assert outcome["status"] == "succeeded" and outcome["run_id"] != run.id
    assert observation_count(ledger, outcome["run_id"]) == 2 * 30  # default n_per_class, 1 signal
    assert [r.status for r in runs_of(ledger, pk)["long"]] == ["abandoned", "succeeded"]
    with ledger.session() as session:
        chain = list(session.scalars(select(CostRow).order_by(CostRow.seq)))
    assert verify_cost_chain(chain) == [] and len(chain) == 2


def test_complete_run_refuses_a_run_whose_lease_expired(ledger: Ledger) -> None:
    """The process is alive but missed its heartbeats: once reaped, its results are refused."""
    pk = freeze(ledger, "late", [{"name": "j", "kind": "sleep", "hardware": "a40"}])
    with ledger.session() as session:
        run = create_run(
            session,
            protocol_pk=pk,
            protocol_sha256="x" * 64,
            job="j",
            kind="sleep",
            config={},
            hardware="a40",
        )
        start_run(session, run.id, worker="test#late", lease_s=0.5)
        run_id = run.id
    with ledger.session() as session:
        reaped = reap_abandoned(session, now=utcnow() + timedelta(seconds=1))
        assert [r.id for r in reaped] == [run_id]
    observations = [{"group": "g1", "item": "i1", "signal": "s", "value": 1.0, "label": 1}]
    with ledger.session() as session:
        written = complete_run(
            session,
            run_id,
            status="succeeded",
            observations=observations,
            metrics=[{"name": "m", "value": 1.0}],
            wall_s=1.0,
        )
    assert written is False
    assert _status(ledger, run_id) == "abandoned"
    assert observation_count(ledger, run_id) == 0
    assert len(cost_rows(ledger, run_id)) == 1  # the reaper kept its cost
    with ledger.session() as session:  # reaping again changes nothing
        assert reap_abandoned(session, now=utcnow() + timedelta(hours=1)) == []
    assert len(cost_rows(ledger, run_id)) == 1


def test_execute_job_outliving_its_lease_is_abandoned_and_refused(ledger: Ledger) -> None:
    """Through the real executor: another docket process reaps the run while its job computes
    (as if its heartbeats had stopped); the job's results are refused and the rest of its cost is
    appended, so the run's cost rows add up to its full metered cost."""
    pk = freeze(
        ledger,
        "outlive",
        [{"name": "slow", "kind": "synthetic", "hardware": "a40", "params": {"seconds": 1.5}}],
    )

    def reap_when_running() -> None:
        run = wait_for(lambda: runs_of(ledger, pk).get("slow"), 30, "the run to start")[0]
        with ledger.session() as session:  # an hour later, for this reaper
            assert [r.id for r in reap_abandoned(session, now=utcnow() + timedelta(hours=1))] == [
                run.id
            ]

    reaper = threading.Thread(target=reap_when_running)
    reaper.start()
    outcome = execute_job(ledger, pk, "slow", worker="local:test")
    reaper.join()
    assert outcome.status == "abandoned"
    assert "results were refused" in outcome.error
    assert observation_count(ledger, outcome.run_id) == 0
    costs = cost_rows(ledger, outcome.run_id)
    assert len(costs) == 2 and "abandoned" in costs[0].note and "remainder" in costs[1].note
    full = cost_micros(load_catalog()["a40"], outcome.wall_s)
    assert sum(c.usd_micros for c in costs) == full == outcome.cost_micros
    with ledger.session() as session:
        run = session.get(RunRow, outcome.run_id)
        assert run.status == "abandoned" and run.cost_micros == full
