"""The static job-kind registry matches the job modules, and looking up a model-free kind does
not import torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

from docketml.runners.registry import FAMILIES, job_kinds


def test_registry_lists_exactly_the_kinds_each_module_exports() -> None:
    for module_name, kinds in FAMILIES.items():
        module = importlib.import_module(module_name)
        assert sorted(module.JOBS) == sorted(kinds), module_name
    kinds = job_kinds()
    assert "probe" in kinds and "poe_train" in kinds and "nope" not in kinds
    assert callable(kinds["synthetic"])


def test_builtin_kind_lookup_does_not_import_torch() -> None:
    code = (
        "import sys; from docketml.runners.registry import job_kinds; "
        "job_kinds()['sleep']; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_structural_keys_come_from_each_family_module() -> None:
    """The executor's ignore set for a kind is the set its module declares, nothing global."""
    import importlib

    kinds = job_kinds()
    for module_name, family in FAMILIES.items():
        declared = getattr(importlib.import_module(module_name), "STRUCTURAL_KEYS", frozenset())
        for kind in family:
            assert kinds.structural_keys(kind) == declared
    assert kinds.structural_keys("probe") >= {"model", "checkpoint"}
    assert "lr" not in kinds.structural_keys("pretrain")
    assert kinds.structural_keys("sleep") == frozenset()
