"""The job kinds the runners know, and the params that are structure rather than knobs.

Kinds are listed statically and their modules imported only when a job of that family runs, so a
model-free job (or a Ray worker running one) never pays for importing torch.

Structural params (what runs: the model config, which checkpoint) are declared by each family's
module as ``STRUCTURAL_KEYS``; :func:`structural_keys` is the only reader, so the knob audit and
the tests see the same set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .context import JobFn

FAMILIES: dict[str, tuple[str, ...]] = {
    "docketml.runners.jobs.builtin": ("sleep", "fail", "synthetic"),
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


# The optional extra each family's module needs (pyproject [project.optional-dependencies]);
# families not listed need only the core install.
FAMILY_EXTRA: dict[str, str] = {
    "docketml.runners.jobs.routed": "models",
    "docketml.runners.jobs.poe": "models",
}


def extra_of(kind: str) -> str | None:
    """The extra a built-in job kind needs (``None``: core only, or not a built-in kind)."""
    for module, kinds in FAMILIES.items():
        if kind in kinds:
            return FAMILY_EXTRA.get(module)
    return None


class JobKinds(Mapping[str, JobFn]):
    """Read-only mapping kind -> job function; imports a family's module on first lookup."""

    def __init__(self) -> None:
        self._module_of = {kind: module for module, kinds in FAMILIES.items() for kind in kinds}

    def __getitem__(self, kind: str) -> JobFn:
        return self._module(kind).JOBS[kind]

    def structural_keys(self, kind: str) -> frozenset[str]:
        """Params of ``kind`` that select what runs; the knob audit ignores them."""
        return frozenset(getattr(self._module(kind), "STRUCTURAL_KEYS", frozenset()))

    def _module(self, kind: str):  # noqa: ANN202 - a module object
        from docketml.extras import import_extra

        return import_extra(self._module_of[kind])  # missing torch -> MissingExtra (exit 2)

    def __iter__(self) -> Iterator[str]:
        return iter(self._module_of)

    def __len__(self) -> int:
        return len(self._module_of)

    def __contains__(self, kind: object) -> bool:
        return kind in self._module_of


def job_kinds() -> JobKinds:
    """Every job kind (lazy; see module docstring)."""
    return JobKinds()
