"""The job kinds the runners know, and the params that are structure rather than knobs.

One registry, two sources: docket's own families (listed statically in :data:`FAMILIES`) and the
entry-point group ``docketml.jobs`` of every installed distribution (name = kind, value =
``"module:function"``, a job function ``fn(ctx: JobContext) -> JobResult``, the same contract as
the built-in jobs). Modules are imported only when a job of that kind runs, so a model-free job
(or a Ray worker running one) never pays for importing torch. A plugin may not redefine a
built-in kind (:class:`KindError` when the kind is looked up: the job fails saying so).

Structural params (what runs: the model config, which checkpoint) are declared by each family's
module as ``STRUCTURAL_KEYS`` (a plugin function may carry a ``STRUCTURAL_KEYS`` attribute);
:meth:`JobKinds.structural_keys` is the only reader, so the knob audit and the tests see the same
set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points

from .context import JobFn

ENTRY_POINT_GROUP = "docketml.jobs"

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
        "poe_train_heads",
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
            return self._module(kind).JOBS[kind]
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

    def structural_keys(self, kind: str) -> frozenset[str]:
        """Params of ``kind`` that select what runs; the knob audit ignores them."""
        if kind in self._module_of:
            return frozenset(getattr(self._module(kind), "STRUCTURAL_KEYS", frozenset()))
        return frozenset(getattr(self[kind], "STRUCTURAL_KEYS", frozenset()))

    def _module(self, kind: str):  # noqa: ANN202 - a module object
        from docketml.extras import import_extra

        return import_extra(self._module_of[kind])  # missing torch -> MissingExtra (exit 2)

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
