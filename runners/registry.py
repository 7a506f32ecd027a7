"""The job kinds the runners know, and the params that are structure rather than knobs.

One registry, one source: the entry-point group ``docketml.jobs`` of every installed
distribution (name = kind, value = ``"module:function"``, a job function
``fn(ctx: JobContext) -> JobResult``). docket's own families register there themselves
(``[project.entry-points."docketml.jobs"]`` in pyproject.toml), exactly like a plugin. Entry points
are read from the installed metadata without importing anything, and a kind's module is imported
only when a job of that kind runs, so ``docket --help``, a model-free job or a Ray worker running
one never pays for importing torch.

A kind defined by more than one distribution (e.g. a plugin redefining ``sleep``, one of
docket's own) is refused: :class:`KindError` when the kind is looked up, naming every
distribution that defines it (the job fails saying so). The same distribution seen twice on
``sys.path`` (an editable install beside a built wheel) counts once: ``importlib.metadata``
keeps the first one on the path.

Structural params (what runs: the model config, which checkpoint) are declared by each family's
module as ``STRUCTURAL_KEYS``, or by a job function as a ``STRUCTURAL_KEYS`` attribute;
:meth:`JobKinds.structural_keys` is the only reader, so the knob audit and the tests see the same
set.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points

from .context import JobFn

ENTRY_POINT_GROUP = "docketml.jobs"
OWN_DISTRIBUTION = "docketml"

# The optional extra a job module needs (pyproject [project.optional-dependencies]); modules not
# listed need only the core install. Keyed by module, so it lists no kinds.
MODULE_EXTRA: dict[str, str] = {
    "docketml.runners.jobs.routed": "models",
    "docketml.runners.jobs.poe": "models",
    "docketml.runners.jobs.poe_card": "models",
}


class KindError(LookupError):
    """A job kind that cannot be used: defined by more than one distribution, or one whose entry
    point does not load."""


def _dist_name(ep: EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "?"


def registered_kinds() -> dict[str, list[EntryPoint]]:
    """Every kind in the ``docketml.jobs`` group -> its entry points, one per distribution that
    defines it (not loaded; more than one is a conflict)."""
    out: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        eps = out.setdefault(ep.name, [])
        if all(_dist_name(other) != _dist_name(ep) for other in eps):
            eps.append(ep)
    return out


class JobKinds(Mapping[str, JobFn]):
    """Read-only mapping kind -> job function; imports a kind's module on first lookup."""

    def __init__(self) -> None:
        self._eps = registered_kinds()

    def entry_point(self, kind: str) -> EntryPoint:
        """The one entry point of ``kind``; :class:`KindError` if several distributions define
        it, ``KeyError`` if none does."""
        eps = self._eps[kind]
        if len(eps) > 1:
            where = ", ".join(f"{_dist_name(ep)} ({ep.value})" for ep in eps)
            raise KindError(
                f"job kind {kind!r} is defined by more than one distribution in "
                f"{ENTRY_POINT_GROUP}: {where}; a plugin may not redefine a kind (docket's own "
                f"kinds come from {OWN_DISTRIBUTION}); uninstall or rename one"
            )
        return eps[0]

    def __getitem__(self, kind: str) -> JobFn:
        ep = self.entry_point(kind)
        if ep.module in MODULE_EXTRA:
            from docketml.extras import import_extra

            import_extra(ep.module)  # missing torch -> MissingExtra (exit 2)
        try:
            fn = ep.load()
        except (ImportError, AttributeError) as exc:
            raise KindError(
                f"job kind {kind!r}: cannot load entry point {ep.value!r} ({_dist_name(ep)}): {exc}"
            ) from None
        if not callable(fn):
            raise KindError(f"job kind {kind!r}: entry point {ep.value!r} is not callable")
        return fn

    def structural_keys(self, kind: str) -> frozenset[str]:
        """Params of ``kind`` that select what runs; the knob audit ignores them: the job
        function's ``STRUCTURAL_KEYS`` attribute, else its module's."""
        fn = self[kind]
        keys = getattr(fn, "STRUCTURAL_KEYS", None)
        if keys is None:
            keys = getattr(
                importlib.import_module(self.entry_point(kind).module), "STRUCTURAL_KEYS", ()
            )
        return frozenset(keys)

    def extra_of(self, kind: str) -> str | None:
        """The optional extra ``kind``'s module needs (``None``: core only or unknown kind)."""
        eps = self._eps.get(kind)
        return MODULE_EXTRA.get(eps[0].module) if eps else None

    def __iter__(self) -> Iterator[str]:
        return iter(self._eps)

    def __len__(self) -> int:
        return len(self._eps)

    def __contains__(self, kind: object) -> bool:
        return kind in self._eps

    def source(self, kind: str) -> str:
        """Where a kind comes from: ``<dist>: <value>``, prefixed ``plugin`` unless it is
        docket's own."""
        ep = self.entry_point(kind)
        dist = _dist_name(ep)
        prefix = "" if dist == OWN_DISTRIBUTION else "plugin "
        return f"{prefix}{dist}: {ep.value}"


def job_kinds() -> JobKinds:
    """Every job kind (lazy; see module docstring)."""
    return JobKinds()


def extra_of(kind: str) -> str | None:
    """The optional extra a job kind needs (``None``: core only, or not a known kind)."""
    return job_kinds().extra_of(kind)
