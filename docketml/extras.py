"""Optional extras: which import needs which ``docketml[...]`` extra, and the one error for a
missing one.

Core (``pip install docketml``) covers protocols, the ledger, verdicts, costs, the journal, the
audit, ingest and the report tables. Code that needs an extra imports it lazily, through
:func:`import_extra` or after :func:`require_extra`, so a missing extra surfaces as
:class:`MissingExtra` ("this needs the models extra: pip install 'docketml[models]'"), a
:class:`~docketml.ledger.errors.UserError` and therefore exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from docketml.ledger.errors import UserError

#: extra name -> the top-level modules it provides (pyproject's [project.optional-dependencies]).
EXTRAS: dict[str, tuple[str, ...]] = {
    "models": ("torch",),
    "ray": ("ray",),
    "plots": ("matplotlib",),
    "parquet": ("pyarrow",),
    "hf": ("transformers", "safetensors"),
}

#: top-level module -> the extra that installs it.
EXTRA_OF_MODULE: dict[str, str] = {m: extra for extra, mods in EXTRAS.items() for m in mods}


class MissingExtra(UserError):
    """A code path needs an optional extra that is not installed (exit code 2)."""

    def __init__(self, extra: str, what: str | None = None) -> None:
        self.extra = extra
        lead = f"{what} needs" if what else "this needs"
        super().__init__(f"{lead} the {extra} extra: pip install 'docketml[{extra}]'")


def _importable(module: str) -> bool:
    """True if ``module`` can be found without importing it (cheap: no torch import)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def has_extra(extra: str) -> bool:
    """True if every module of ``extra`` is importable."""
    return all(_importable(m) for m in EXTRAS[extra])


def require_extra(extra: str | None, what: str | None = None) -> None:
    """Raise :class:`MissingExtra` unless ``extra`` (``None`` = nothing needed) is installed."""
    if extra is not None and not has_extra(extra):
        raise MissingExtra(extra, what)


def import_extra(module: str, what: str | None = None) -> ModuleType:
    """``importlib.import_module(module)``; a missing top-level module of an extra becomes
    :class:`MissingExtra` naming that extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise as_missing_extra(exc, what) from exc


def as_missing_extra(exc: ImportError, what: str | None = None) -> Exception:
    """The :class:`MissingExtra` for an ImportError of an extra's module, else ``exc`` itself."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    return MissingExtra(extra, what) if extra else exc
