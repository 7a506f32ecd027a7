"""docketml: pre-registration and an experiment ledger for ML research.

The installed package maps the repository's top-level folders into one namespace
(``docketml.protocols`` = ``protocols/``, ``docketml.ledger`` = ``ledger/``, ``docketml.runners`` =
``runners/``, ``docketml.journal`` = ``journal/``, ``docketml.migrations`` = ``migrations/``);
see docs/architecture.md.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("docketml")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
