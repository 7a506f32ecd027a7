"""The job-kind registry has one source, the ``docketml.jobs`` entry-point group: docket's own
families register there from pyproject.toml, a kind defined by two distributions is refused, and
looking up a model-free kind does not import torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

from docketml.runners.registry import ENTRY_POINT_GROUP, KindError, job_kinds

FAMILY_MODULES = (
    "docketml.runners.jobs.builtin",
    "docketml.runners.jobs.user",
    "docketml.runners.jobs.routed",
    "docketml.runners.jobs.poe",
    "docketml.runners.jobs.poe_card",
)


def test_builtin_kinds_come_from_docketmls_own_entry_points() -> None:
    """Every kind each family module exports is an entry point of the docketml distribution that
    loads exactly that function, and the registry knows no built-in beside them."""
    own = {
        ep.name: ep for ep in distribution("docketml").entry_points if ep.group == ENTRY_POINT_GROUP
    }
    exported = {}
    for module_name in FAMILY_MODULES:
        exported.update(importlib.import_module(module_name).JOBS)
    assert sorted(own) == sorted(exported)
    kinds = job_kinds()
    for kind, fn in exported.items():
        assert own[kind].load() is fn
        assert kinds[kind] is fn
        assert kinds.source(kind) == f"docketml: {own[kind].value}"
    assert "probe" in kinds and "poe_train" in kinds and "nope" not in kinds
    assert kinds.extra_of("probe") == "models" and kinds.extra_of("sleep") is None


def _plugin(site: Path, name: str, kinds: str) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (site / f"{name}.py").write_text("def job(ctx):\n    raise AssertionError('not run')\n")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{kinds}\n")


def test_a_kind_defined_by_two_distributions_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _plugin(tmp_path, "lab_one", "sleep = lab_one:job\nshared = lab_one:job\nown = lab_one:job")
    _plugin(tmp_path, "lab_two", "shared = lab_two:job")
    monkeypatch.syspath_prepend(str(tmp_path))
    kinds = job_kinds()
    with pytest.raises(KindError, match=r"'sleep' is defined by more than one.*docketml \("):
        kinds["sleep"]
    with pytest.raises(KindError, match="more than one distribution") as shared:
        kinds["shared"]
    assert "lab_one (lab_one:job)" in str(shared.value)
    assert "lab_two (lab_two:job)" in str(shared.value)
    assert callable(kinds["own"]) and kinds.source("own") == "plugin lab_one: lab_one:job"
    assert callable(kinds["fail"])  # kinds nobody else defines are unaffected


def test_builtin_kind_lookup_does_not_import_torch() -> None:
    code = (
        "import sys; from docketml.runners.registry import job_kinds; "
        "job_kinds()['sleep']; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_structural_keys_come_from_each_family_module() -> None:
    """The executor's ignore set for a kind is the set its module declares, nothing global."""
    kinds = job_kinds()
    for module_name in FAMILY_MODULES:
        module = importlib.import_module(module_name)
        declared = getattr(module, "STRUCTURAL_KEYS", frozenset())
        for kind in module.JOBS:
            assert kinds.structural_keys(kind) == declared
    assert kinds.structural_keys("probe") >= {"model", "checkpoint"}
    assert "lr" not in kinds.structural_keys("pretrain")
    assert kinds.structural_keys("sleep") == frozenset()
