"""Helpers shared by the distributed / lifecycle / concurrency / migration tests.

Protocols here use the model-free job kinds of ``runners/jobs/builtin.py`` (sleep, fail,
synthetic), so they need no torch work. They are frozen through ``store.freeze`` with a
sign-check that passes (:func:`passing_sign_check`): what ``docket protocol freeze`` stores
after a passing sign-check (the freeze trigger of revision 0004 refuses a frozen row without
one); these tests are about running, not about the sign-check.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import Ledger
from docketml.ledger.store.models import CostRow, ObservationRow, ProtocolRow, RunRow
from docketml.protocols.loader import load_protocol_text

REPO = Path(__file__).resolve().parents[1]
DOCKET = str(Path(sys.executable).with_name("docket"))


def protocol_yaml(protocol_id: str, jobs: list[dict[str, Any]]) -> str:
    """A small valid protocol with the given ``jobs:`` entries (JSON flow style is YAML)."""
    lines = [
        "docket: 1",
        f"id: {protocol_id}",
        "title: distributed execution test",
        "hypotheses:",
        "  - {id: H1, statement: the synthetic signal separates the classes, rule: r1}",
        "signals:",
        "  s: {higher_means: positive}",
        "labels: {source: judged, positive: failure}",
        "groups: [g1]",
        "decision_rules:",
        "  r1: {kind: threshold, statistic: auroc, signal: s, bound: 0.6}",
        "jobs:",
    ]
    lines += [f"  - {json.dumps(job)}" for job in jobs]
    return "\n".join(lines) + "\n"


def passing_sign_check(_protocol: Any) -> dict[str, Any]:
    """A sign-check that passes without looking (for tests about running)."""
    return {"passed": True, "checks": []}


def freeze(ledger: Ledger, protocol_id: str, jobs: list[dict[str, Any]]) -> int:
    """Register and freeze a protocol with ``jobs``; return its primary key."""
    loaded = load_protocol_text(protocol_yaml(protocol_id, jobs), f"{protocol_id}.yaml")
    with ledger.session() as session:
        row = store.register(session, loaded).row
        store.freeze(session, row.protocol_id, passing_sign_check)
        return row.id


def runs_of(ledger: Ledger, protocol_pk: int) -> dict[str, list[RunRow]]:
    """Runs of a protocol by job name, oldest first."""
    out: dict[str, list[RunRow]] = {}
    with ledger.session() as session:
        for run in session.scalars(
            select(RunRow).where(RunRow.protocol_pk == protocol_pk).order_by(RunRow.id)
        ):
            out.setdefault(run.job, []).append(run)
    return out


def cost_rows(ledger: Ledger, run_id: int) -> list[CostRow]:
    with ledger.session() as session:
        return list(
            session.scalars(select(CostRow).where(CostRow.run_id == run_id).order_by(CostRow.seq))
        )


def observation_count(ledger: Ledger, run_id: int) -> int:
    with ledger.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(ObservationRow)
                .where(ObservationRow.run_id == run_id)
            )
            or 0
        )


def protocol_row(ledger: Ledger, protocol_pk: int) -> ProtocolRow:
    with ledger.session() as session:
        row = session.get(ProtocolRow, protocol_pk)
        assert row is not None
        return row


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def docket_env(**extra: str) -> dict[str, str]:
    """Environment for a ``docket`` subprocess: this repo importable, no inherited DOCKET_DB."""
    env = {k: v for k, v in os.environ.items() if k != "DOCKET_DB"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@contextmanager
def subprocess_group(args: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """Start ``args`` in its own process group; kill the whole group on exit (no leftovers)."""
    proc = subprocess.Popen(args, start_new_session=True, text=True, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)


def cli_json(stdout: str) -> object:
    """The JSON a docket command printed, ignoring lines Ray's log monitor may interleave on the
    driver's stdout (e.g. "(raylet) A worker died ...", printed asynchronously after a worker is
    killed)."""
    lines = [line for line in stdout.splitlines() if "(raylet)" not in line and "(pid=" not in line]
    return json.loads("\n".join(lines))
