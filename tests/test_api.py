"""The public API (docketml.start_run / Run / verdict) and the ``python`` / ``command`` job kinds.

Every test drives the real lifecycle (open_job / finish_job of runners/execute/executor.py) on a
real ledger: SQLite, and PostgreSQL where the fixture is parametrised over both backends.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from distributed_helpers import freeze, observation_count, protocol_yaml, runs_of
from sqlalchemy import select

import docketml as docket
from docketml.ledger.store import protocols as store
from docketml.ledger.store.db import Ledger
from docketml.ledger.store.models import CostRow, MetricRow, ObservationRow, RunRow
from docketml.protocols.loader import load_protocol_text


def _rows(n: int, signal: str = "s") -> list[dict]:
    """n items per class in group g1; positives score higher."""
    return [
        {"group": "g1", "item": f"i{label}-{i}", "signal": signal, "value": i + 10.0 * label,
         "label": label}
        for label in (0, 1)
        for i in range(n)
    ]  # fmt: skip


def _run(ledger: Ledger, run_id: int) -> RunRow:
    with ledger.session() as session:
        row = session.get(RunRow, run_id)
        assert row is not None
        return row


def test_owned_run_records_everything(ledger: Ledger, ledger_url: str, tmp_path: Path) -> None:
    pk = freeze(
        ledger,
        "api-own",
        [{"name": "probe", "kind": "python", "entry": "x.y:z", "params": {"lr": 0.01, "n": 5}}],
    )
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights" * 100)
    with docket.start_run("api-own", job="probe", ledger=ledger) as run:
        assert docket.start_run  # the lazy name resolves
        lr = run.knob("lr", default=3e-4)
        n = run.knob("n", default=5)  # equal to the default: needs no fire
        assert (lr, n) == (0.01, 5)
        run.fire("lr")
        run.observe(group="g1", item="first", signal="s", value=0.5, label="failure")
        assert run.observe_many(_rows(n)) == 2 * n
        for step in (1, 2, 3):
            run.metric("loss", 1.0 / step, step=step)
        sha = run.checkpoint(ckpt)
        run_id = run.id
    assert sha == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    row = _run(ledger, run_id)
    assert row.status == "succeeded", row.error
    assert row.protocol_pk == pk and row.protocol_sha256 == store_sha(ledger, pk)
    assert (
        row.checkpoint_sha256 == sha and Path(row.checkpoint_path).read_bytes() == ckpt.read_bytes()
    )
    assert observation_count(ledger, run_id) == 2 * n + 1
    audit = json.loads(row.knob_audit_json)
    assert audit["lr"] == {"value": 0.01, "default": 3e-4, "fired": 1}
    assert audit["n"]["fired"] == 0 and not row.silent_noop_knobs
    with ledger.session() as session:
        steps = session.scalars(select(MetricRow.step).where(MetricRow.run_id == run_id)).all()
        first = session.scalars(
            select(ObservationRow).where(
                ObservationRow.run_id == run_id, ObservationRow.item == "first"
            )
        ).one()
        costs = session.scalars(select(CostRow).where(CostRow.run_id == run_id)).all()
    assert sorted(steps) == [1, 2, 3] and first.label == 1 and len(costs) == 1
    data = docket.verdict("api-own", ledger=ledger)
    assert [r["id"] for r in data["runs"]] == [run_id]
    assert data["verdict"] in ("PROVEN", "PARTIAL")  # AUROC of s is ~1 on these rows


def store_sha(ledger: Ledger, pk: int) -> str:
    from docketml.ledger.store.models import ProtocolRow

    with ledger.session() as session:
        return session.get(ProtocolRow, pk).sha256


def test_verdict_is_the_cli_json(sqlite_ledger: Ledger, docket_sqlite, sqlite_url: str) -> None:
    freeze(sqlite_ledger, "api-v", [{"name": "p", "kind": "python", "entry": "a:b"}])
    with docket.start_run("api-v", job="p", ledger=sqlite_url) as run:
        run.observe_many(_rows(20))
    api = docket.verdict("api-v", ledger=sqlite_url)
    result = docket_sqlite("verdict", "api-v", "--json")
    assert result.exit_code == 0, result.output
    cli = json.loads(result.output)
    # the second look at the same inputs is logged as a look of the API's verdict row
    assert (api["recorded"], cli["recorded"]) == ("verdict", "look")
    assert cli["verdict_id"] == api["verdict_id"] and "look" in cli
    # the look saw the head the verdict row recorded plus that row's own leaf, and also shows
    # the head its verdict row recorded
    assert cli["log_head"]["tree_size"] == api["log_head"]["tree_size"] + 1
    assert cli.pop("verdict_log_head") == api["log_head"]
    for key in ("computed_at", "recorded", "look", "log_head"):  # a head's signature is timed
        api.pop(key, None), cli.pop(key, None)
    assert json.loads(json.dumps(api, default=str)) == cli


def test_refusals_record_nothing(sqlite_ledger: Ledger) -> None:
    freeze(sqlite_ledger, "api-r", [{"name": "p", "kind": "python", "entry": "a:b"}])
    loaded = load_protocol_text(
        protocol_yaml("api-unfrozen", [{"name": "p", "kind": "sleep"}]), "u.yaml"
    )
    with sqlite_ledger.session() as session:
        store.register(session, loaded)
    cases = [
        ("api-unfrozen", "p", "not frozen"),
        ("api-nope", "p", "unknown protocol"),
        ("api-r", "probe_v7", "declares no job 'probe_v7'"),
    ]
    for protocol, job, message in cases:
        with pytest.raises(docket.DocketError, match=message):
            with docket.start_run(protocol, job=job, ledger=sqlite_ledger):
                raise AssertionError("the body must not run")
    with sqlite_ledger.session() as session:
        assert session.scalars(select(RunRow)).all() == []


def test_exception_fails_the_run_and_reraises(ledger: Ledger) -> None:
    pk = freeze(
        ledger, "api-f", [{"name": "p", "kind": "python", "entry": "a:b", "hardware": "a40"}]
    )
    with pytest.raises(ZeroDivisionError):
        with docket.start_run("api-f", job="p", ledger=ledger) as run:
            run.observe_many(_rows(3))
            1 / 0  # noqa: B018
    (row,) = runs_of(ledger, pk)["p"]
    assert row.status == "failed" and "ZeroDivisionError" in row.error
    assert observation_count(ledger, row.id) == 0
    assert row.cost_micros > 0  # metered at the a40 rate even though it failed


def test_bad_writes_refused_nothing_of_the_call_written(sqlite_ledger: Ledger) -> None:
    freeze(sqlite_ledger, "api-b", [{"name": "p", "kind": "python", "entry": "a:b"}])
    with docket.start_run("api-b", job="p", ledger=sqlite_ledger) as run:
        good = dict(group="g1", item="ok", signal="s", value=1.0, label=1)
        bad = [
            ({"group": "g2"}, "group: 'g2' is not declared"),
            ({"signal": "t"}, "signal: 't' is not declared"),
            ({"value": math.nan}, "value: expected a finite number"),
            ({"value": math.inf}, "value: expected a finite number"),
            ({"label": "maybe"}, "label: bad label"),
            ({"label": None}, "label: missing label"),
        ]
        for change, message in bad:
            with pytest.raises(docket.DocketError, match=message):
                run.observe(**{**good, **change})
            rows = _rows(4) + [{**good, **change}]
            with pytest.raises(docket.DocketError, match=r"rows\[8\]\." + message.split(":")[0]):
                run.observe_many(rows)
        with pytest.raises(docket.DocketError, match="metric 'm' value"):
            run.metric("m", math.nan)
        run.observe(**good)
        with pytest.raises(docket.DocketError, match="duplicate"):
            run.observe(**good)
        run_id = run.id
    with pytest.raises(docket.DocketError, match="after the run ended"):
        run.observe(**{**good, "item": "late"})
    with pytest.raises(docket.DocketError, match="after the run ended"):
        run.metric("late", 1.0)
    assert _run(sqlite_ledger, run_id).status == "succeeded"
    assert observation_count(sqlite_ledger, run_id) == 1  # only the one good row


def test_unfired_knob_is_silent_noop_and_inconclusive(sqlite_ledger: Ledger) -> None:
    freeze(
        sqlite_ledger,
        "api-k",
        [{"name": "p", "kind": "python", "entry": "a:b", "params": {"lr": 0.1, "unread": 3}}],
    )
    with docket.start_run("api-k", job="p", ledger=sqlite_ledger) as run:
        run.knob("lr", default=0.001)  # read, never fired
        run.observe_many(_rows(20))
    row = _run(sqlite_ledger, run.id)
    assert row.status == "silent_noop"
    assert json.loads(row.silent_noop_knobs) == ["lr", "unread"]
    data = docket.verdict("api-k", ledger=sqlite_ledger)
    assert data["verdict"] == "INCONCLUSIVE"
    assert "lr" in json.dumps(data)


# ---------------------------------------------------------------- python / command via docket run

ENTRY = """
def probe(run):
    import docketml
    with docketml.start_run() as same:  # attaches to the executor's run
        assert same is run
    run.fire("k")
    run.fire("n")
    run.observe_many(
        {"group": "g1", "item": f"{l}-{i}", "signal": "s", "value": i + 10 * l, "label": l}
        for l in (0, 1) for i in range(run.knob("n", default=1))
    )
    run.metric("seen", 1.0)
