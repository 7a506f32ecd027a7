"""The job kinds the runners know, and the params that are structure rather than knobs.

Kinds are listed statically and their modules imported only when a job of that family runs, so a
model-free job (or a Ray worker running one) never pays for importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from .context import JobFn

# Params that select *what* runs (model config, which checkpoint) rather than tuning it: the knob
# audit ignores them (they take effect by construction: a wrong one fails loudly).
STRUCTURAL_KEYS = frozenset({"model", "layout", "checkpoint", "base", "donor"})

FAMILIES: dict[str, tuple[str, ...]] = {
    "docketml.runners.jobs.builtin": ("sleep", "fail", "synthetic"),
    "docketml.runners.jobs.user": ("python", "command"),
    "docketml.runners.jobs.routed": (
        "pretrain",
        "chat_sft",
        "abstain_sft",
        "joint_finetune",
        "splice",
        "probe",
    ),
    "docketml.runners.jobs.poe": (
        "poe_train",
        "poe_probe",
        "poe_speculative",
        "poe_routing",
        "poe_trajectory",
    ),
}


class JobKinds(Mapping[str, JobFn]):
    """Read-only mapping kind -> job function; imports a family's module on first lookup."""

    def __init__(self) -> None:
        self._module_of = {kind: module for module, kinds in FAMILIES.items() for kind in kinds}

    def __getitem__(self, kind: str) -> JobFn:
        module = importlib.import_module(self._module_of[kind])
        return module.JOBS[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._module_of)

    def __len__(self) -> int:
        return len(self._module_of)

    def __contains__(self, kind: object) -> bool:
        return kind in self._module_of


def job_kinds() -> JobKinds:
    """Every job kind (lazy; see module docstring)."""
    return JobKinds()
