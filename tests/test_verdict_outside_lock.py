"""A verdict reads and computes outside the write lock (ledger.verdicts.verdict_outside_lock).

On SQLite a write transaction (``BEGIN IMMEDIATE``) holds the database's write lock; a verdict
computed inside one made every other writer wait for the whole verdict (34 s for a cost line
during a 10^7-observation verdict, measured before this change). Now the verdict is computed in
a read-only snapshot and recorded in a short write transaction. These tests write from a second
engine *while the verdict is reading* (a SQLAlchemy statement hook fires on the verdict's first
metrics query), on both backends:

* the concurrent write goes through at once (0.5 s lock timeout) -- and the control, the old
  single write transaction, makes the same write fail on SQLite ("database is locked"), so the
  check can fail;
* a run that finishes during the read is not missed: the stamp (:func:`verdict_stamp`) changed,
  so the verdict is computed again under the lock and records the new run;
* an unrelated write (a cost line) leaves the stamp alone: the snapshot's result is recorded,
  the same as :func:`compute_verdict` in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from docketml.ledger.billing.costs import append_cost
from docketml.ledger.errors import LedgerBusy
from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import Ledger, init_ledger
from docketml.ledger.store.runs import complete_run, create_run
from docketml.ledger.verdicts import compute_verdict, verdict_outside_lock
from docketml.protocols.loader import load_protocol_text

PROTOCOL = """docket: 1
id: lockless
title: a verdict beside writers
hypotheses:
  - {id: H1, statement: cand beats base, rule: wins}
signals:
  cand: {higher_means: positive}
  base: {higher_means: positive, role: baseline}
labels: {source: judged, positive: failure}
groups: [g]
decision_rules:
  wins:
    kind: regime_wins
    job: probe
    candidates: [cand]
    baselines: [base]
    margin: 0.0
    ci: {method: delong, level: 0.9}
    verdicts:
      PROVEN: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
jobs:
  - {name: probe, kind: python, entry: "x:y"}
"""


def _observations(strength: float) -> list[dict]:
    out = []
    for k in range(40):
        label = k % 2
        out.append({"group": "g", "item": f"i{k}", "label": label, "signal": "cand",
                    "value": strength * label + (k % 7) / 7})  # fmt: skip
        out.append({"group": "g", "item": f"i{k}", "label": label, "signal": "base",
                    "value": (k % 5) / 5})  # fmt: skip
    return out


def _frozen(ledger: Ledger) -> tuple[int, str]:
    with ledger.session() as s:
        row = store.register(s, load_protocol_text(PROTOCOL, "lockless.yaml")).row
        row, _, _ = store.freeze(s, row.protocol_id, lambda _p: {"passed": True, "checks": []})
        return row.id, row.sha256


def _succeeded_run(ledger: Ledger, pk: int, sha: str, strength: float) -> int:
    with ledger.session() as s:
        run = create_run(s, protocol_pk=pk, protocol_sha256=sha, job="probe", kind="python",
                         config={}, status="running")  # fmt: skip
        complete_run(s, run.id, status="succeeded", observations=_observations(strength),
                     wall_s=1.0)  # fmt: skip
        return run.id


@contextmanager
def during_the_read(
    ledger: Ledger, action: Callable[[], None], table: str = "metrics"
) -> Iterator[list[BaseException]]:
    """Run ``action`` once, from inside the verdict, at its first statement reading ``table``
    (``metrics``: the per-source read just before the observations; ``runs``: the run selection,
    after the snapshot's first read); what it raised is collected."""
    raised: list[BaseException] = []
    fired = []

    def hook(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if not fired and f"FROM {table}" in statement:
            fired.append(True)
            try:
                action()
            except BaseException as exc:  # noqa: BLE001 - asserted by the test
                raised.append(exc)

    event.listen(ledger.engine, "before_cursor_execute", hook)
    try:
        yield raised
    finally:
        event.remove(ledger.engine, "before_cursor_execute", hook)
    assert fired, f"the hook never fired: the verdict no longer reads {table} through SQLAlchemy"


@pytest.fixture
def other_writer(ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    """A second engine on the same ledger that waits at most 0.5 s for a lock."""
    monkeypatch.setenv("DOCKET_LOCK_TIMEOUT_S", "0.5")
    led = init_ledger(ledger_url)
    yield led
    led.engine.dispose()


def _cost(led: Ledger) -> None:
    with led.session() as s:
        append_cost(s, hardware="cpu", usd_micros=10, label="beside a verdict")


def test_a_write_goes_through_while_a_verdict_reads(ledger: Ledger, other_writer: Ledger) -> None:
    pk, sha = _frozen(ledger)
    _succeeded_run(ledger, pk, sha, strength=1.0)
    with during_the_read(ledger, lambda: _cost(other_writer)) as raised:
        out = verdict_outside_lock(ledger, "lockless")
    assert raised == []
    assert out["recorded"] == "verdict" and out["verdict"] == "PROVEN"
    with ledger.read_session() as s:
        from docketml.ledger.store.models import CostRow

        assert [c.label for c in s.query(CostRow)] == ["beside a verdict"]


def test_control_one_write_transaction_blocks_the_writer_on_sqlite(
    sqlite_ledger: Ledger, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the test above would see without the change: the verdict inside one write
    transaction holds SQLite's write lock, so the same write times out."""
    monkeypatch.setenv("DOCKET_LOCK_TIMEOUT_S", "0.5")
    other = init_ledger(sqlite_url)
    pk, sha = _frozen(sqlite_ledger)
    _succeeded_run(sqlite_ledger, pk, sha, strength=1.0)
    with during_the_read(sqlite_ledger, lambda: _cost(other)) as raised:
        with sqlite_ledger.session() as s:
            compute_verdict(s, "lockless")
    other.engine.dispose()
    assert len(raised) == 1
    assert isinstance(raised[0], LedgerBusy) or "database is locked" in str(raised[0])


def test_a_run_finishing_during_the_read_is_computed_again_under_the_lock(
    ledger: Ledger, other_writer: Ledger
) -> None:
    pk, sha = _frozen(ledger)
    finish = lambda: finished.append(_succeeded_run(other_writer, pk, sha, strength=1.0))  # noqa: E731
    with during_the_read(ledger, finish, table="runs") as raised:
        finished: list[int] = []
        out = verdict_outside_lock(ledger, "lockless")
    assert raised == [] and len(finished) == 1
    # SQLite's snapshot saw no run (INCONCLUSIVE), so the stamp moved and the verdict was
    # computed again; PostgreSQL's next statement already saw it: both record the finished run
    assert out["verdict"] == "PROVEN"
    assert [r["id"] for r in out["runs"]] == finished
    with ledger.session() as s:
        again = compute_verdict(s, "lockless")
    assert again["recorded"] == "look" and again["verdict_id"] == out["verdict_id"]


def test_an_unrelated_write_keeps_the_snapshot_result(ledger: Ledger, other_writer: Ledger) -> None:
    pk, sha = _frozen(ledger)
    run_id = _succeeded_run(ledger, pk, sha, strength=0.0)
    with during_the_read(ledger, lambda: _cost(other_writer)) as raised:
        out = verdict_outside_lock(ledger, "lockless")
    assert raised == []
    assert out["recorded"] == "verdict" and [r["id"] for r in out["runs"]] == [run_id]
    with ledger.session() as s:
        same = compute_verdict(s, "lockless")
    assert same["recorded"] == "look" and same["inputs_sha256"] == out["inputs_sha256"]
    assert same["hypotheses"] == out["hypotheses"]
