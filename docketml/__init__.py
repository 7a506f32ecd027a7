"""docketml: pre-registration and an experiment ledger for ML research.

The public API (docs/api.md), imported lazily so ``import docketml`` stays cheap (no torch, no
SQLAlchemy until a name is used)::

    import docketml as docket

    with docket.start_run("my-study", job="probe") as run:
        lr = run.knob("lr", default=3e-4)
        run.fire("lr")
        run.observe(group="g", item="x1", signal="abstain_p", value=0.93, label=1)
    print(docket.verdict("my-study"))

``start_run``, ``Run``, ``verdict``, ``load_protocol`` live in :mod:`docketml.api`;
``DocketError`` is the base of every error docket raises on purpose.

The installed package maps the repository's top-level folders into one namespace
(``docketml.protocols`` = ``protocols/``, ``docketml.ledger`` = ``ledger/``, ``docketml.runners`` =
``runners/``, ``docketml.journal`` = ``journal/``, ``docketml.migrations`` = ``migrations/``);
see docs/architecture.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("docketml")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from docketml.api import Run, load_protocol, start_run, verdict
    from docketml.ledger.errors import DocketError

_API = {
    "start_run": "docketml.api",
    "Run": "docketml.api",
    "verdict": "docketml.api",
    "load_protocol": "docketml.api",
    "DocketError": "docketml.ledger.errors",
}


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'docketml' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_API))


__all__ = ["DocketError", "Run", "__version__", "load_protocol", "start_run", "verdict"]
