"""The Ray executor on a real local Ray cluster (``ray.init(num_cpus=2)``), recording into a real
ledger (PostgreSQL, and SQLite since every worker is on this machine).

Ray is started once for the module (starting it costs ~10 s on two cores); the worker environment
(``DOCKET_ARTIFACTS``, a short ``DOCKET_LEASE_S``) is the same for every test so that Ray reuses
its warm workers. One test, run first, lets the executor start and stop its own Ray.

Covered: dependency order (run timestamps), independent jobs overlapping in time, a failing job
recorded failed with its error and cost while an independent job goes on and its dependants are
skipped with the reason, a Ray worker process killed with SIGKILL (its run is abandoned once its
lease expires, its cost kept), ``docket run P --executor ray`` through the CLI (in-process on the
shared cluster, and as a real subprocess that starts and stops its own Ray), and a SQLite ledger
with a remote Ray address refused with exit 2.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
import ray
from distributed_helpers import (
    cli_json,
    cost_rows,
    freeze,
    observation_count,
    runs_of,
    wait_for,
)

from docketml.ledger.errors import UserError
from docketml.ledger.store.db import Ledger, init_ledger
from docketml.runners.execute.executor import JobOutcome, run_protocol

# slow: Ray; one Ray cluster per test process, never two
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

JOBS = [
    {"name": "a", "kind": "sleep", "params": {"seconds": 2.5}, "num_cpus": 1},
    {"name": "b", "kind": "sleep", "params": {"seconds": 2.5}, "num_cpus": 1},
    {"name": "c", "kind": "synthetic", "after": ["a", "b"], "params": {"n_per_class": 20}},
    {"name": "boom", "kind": "fail", "hardware": "rtx4090", "params": {"message": "kaboom"}},
    {"name": "after_boom", "kind": "sleep", "after": ["boom"]},
    {"name": "after_after", "kind": "sleep", "after": ["after_boom", "a"]},
]


@pytest.fixture(scope="module")
def worker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The environment the executor forwards to Ray workers, one for the whole module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKET_LEASE_S", "2")  # short leases: a killed worker's run expires fast
        patch.setenv("DOCKET_ARTIFACTS", str(tmp_path_factory.mktemp("artifacts")))
        patch.delenv("DOCKET_HARDWARE", raising=False)
        yield


@pytest.fixture(scope="module")
def ray_cluster(worker_env: None) -> Iterator[None]:
    """A real local Ray cluster for this module; the executor uses it and leaves it running."""
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        yield
    finally:
        ray.shutdown()


def check_plan(ledger: Ledger, *, rerun: bool) -> None:
    """Run ``JOBS`` on Ray and check order, overlap, the failure, its cost and the skips."""
    pk = freeze(ledger, "ray-plan", JOBS)
    seen: list[JobOutcome] = []
    outcomes = run_protocol(
        ledger, "ray-plan", executor="ray", show_progress=False, on_outcome=seen.append
    )
    by_job = {o.job: o for o in outcomes}
    # plan (dependency) order
    assert [o.job for o in outcomes] == ["a", "b", "boom", "c", "after_boom", "after_after"]
    assert sorted(o.job for o in seen) == sorted(by_job)  # every outcome reported once
    assert {j: by_job[j].status for j in by_job} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "succeeded",
        "boom": "failed",
        "after_boom": "skipped",
        "after_after": "skipped",
    }
    runs = runs_of(ledger, pk)
    assert set(runs) == {"a", "b", "c", "boom"}  # skipped jobs never start a run
    a, b, c, boom = (runs[j][0] for j in ("a", "b", "c", "boom"))
    # each run was recorded by a Ray worker process, not by this driver
    assert all(r.worker and r.worker.startswith("ray:") for r in (a, b, c, boom))
    assert all(f":{os.getpid()}#" not in r.worker for r in (a, b, c, boom))
    # dependency order: c started after both a and b had finished
    assert c.started_at >= a.finished_at and c.started_at >= b.finished_at
    # independent jobs ran at the same time
    assert a.started_at < b.finished_at and b.started_at < a.finished_at
    assert observation_count(ledger, c.id) == 2 * 20  # one group, two classes, one signal
    # the failure: recorded failed with its error and its cost
    assert boom.status == "failed" and "RuntimeError: kaboom" in boom.error
    assert by_job["boom"].run_id == boom.id and "kaboom" in by_job["boom"].error
    costs = cost_rows(ledger, boom.id)
    assert len(costs) == 1 and costs[0].usd_micros > 0 and costs[0].hardware == "rtx4090"
    assert boom.cost_micros == costs[0].usd_micros == by_job["boom"].cost_micros
    # dependants say why
    assert by_job["after_boom"].error == "dependency 'boom' failed"
    assert by_job["after_after"].error == "dependency 'after_boom' was skipped"
    if not rerun:
        return
    # a second run: everything that succeeded is up to date, the failed job runs again
    again = {
        o.job: o.status
        for o in run_protocol(ledger, "ray-plan", executor="ray", show_progress=False)
    }
    assert again == {
        "a": "up_to_date",
        "b": "up_to_date",
        "c": "up_to_date",
        "boom": "failed",
        "after_boom": "skipped",
        "after_after": "skipped",
    }


def test_plan_on_sqlite_with_the_executors_own_ray(worker_env: None, sqlite_ledger: Ledger) -> None:
    """No Ray running and no address: the executor starts a local Ray (SQLite is fine: every
    worker is on this machine), runs the plan in Ray workers, and shuts Ray down again."""
    assert not ray.is_initialized()
    check_plan(sqlite_ledger, rerun=False)
    assert not ray.is_initialized()


def test_plan_on_postgresql(ray_cluster: None, pg_schema_url: str) -> None:
    """The shared-ledger case, on the module's Ray cluster (which the executor leaves running)."""
    ledger = init_ledger(pg_schema_url)
    try:
        check_plan(ledger, rerun=True)
        assert ray.is_initialized()
    finally:
        ledger.engine.dispose()