"""

CHILD = """
import sys
import docketml

n = int(sys.argv[sys.argv.index("--n") + 1])
print("child says hello")
with docketml.start_run() as run:
    run.fire("k")
    run.observe_many(
        {"group": "g1", "item": f"{l}-{i}", "signal": "s", "value": i + 10 * l, "label": l}
        for l in (0, 1) for i in range(n)
    )
    run.metric("child_run_id", run.id)
    if "--fail" in sys.argv:
        raise SystemExit("deliberate child failure")
"""


def test_python_and_command_jobs_through_docket_run(ledger: Ledger, docket, tmp_path: Path) -> None:
    module = "api_entry_" + uuid.uuid4().hex[:8]
    (tmp_path / f"{module}.py").write_text(ENTRY)
    (tmp_path / "child.py").write_text(CHILD)
    py = sys.executable
    pk = freeze(
        ledger,
        "api-jobs",
        [
            {"name": "py", "kind": "python", "entry": f"{module}:probe",
             "params": {"n": 6, "k": 1}},
            {"name": "cmd", "kind": "command", "command": [py, "child.py", "--n", "{n}"],
             "params": {"n": 7, "k": 1}, "after": ["py"]},
            {"name": "bad", "kind": "command", "command": [py, "child.py", "--n", "2", "--fail"],
             "params": {"k": 1}},
        ],
    )  # fmt: skip
    result = docket("run", "api-jobs", "--json")
    runs = runs_of(ledger, pk)
    py_run, cmd_run, bad_run = runs["py"][0], runs["cmd"][0], runs["bad"][0]
    assert py_run.status == "succeeded", py_run.error
    assert observation_count(ledger, py_run.id) == 12
    assert cmd_run.status == "succeeded", cmd_run.error
    assert observation_count(ledger, cmd_run.id) == 14
    with ledger.session() as session:
        child_id = session.scalar(select(MetricRow.value).where(MetricRow.run_id == cmd_run.id))
    assert child_id == cmd_run.id  # the child attached to the parent's run
    extra = json.loads(cmd_run.extra_json)
    assert "child says hello" in Path(extra["stdout"]).read_text()
    assert json.loads(cmd_run.knob_audit_json)["k"]["fired"] == 1
    assert bad_run.status == "failed" and "deliberate child failure" in bad_run.error
    assert observation_count(ledger, bad_run.id) == 0
    assert result.exit_code != 0  # one job failed


def test_command_job_validation(tmp_path: Path) -> None:
    from docketml.protocols.errors import ProtocolErrors

    jobs = [
        {"name": "a", "kind": "command", "command": ["x", "{missing}"]},
        {"name": "b", "kind": "python"},
        {"name": "c", "kind": "sleep", "entry": "m:f"},
    ]
    with pytest.raises(ProtocolErrors) as info:
        load_protocol_text(protocol_yaml("api-val", jobs), "v.yaml")
    text = str(info.value)
    assert "unknown param" in text and "'missing'" in text
    assert "a 'python' job needs 'entry'" in text
    assert "'entry' is only for kind 'python' jobs" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(protocol_yaml("api-val", jobs))
    with pytest.raises(docket.DocketError) as wrapped:
        docket.load_protocol(bad)
    assert "unknown param" in str(wrapped.value) and len(wrapped.value.errors) == 3


@pytest.mark.slow
def test_own_model_example_end_to_end(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/own-model: register, sign-check + freeze, run (command + python jobs), verdict."""
    import shutil

    from conftest import REPO, DocketCli

    work = tmp_path / "own-model"
    shutil.copytree(REPO / "examples" / "own-model", work)
    # the protocol says `python`: make it this interpreter (which has docketml and torch)
    monkeypatch.setenv(
        "PATH", str(Path(sys.executable).parent) + ":" + __import__("os").environ["PATH"]
    )
    for name in ("model", "probe"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    cli = DocketCli(sqlite_url, work)
    for args in (
        ("init",),
        ("protocol", "register", "protocol.yaml"),
        ("protocol", "freeze", "own-model"),
    ):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    result = cli("run", "own-model", "--json")
    assert result.exit_code == 0, result.output
    outcomes = {o["job"]: o for o in json.loads(result.output)}
    assert {j: o["status"] for j, o in outcomes.items()} == {
        "train": "succeeded",
        "probe": "succeeded",
    }
    data = docket.verdict("own-model", ledger=sqlite_url)
    (h1,) = data["hypotheses"]
    assert data["verdict"] == "PROVEN", h1["why"]
    assert h1["value"] >= 0.8


PLUGIN = """
from docketml.runners.context import JobResult, MetricValue, Observation


def mylab_eval(ctx):
    ctx.knobs.set_defaults({"n": 1})
    n = int(ctx.knobs.get("n"))
    ctx.knobs.fire("n")
    obs = [Observation("g1", f"{l}-{i}", "s", float(i + 10 * l), l)
           for l in (0, 1) for i in range(n)]
    return JobResult(observations=obs, metrics=[MetricValue("plugin_n", n)])
"""


def test_plugin_kind_from_an_installed_distribution(
    ledger: Ledger, docket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution on sys.path with a ``docketml.jobs`` entry point adds a job kind."""
    from docketml.runners.registry import job_kinds

    site = tmp_path / "site"
    name = "mylab_" + uuid.uuid4().hex[:8]
    (site / f"{name}-0.1.dist-info").mkdir(parents=True)
    (site / f"{name}.py").write_text(PLUGIN)
    (site / f"{name}-0.1.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n"
    )
    (site / f"{name}-0.1.dist-info" / "entry_points.txt").write_text(
        f"[docketml.jobs]\nmylab_eval = {name}:mylab_eval\nsleep = {name}:mylab_eval\n"
    )
    monkeypatch.syspath_prepend(str(site))
    kinds = job_kinds()
    assert (
        "mylab_eval" in kinds and kinds.source("mylab_eval") == f"plugin {name}: {name}:mylab_eval"
    )
    from docketml.runners.registry import KindError

    with pytest.raises(KindError, match="defined by more than one distribution"):
        kinds["sleep"]
    pk = freeze(ledger, "api-plugin", [{"name": "eval", "kind": "mylab_eval", "params": {"n": 9}}])
    result = docket("run", "api-plugin", "--json")
    assert result.exit_code == 0, result.output
    (run,) = runs_of(ledger, pk)["eval"]
    assert run.status == "succeeded" and observation_count(ledger, run.id) == 18


SLOW_CHILD = """
import time, docketml
with docketml.start_run() as run:
    run.observe(group="g1", item="a", signal="s", value=1.0, label=1)
    print("started", flush=True)
    time.sleep(60)
"""


def test_sigkilled_command_job_is_abandoned_and_excluded(
    ledger: Ledger, docket, ledger_url: str, tmp_path: Path
) -> None:
    """SIGKILL of `docket run` and its command child: abandoned after the lease, cost kept, no
    observations, and the verdict ignores it."""
    import os
    import signal

    from distributed_helpers import DOCKET, docket_env, subprocess_group, wait_for

    (tmp_path / "slow.py").write_text(SLOW_CHILD)
    cmd = [sys.executable, "slow.py"]
    pk = freeze(
        ledger, "api-kill", [{"name": "c", "kind": "command", "command": cmd, "hardware": "a40"}]
    )
    env = docket_env(DOCKET_LEASE_S="1.5", DOCKET_ARTIFACTS=str(tmp_path / "artifacts"))
    args = [DOCKET, "--db", ledger_url, "run", "api-kill", "--no-progress"]
    with subprocess_group(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE) as proc:
        out = tmp_path / "artifacts" / "runs"

        def child_started() -> bool:
            assert proc.poll() is None, "docket run exited before it could be killed"
            return any("started" in p.read_text() for p in out.glob("*/stdout.txt"))

        wait_for(child_started, 90, "the command child to start", every=0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def abandoned() -> list[dict]:
        assert docket("runs", "reap").exit_code == 0  # a writer reaps; `runs list` only reads
        result = docket("runs", "list", "--status", "abandoned", "--json")
        return json.loads(result.stdout)

    (run,) = wait_for(abandoned, 15, "the run to be reaped as abandoned", every=0.3)
    assert run["cost_micros"] > 0 and observation_count(ledger, run["id"]) == 0
    data = docket_cli_verdict(docket)
    assert data["runs"] == []  # only succeeded runs count
    assert runs_of(ledger, pk)["c"][0].status == "abandoned"


def docket_cli_verdict(docket) -> dict:
    result = docket("verdict", "api-kill", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_run_records_the_users_git_state_and_software(
    sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import platform

    project = tmp_path / "project"
    project.mkdir()
    git = ["git", "-C", str(project), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (project / "train.py").write_text("print(1)\n")
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    (project / "train.py").write_text("print(2)\n")  # dirty
    diff = subprocess.run(
        [*git, "diff", "HEAD", "--binary", "--full-index"], capture_output=True
    ).stdout
    monkeypatch.chdir(project)
    freeze(sqlite_ledger, "api-prov", [{"name": "p", "kind": "python", "entry": "a:b"}])
    with docket.start_run("api-prov", job="p", ledger=sqlite_ledger) as run:
        pass
    row = _run(sqlite_ledger, run.id)
    prov = json.loads(row.config_json)["provenance"]
    assert row.git_sha == head == prov["git_commit"]
    assert prov["git_dirty"] is True and prov["git_diff_sha256"] == hashlib.sha256(diff).hexdigest()
    assert prov["python"] == platform.python_version() and prov["device"] == "cpu"
    import torch

    assert prov["torch"] == torch.__version__ and prov["cuda"] == torch.version.cuda


def test_declared_gpu_that_is_not_there_is_refused(sqlite_ledger: Ledger) -> None:
    import torch

    spec = {"name": "p", "kind": "python", "entry": "a:b", "hardware": "a40", "num_gpus": 1}
    freeze(sqlite_ledger, "api-gpu", [spec])
    if torch.cuda.is_available():
        with docket.start_run("api-gpu", job="p", ledger=sqlite_ledger) as run:
            pass
        assert json.loads(_run(sqlite_ledger, run.id).config_json)["device"] == "cuda"
        return
    with pytest.raises(docket.DocketError, match="num_gpus=1 but no CUDA device is visible"):
        with docket.start_run("api-gpu", job="p", ledger=sqlite_ledger):
            raise AssertionError("the body must not run")
    with sqlite_ledger.session() as session:
        assert session.scalars(select(RunRow)).all() == []


CAUGHT_CHILD = """
import docketml
try:
    with docketml.start_run() as run:
        run.observe(group="g1", item="a", signal="s", value=1.0, label=1)
        raise ValueError("bad batch")
except ValueError:
    pass  # exits 0 anyway
"""


def test_command_child_that_swallows_its_exception_still_fails(
    sqlite_ledger: Ledger, docket_sqlite, tmp_path: Path
) -> None:
    (tmp_path / "caught.py").write_text(CAUGHT_CHILD)
    spec = {"name": "c", "kind": "command", "command": [sys.executable, "caught.py"]}
    pk = freeze(sqlite_ledger, "api-caught", [spec])
    result = docket_sqlite("run", "api-caught", "--json")
    assert result.exit_code == 1, result.output
    (run,) = runs_of(sqlite_ledger, pk)["c"]
    assert run.status == "failed" and "ValueError: bad batch" in run.error
    assert observation_count(sqlite_ledger, run.id) == 0


def test_budget_refusal_before_any_run(sqlite_ledger: Ledger) -> None:
    from docketml.ledger.errors import CheckFailed

    spec = {"name": "p", "kind": "python", "entry": "a:b", "hardware": "a40",
            "estimate_seconds": 360000}  # fmt: skip
    text = protocol_yaml("api-budget", [spec]) + "budget: {usd: 0.01}\n"
    with sqlite_ledger.session() as session:
        row = store.register(session, load_protocol_text(text, "b.yaml")).row
        store.freeze(session, row.protocol_id, lambda _p: {"passed": True, "checks": []})
    with pytest.raises(CheckFailed) as info:
        with docket.start_run("api-budget", job="p", ledger=sqlite_ledger):
            raise AssertionError("the body must not run")
    assert isinstance(info.value, docket.DocketError) and info.value.exit_code == 1
    assert "budget" in str(info.value)
    with sqlite_ledger.session() as session:
        assert session.scalars(select(RunRow)).all() == []


def test_new_job_fields_leave_old_hashes_alone() -> None:
    """``entry`` / ``command`` are omitted from the canonical JSON when unset (old sha256 kept)
    and part of it when set (changing them changes the hash)."""
    from docketml.protocols.canonical import canonical_json, protocol_sha256

    old = load_protocol_text(protocol_yaml("h", [{"name": "a", "kind": "sleep"}]), "h.yaml")
    assert '"entry"' not in canonical_json(old.protocol)
    assert '"command"' not in canonical_json(old.protocol)
    shas = {
        protocol_sha256(
            load_protocol_text(
                protocol_yaml("h", [{"name": "a", "kind": "python", "entry": e}]), "h.yaml"
            ).protocol
        )
        for e in ("m:f", "m:g")
    }
    assert len(shas) == 2


OWNED_SCRIPT = """
import sys, time, docketml
with docketml.start_run("api-owned-kill", job="p", ledger=sys.argv[1]) as run:
    run.observe(group="g1", item="a", signal="s", value=1.0, label=1)
    print(run.id, flush=True)
    time.sleep(60)
"""


def test_sigkilled_user_script_run_is_abandoned(
    sqlite_ledger: Ledger, docket_sqlite, sqlite_url: str, tmp_path: Path
) -> None:
    """A user's own script holding a run, killed with SIGKILL: abandoned after the lease."""
    import os
    import signal

    from distributed_helpers import docket_env, subprocess_group, wait_for

    freeze(sqlite_ledger, "api-owned-kill", [{"name": "p", "kind": "python", "entry": "a:b"}])
    (tmp_path / "owned.py").write_text(OWNED_SCRIPT)
    env = docket_env(DOCKET_LEASE_S="1.5")
    args = [sys.executable, "owned.py", sqlite_url]
    with subprocess_group(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE) as proc:
        run_id = int(proc.stdout.readline())
        assert _run(sqlite_ledger, run_id).status == "running"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def reaped() -> list[dict]:
        assert docket_sqlite("runs", "reap").exit_code == 0  # queries never reap
        return json.loads(docket_sqlite("runs", "list", "--status", "abandoned", "--json").stdout)

    (run,) = wait_for(reaped, 15, "the run to be reaped as abandoned", every=0.3)
    assert run["id"] == run_id and observation_count(sqlite_ledger, run_id) == 0
