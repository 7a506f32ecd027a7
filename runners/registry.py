"""The job kinds the runners know, and the params that are structure rather than knobs.

One registry, two sources: docket's own families (listed statically in :data:`FAMILIES`) and the
entry-point group ``docketml.jobs`` of every installed distribution (name = kind, value =
``"module:function"``, a job function ``fn(ctx: JobContext) -> JobResult``, the same contract as
the built-in jobs). Modules are imported only when a job of that kind runs, so a model-free job
(or a Ray worker running one) never pays for importing torch. A plugin may not redefine a
built-in kind (:class:`KindError` when the kind is looked up: the job fails saying so).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points

from .context import JobFn

ENTRY_POINT_GROUP = "docketml.jobs"

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


class KindError(LookupError):
    """A job kind that cannot be used: a plugin redefining a built-in kind, or one whose entry
    point does not load."""


def plugin_kinds() -> dict[str, EntryPoint]:
    """Kinds registered by installed distributions in the ``docketml.jobs`` group (not loaded)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


class JobKinds(Mapping[str, JobFn]):
    """Read-only mapping kind -> job function; imports a kind's module on first lookup."""

    def __init__(self) -> None:
        self._module_of = {kind: module for module, kinds in FAMILIES.items() for kind in kinds}
        self._plugins = plugin_kinds()

    def __getitem__(self, kind: str) -> JobFn:
        if kind in self._module_of:
            if kind in self._plugins:
                ep = self._plugins[kind]
                raise KindError(
                    f"job kind {kind!r} is docket's own; the plugin entry point {ep.value!r} "
                    f"({ENTRY_POINT_GROUP}) may not redefine it"
                )
            module = importlib.import_module(self._module_of[kind])
            return module.JOBS[kind]
        ep = self._plugins[kind]
        try:
            fn = ep.load()
        except (ImportError, AttributeError) as exc:
            raise KindError(
                f"job kind {kind!r}: cannot load plugin entry point {ep.value!r}: {exc}"
            ) from None
        if not callable(fn):
            raise KindError(f"job kind {kind!r}: plugin entry point {ep.value!r} is not callable")
        return fn

    def __iter__(self) -> Iterator[str]:
        return iter({**self._module_of, **self._plugins})

    def __len__(self) -> int:
        return len({**self._module_of, **self._plugins})

    def __contains__(self, kind: object) -> bool:
        return kind in self._module_of or kind in self._plugins

    def source(self, kind: str) -> str:
        """Where a kind comes from: its module, or ``plugin <dist>: <value>``."""
        if kind in self._module_of:
            return self._module_of[kind]
        ep = self._plugins[kind]
        dist = ep.dist.name if ep.dist is not None else "?"
        return f"plugin {dist}: {ep.value}"


def job_kinds() -> JobKinds:
    """Every job kind (lazy; see module docstring)."""
    return JobKinds()