def test_killed_ray_worker_is_abandoned_and_its_cost_kept(
    ray_cluster: None, ledger: Ledger, docket
) -> None:
    """SIGKILL the Ray worker process running a job: the driver reports it abandoned, dependants
    are skipped, and once the lease expires any docket command shows the run abandoned."""
    pk = freeze(
        ledger,
        "ray-crash",
        [
            {"name": "long", "kind": "synthetic", "hardware": "a40", "params": {"seconds": 60}},
            {"name": "next", "kind": "sleep", "after": ["long"]},
        ],
    )

    def kill_when_running() -> None:
        run = wait_for(lambda: runs_of(ledger, pk).get("long"), 60, "the run to start")[0]
        assert run.status == "running"
        pid = int(run.worker.split("#")[0].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_running)
    killer.start()
    outcomes = {
        o.job: o for o in run_protocol(ledger, "ray-crash", executor="ray", show_progress=False)
    }
    killer.join()
    long = outcomes["long"]
    assert long.status == "abandoned" and "Ray worker died" in long.error
    assert long.run_id is not None and "lease expires" in long.error
    assert outcomes["next"].status == "skipped"
    assert outcomes["next"].error == "dependency 'long' was abandoned (its worker died)"

    def abandoned() -> list[dict]:
        reaped = docket("runs", "reap", "--json")  # a writer reaps; `runs list` never writes
        assert reaped.exit_code == 0, reaped.output
        result = docket("runs", "list", "--status", "abandoned", "--json")
        assert result.exit_code == 0, result.output
        return cli_json(result.stdout)

    listed = wait_for(abandoned, 15, "the run to be reaped as abandoned", every=0.5)
    assert [r["id"] for r in listed] == [long.run_id]
    assert "lease expired" in listed[0]["error"]
    costs = cost_rows(ledger, long.run_id)
    assert len(costs) == 1 and costs[0].hardware == "a40" and costs[0].usd_micros > 0
    assert "abandoned" in costs[0].note
    assert observation_count(ledger, long.run_id) == 0


