"""The core install works without the optional extras (torch, ray, matplotlib), and a command
that needs a missing extra names it and exits 2.

The CLI runs in subprocesses whose ``sitecustomize`` (first on PYTHONPATH) puts a meta-path finder
in front of ``sys.meta_path`` that refuses ``torch``, ``ray`` and ``matplotlib`` — the same
ImportError a core-only install gives, while the rest of the venv stays usable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from docketml.extras import EXTRAS, MissingExtra, as_missing_extra, import_extra

BLOCKED = ("torch", "ray", "matplotlib")
PID = "core-only"
# A small protocol (fast sign-check) with one model-free job and one torch job.
PROTOCOL_YAML = """\
docket: 1
id: core-only
title: core install without extras
seed: 3
hypotheses:
  - {id: H1, statement: s_pos flags OOD, rule: rw}
signals:
  s_pos: {higher_means: positive}
  s_conf: {higher_means: negative, role: baseline}
labels: {source: regime, positive: ood, negative: in_domain, reference: in_domain}
groups: [in_domain, ood_a, ood_b]
decision_rules:
  rw:
    kind: regime_wins
    candidates: [s_pos]
    margin: 0.02
    ci: {resamples: 200, seed: 1}
    verdicts:
      PROVEN: {min_wins: 2}
      PARTIAL: {min_wins: 1}
      DISPROVEN: {max_wins: 0}
jobs:
  - {name: probe, kind: synthetic}
  - {name: train, kind: pretrain, params: {model: tiny}}
"""

BLOCKER = f'''
import sys

class _BlockExtras:
    """Refuses the optional extras' modules, as a core-only install would."""
    BLOCKED = {set(BLOCKED)!r}

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by test)", name=name)
        return None

sys.meta_path.insert(0, _BlockExtras())
'''


class CoreOnly:
    """``python -m docketml.ledger.cli.main`` in a subprocess with the extras unimportable, on
    the SQLite ledger ``<root>/ledger.db``, from the working directory ``<root>/work``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        block = root / "block"
        block.mkdir(exist_ok=True)
        (block / "sitecustomize.py").write_text(BLOCKER)
        drop = ("DOCKET_DB", "PYTHONPATH", "PYTHONSTARTUP")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env |= {"PYTHONPATH": str(block), "DOCKET_DB": f"sqlite:///{root / 'ledger.db'}"}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "docketml.ledger.cli.main", *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str) -> str:
        r = self(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, r.stderr
        return r.stdout


@pytest.fixture(scope="module")
def frozen_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger where, without the extras, ``init``, ``protocol validate``, ``register`` and
    ``freeze`` (which runs the sign-check) succeeded."""
    root = tmp_path_factory.mktemp("core-only")
    cli = CoreOnly(root)
    path = cli.work / "protocol.yaml"
    path.write_text(PROTOCOL_YAML)
    assert "Usage" in cli.ok("--help")
    cli.ok("init")
    cli.ok("protocol", "validate", str(path))
    cli.ok("protocol", "register", str(path))
    cli.ok("protocol", "freeze", PID)
    return root


@pytest.fixture
def core_only(frozen_root: Path, tmp_path: Path) -> CoreOnly:
    """A private copy of the frozen ledger, driven without the extras."""
    shutil.copy(frozen_root / "ledger.db", tmp_path / "ledger.db")
    return CoreOnly(tmp_path)


def probe_rows(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for g in ("in_domain", "ood_a", "ood_b"):
        ood = g != "in_domain"
        for i in range(10):
            label = "ood" if ood else "in_domain"
            signals = {"s_pos": float(rng.normal(1.5 * ood)), "s_conf": float(rng.normal())}
            rows.append({"group": g, "item": f"{g}-{i}", "label": label, "signals": signals})
    return rows


def test_the_blocker_blocks(core_only: CoreOnly) -> None:
    for mod in BLOCKED:
        r = subprocess.run(
            [sys.executable, "-c", f"import {mod}"],
            env=core_only.env,
            capture_output=True,
            text=True,
        )
        assert r.returncode != 0 and "blocked by test" in r.stderr, (mod, r.stderr)


def test_core_commands_work_without_extras(core_only: CoreOnly) -> None:
    results = core_only.work / "probe.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in probe_rows(1)))
    core_only.ok("ingest", PID, str(results), "--job", "probe")
    verdict = json.loads(core_only.ok("verdict", PID, "--json"))
    assert [h["id"] for h in verdict["hypotheses"]] == ["H1"], verdict
    assert verdict["hypotheses"][0]["verdict"] != "INCONCLUSIVE", verdict
    core_only.ok("audit")
    out = core_only.root / "report"
    core_only.ok("report", PID, "--out", str(out))
    page = (out / "index.html").read_text()
    assert "Figures omitted" in page and "docketml[plots]" in page
    assert not list((out / "figures").glob("*.png"))


def test_commands_needing_a_missing_extra_say_which_and_exit_2(core_only: CoreOnly) -> None:
    before = core_only.ok("runs", "list", "--json")

    r = core_only("run", PID, "--job", "train")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == "docket: this needs the models extra: pip install 'docketml[models]'"
    assert core_only.ok("runs", "list", "--json") == before  # nothing was written

    r = core_only("run", PID, "--job", "probe", "--executor", "ray")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == "docket: this needs the ray extra: pip install 'docketml[ray]'"
    assert core_only.ok("runs", "list", "--json") == before

    r = core_only("protocol", "simulate", PID, "--plot", "power.png")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.strip() == "docket: this needs the plots extra: pip install 'docketml[plots]'"
    assert not (core_only.work / "power.png").exists()


def test_import_extra_maps_missing_modules_to_their_extra() -> None:
    for extra, modules in EXTRAS.items():
        for module in modules:
            err = ModuleNotFoundError(f"No module named {module!r}", name=f"{module}.sub")
            mapped = as_missing_extra(err)
            assert isinstance(mapped, MissingExtra) and mapped.extra == extra
            assert str(mapped) == f"this needs the {extra} extra: pip install 'docketml[{extra}]'"
    other = ModuleNotFoundError("No module named 'nope'", name="nope")
    assert as_missing_extra(other) is other
    with pytest.raises(ModuleNotFoundError):
        import_extra("docketml_no_such_module_xyz")
