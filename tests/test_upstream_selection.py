"""Downstream jobs (``after:``) consume the upstream run the one selection rule
(:func:`docketml.ledger.verdicts.select_runs`) selects -- by default the first succeeded run --
never the latest: the seed-flip scenario for checkpoints. A later rerun of the upstream does not
change what a (re)run of the downstream reads."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from distributed_helpers import freeze, runs_of
from sqlalchemy import select

from docketml.ledger.errors import CheckFailed
from docketml.ledger.store.db import Ledger
from docketml.ledger.store.models import ObservationRow
from docketml.runners.execute.executor import run_protocol

ENTRY = """
from pathlib import Path

def up(run):
    run.fire("tag")
    path = Path(f"up-{run.id}.ckpt")
    path.write_text(str(run.id))  # the checkpoint names the run that wrote it
    run.checkpoint(path)
    run.observe(group="g1", item="x", signal="s", value=float(run.id), label=0)

def down(run):
    upstream = int(Path(run.inputs["up"]).read_text())
    run.observe(group="g1", item="x", signal="s", value=float(upstream), label=0)
"""


def consumed(ledger: Ledger, run_id: int) -> int:
    with ledger.session() as session:
        value = session.scalar(
            select(ObservationRow.value).where(
                ObservationRow.run_id == run_id, ObservationRow.signal == "s"
            )
        )
    return int(value)


@pytest.fixture
def entry_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    module = "upsel_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{module}.py").write_text(ENTRY)
    monkeypatch.chdir(tmp_path)
    return module


def test_a_rerun_of_the_upstream_does_not_change_what_downstream_reads(
    sqlite_ledger: Ledger, entry_module: str
) -> None:
    jobs = [
        {"name": "up", "kind": "python", "entry": f"{entry_module}:up", "params": {"tag": 1}},
        {"name": "down", "kind": "python", "entry": f"{entry_module}:down", "after": ["up"]},
    ]
    pk = freeze(sqlite_ledger, "upsel", jobs)
    outcomes = run_protocol(sqlite_ledger, "upsel", show_progress=False)
    assert [o.status for o in outcomes] == ["succeeded", "succeeded"], outcomes
    first_up = runs_of(sqlite_ledger, pk)["up"][0].id
    # rerun the upstream (force): a newer succeeded run of `up` now exists
    again = run_protocol(sqlite_ledger, "upsel", job="up", show_progress=False)
    assert again[0].status == "succeeded" and again[0].run_id != first_up
    # rerun the downstream: it still reads the first run's checkpoint (select: first)
    down = run_protocol(sqlite_ledger, "upsel", job="down", show_progress=False)[0]
    assert down.status == "succeeded", down.error
    downs = runs_of(sqlite_ledger, pk)["down"]
    assert [consumed(sqlite_ledger, r.id) for r in downs] == [first_up, first_up]


def test_replicated_upstream_gives_the_selected_replicate(
    sqlite_ledger: Ledger, entry_module: str
) -> None:
    """``select: first`` over replicates: the earliest succeeded replicate, whatever seed ran
    later or again; a seed rerun does not move it."""
    jobs = [
        {"name": "up", "kind": "python", "entry": f"{entry_module}:up", "params": {"tag": 1},
         "replicates": {"seeds": [5, 6]}},
        {"name": "down", "kind": "python", "entry": f"{entry_module}:down", "after": ["up"]},
    ]  # fmt: skip
    pk = freeze(sqlite_ledger, "upsel-rep", jobs)
    run_protocol(sqlite_ledger, "upsel-rep", show_progress=False)
    ups = runs_of(sqlite_ledger, pk)["up"]
    assert [r.seed for r in ups] == [5, 6]
    run_protocol(sqlite_ledger, "upsel-rep", job="up", show_progress=False)  # both seeds again
    run_protocol(sqlite_ledger, "upsel-rep", job="down", show_progress=False)
    downs = runs_of(sqlite_ledger, pk)["down"]
    assert [consumed(sqlite_ledger, r.id) for r in downs] == [ups[0].id, ups[0].id]


def test_an_upstream_without_a_selectable_run_is_refused(
    sqlite_ledger: Ledger, entry_module: str
) -> None:
    jobs = [
        {"name": "up", "kind": "python", "entry": f"{entry_module}:up", "params": {"tag": 1},
         "replicates": {"seeds": [5, 6]}, "select": "all"},
        {"name": "down", "kind": "python", "entry": f"{entry_module}:down", "after": ["up"]},
    ]  # fmt: skip
    freeze(sqlite_ledger, "upsel-missing", jobs)
    with pytest.raises(CheckFailed, match=r"needs 'up' to have succeeded.*no succeeded run of"):
        run_protocol(sqlite_ledger, "upsel-missing", job="down", show_progress=False)