def test_docket_run_executor_ray_through_the_cli(ray_cluster: None, ledger: Ledger, docket) -> None:
    freeze(
        ledger,
        "ray-cli",
        [
            {"name": "first", "kind": "synthetic", "params": {"n_per_class": 5}},
            {"name": "second", "kind": "sleep", "after": ["first"], "params": {"seconds": 0.2}},
        ],
    )
    result = docket("run", "ray-cli", "--executor", "ray", "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    data = cli_json(result.stdout)
    assert [(d["job"], d["status"]) for d in data] == [
        ("first", "succeeded"),
        ("second", "succeeded"),
    ]
    listed = cli_json(docket("runs", "list", "--status", "succeeded", "--json").stdout)
    assert sorted(r["job"] for r in listed) == ["first", "second"]
    assert all(r["worker"].startswith("ray:") for r in listed)


def test_sqlite_ledger_with_a_remote_ray_address_is_refused(docket_sqlite, sqlite_url: str) -> None:
    led = init_ledger(sqlite_url)
    freeze(led, "ray-remote", [{"name": "x", "kind": "sleep"}])
    led.engine.dispose()
    result = docket_sqlite(
        "run", "ray-remote", "--executor", "ray", "--address", "ray://10.20.30.40:10001"
    )
    assert result.exit_code == 2
    assert "SQLite" in result.output and "PostgreSQL" in result.output
    assert "remote Ray cluster" in result.output
    runs = cli_json(docket_sqlite("runs", "list", "--json").stdout)
    assert runs == []  # nothing ran, nothing was recorded


def test_job_asking_for_more_than_any_node_has_is_refused(
    ray_cluster: None, sqlite_ledger: Ledger
) -> None:
    """On a local Ray, a task no node can ever fit would wait forever: refused up front."""
    freeze(sqlite_ledger, "ray-huge", [{"name": "huge", "kind": "sleep", "num_cpus": 64}])
    with pytest.raises(UserError, match="num_cpus=64"):
        run_protocol(sqlite_ledger, "ray-huge", executor="ray", show_progress=False)
    assert runs_of(sqlite_ledger, 1) == {}


USER_ENTRY = """
def probe(run):
    run.fire("n")
    run.observe_many(
        {"group": "g1", "item": f"{l}-{i}", "signal": "s", "value": (i * 7 % 5) + l, "label": l}
        for l in (0, 1) for i in range(run.knob("n", default=1))
    )
"""

USER_CHILD = """
import sys, docketml
with docketml.start_run() as run:
    for l in (0, 1):
        for i in range(int(sys.argv[1])):
            run.observe(group="g1", item=f"c{l}-{i}", signal="s", value=i / 3 + l, label=l)
"""


def test_python_and_command_jobs_same_observations_local_and_ray(
    ray_cluster: None, sqlite_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user job kinds run on Ray workers too (cwd and entry modules forwarded), and give
    exactly the observations the local executor records."""
    import sys
    import uuid

    from sqlalchemy import select

    from docketml.ledger.store.models import ObservationRow

    module = "ray_entry_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{module}.py").write_text(USER_ENTRY)
    (tmp_path / "child.py").write_text(USER_CHILD)
    monkeypatch.chdir(tmp_path)
    jobs = [
        {"name": "py", "kind": "python", "entry": f"{module}:probe", "params": {"n": 5}},
        {"name": "cmd", "kind": "command", "command": [sys.executable, "child.py", "{n}"],
         "params": {"n": 4}, "after": ["py"], "num_cpus": 1},
    ]  # fmt: skip
    ledger = init_ledger(sqlite_url)
    seen = {}
    for executor in ("local", "ray"):
        pk = freeze(ledger, f"user-{executor}", jobs)
        outcomes = run_protocol(ledger, f"user-{executor}", executor=executor, show_progress=False)
        assert [o.status for o in outcomes] == ["succeeded", "succeeded"], outcomes
        runs = runs_of(ledger, pk)
        with ledger.session() as session:
            seen[executor] = {
                job: sorted(
                    session.execute(
                        select(
                            ObservationRow.group,
                            ObservationRow.item,
                            ObservationRow.label,
                            ObservationRow.signal,
                            ObservationRow.value,
                        ).where(ObservationRow.run_id == runs[job][0].id)
                    ).all()
                )  # fmt: skip
                for job in ("py", "cmd")
            }
        if executor == "ray":
            assert all(runs[j][0].worker.startswith("ray:") for j in ("py", "cmd"))
    ledger.engine.dispose()
    assert len(seen["local"]["py"]) == 10 and len(seen["local"]["cmd"]) == 8
    assert seen["local"] == seen["ray"]


def test_replicates_run_every_declared_seed_on_ray_as_locally(
    ray_cluster: None, sqlite_url: str
) -> None:
    """A job with ``replicates`` runs once per declared seed on Ray (one task each), its
    dependant waits for every seed, and each seed's observations equal the local executor's;
    a second run leaves every seed up to date."""
    from sqlalchemy import select

    from docketml.ledger.store.models import ObservationRow

    jobs = [
        {"name": "rep", "kind": "synthetic", "params": {"n_per_class": 6},
         "replicates": {"seeds": [3, 1, 2]}, "select": "all"},
        {"name": "after_rep", "kind": "sleep", "after": ["rep"], "params": {"seconds": 0.1}},
    ]  # fmt: skip
    ledger = init_ledger(sqlite_url)
    seen: dict[str, dict[int, list]] = {}
    for executor in ("local", "ray"):
        pk = freeze(ledger, f"rep-{executor}", jobs)
        outcomes = run_protocol(ledger, f"rep-{executor}", executor=executor, show_progress=False)
        assert [(o.job, o.seed, o.status) for o in outcomes] == [
            ("rep", 3, "succeeded"),
            ("rep", 1, "succeeded"),
            ("rep", 2, "succeeded"),
            ("after_rep", None, "succeeded"),
        ], outcomes
        runs = runs_of(ledger, pk)
        assert sorted(r.seed for r in runs["rep"]) == [1, 2, 3]
        # the dependant started after every seed of its dependency finished
        assert runs["after_rep"][0].started_at >= max(r.finished_at for r in runs["rep"])
        if executor == "ray":
            assert all(r.worker.startswith("ray:") for r in runs["rep"] + runs["after_rep"])
        with ledger.session() as session:
            seen[executor] = {
                int(r.seed): sorted(
                    session.execute(
                        select(
                            ObservationRow.group,
                            ObservationRow.item,
                            ObservationRow.label,
                            ObservationRow.signal,
                            ObservationRow.value,
                        ).where(ObservationRow.run_id == r.id)
                    ).all()
                )
                for r in runs["rep"]
            }
        again = run_protocol(ledger, f"rep-{executor}", executor=executor, show_progress=False)
        assert [(o.job, o.seed, o.status) for o in again] == [
            ("rep", 3, "up_to_date"),
            ("rep", 1, "up_to_date"),
            ("rep", 2, "up_to_date"),
            ("after_rep", None, "up_to_date"),
        ]
    ledger.engine.dispose()
    assert all(len(v) == 12 for v in seen["local"].values())
    assert seen["local"][1] != seen["local"][2]  # the seed is what differs between replicates
    assert seen["local"] == seen["ray"]
