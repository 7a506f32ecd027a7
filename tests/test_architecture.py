"""The import rule of docs/architecture.md, enforced on every module of the distribution.

Every ``.py`` file under the folders that pyproject's ``package-dir`` maps into ``docketml`` is
parsed with :mod:`ast` (nothing is imported), and every import it contains -- at module level or
inside a function, absolute or relative, and ``importlib.import_module("literal")`` -- is checked
against :data:`RULES`. The rules are stated once here and described in docs/architecture.md;
``test_rules_are_documented`` keeps the two in step.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Rule:
    """Modules in ``scope`` (and not in ``allow_importers``) must not import a module in
    ``forbid`` unless it is in ``allow_targets``. Names match a module and its submodules; the
    standard library is never forbidden."""

    name: str
    forbid: tuple[str, ...]
    scope: tuple[str, ...] = ("docketml",)
    allow_importers: tuple[str, ...] = ()
    allow_targets: tuple[str, ...] = ()


ANY = ("",)  # forbid everything that is not explicitly allowed (the standard library always is)
SQL = ("sqlalchemy", "alembic", "psycopg")

RULES: tuple[Rule, ...] = (
    Rule(
        "only the CLI and the public API import runners",
        forbid=("docketml.runners",),
        allow_importers=("docketml.runners", "docketml.ledger.cli", "docketml.api"),
    ),
    Rule(
        "nothing imports the CLI",
        forbid=("docketml.ledger.cli",),
        allow_importers=("docketml.ledger.cli",),
    ),
    Rule(
        "SQL only in the layers that touch the ledger database",
        forbid=SQL,
        allow_importers=(
            "docketml.ledger.store",
            "docketml.ledger.billing",
            "docketml.ledger.integrity",
            "docketml.ledger.report",
            "docketml.ledger.ingest",
            "docketml.ledger.verdicts",
            "docketml.ledger.reproduce",
            "docketml.ledger.cli",
            "docketml.runners.execute",
            "docketml.migrations",
        ),
    ),
    Rule(
        "the CLI builds no queries (it may catch sqlalchemy.exc errors)",
        forbid=SQL,
        scope=("docketml.ledger.cli",),
        allow_targets=("sqlalchemy.exc",),
    ),
    Rule(
        "the verdict core is pure: numpy, scipy, protocols, result types",
        forbid=ANY,
        scope=("docketml.ledger.verdict",),
        allow_targets=(
            "__future__",
            "numpy",
            "scipy",
            "matplotlib",  # only simulate.py, by the plotting rule below
            "threadpoolctl",  # parallel.py: BLAS threads per simulate worker
            "docketml.protocols",
            "docketml.ledger.results",
            "docketml.ledger.verdict",
            "docketml.extras",  # "needs the plots extra" for --plot, checked before work starts
        ),
    ),
    Rule(
        "the pure value modules import no docketml code",
        forbid=("docketml",),
        scope=("docketml.ledger.results", "docketml.ledger.errors"),
    ),
    Rule(
        "protocols imports nothing else from docketml",
        forbid=("docketml",),
        scope=("docketml.protocols",),
        allow_targets=("docketml.protocols",),
    ),
    Rule(
        "journal imports nothing else from docketml",
        forbid=("docketml",),
        scope=("docketml.journal",),
        allow_targets=("docketml.journal",),
    ),
    Rule(
        "migrations import no live docketml code",
        forbid=("docketml",),
        scope=("docketml.migrations",),
        allow_targets=("docketml.migrations",),
    ),
    Rule(
        "only the store (upgrade) and the audit (trigger check) import migrations",
        forbid=("docketml.migrations",),
        allow_importers=(
            "docketml.migrations",
            "docketml.ledger.store",
            "docketml.ledger.integrity",
        ),
    ),
    Rule(
        "runners reach the ledger only through store, billing, errors, result types and the "
        "run-selection rule",
        forbid=("docketml.ledger",),
        scope=("docketml.runners",),
        allow_targets=(
            "docketml.ledger.store",
            "docketml.ledger.billing",
            "docketml.ledger.errors",
            "docketml.ledger.results",
            "docketml.ledger.verdicts",  # select_runs: the upstream run a dependant consumes
        ),
    ),
    Rule(
        "models, jobs, data and the registry know nothing of the ledger",
        forbid=("docketml.ledger",),
        scope=(
            "docketml.runners.models",
            "docketml.runners.jobs",
            "docketml.runners.data",
            "docketml.runners.registry",
            "docketml.runners.signals",
        ),
    ),
    Rule(
        "torch only in runners.models and runners.jobs",
        forbid=("torch",),
        allow_importers=("docketml.runners.models", "docketml.runners.jobs"),
    ),
    Rule(
        "ray only in runners.execute.ray_executor",
        forbid=("ray",),
        allow_importers=("docketml.runners.execute.ray_executor",),
    ),
    Rule(
        "matplotlib only in the report and the power-curve plot",
        forbid=("matplotlib",),
        allow_importers=("docketml.ledger.report", "docketml.ledger.verdict.simulate"),
    ),
)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def _is_stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names


def imports_of(module: str, source: str, *, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``source`` (relative ones resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if node.module:
                yield node.lineno, target
            else:
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def violations(
    module: str, source: str, *, is_package: bool = False, rules: tuple[Rule, ...] = RULES
) -> list[str]:
    """One line per import in ``source`` that breaks a rule: ``module:line imports X (rule)``."""
    out = []
    for line, target in imports_of(module, source, is_package=is_package):
        if _is_stdlib(target):
            continue
        for rule in rules:
            if not _under(module, rule.scope) or _under(module, rule.allow_importers):
                continue
            if _under(target, rule.forbid) and not _under(target, rule.allow_targets):
                out.append(f"{module}:{line} imports {target} ({rule.name})")
    return out


def distribution_modules() -> Iterator[tuple[str, Path, bool]]:
    """``(module name, file, is package)`` for every .py file of every mapped folder."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_dir: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    for package, folder in sorted(package_dir.items()):
        root = REPO / folder
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            yield ".".join([package, *parts]), path, is_package


def test_every_module_obeys_the_import_rule() -> None:
    modules = list(distribution_modules())
    assert len(modules) > 80, "the walk found too few modules; is package-dir read correctly?"
    found = [
        v
        for module, path, is_package in modules
        for v in violations(module, path.read_text(encoding="utf-8"), is_package=is_package)
    ]
    assert not found, "import rule of docs/architecture.md broken:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("docketml.protocols.fake", "from docketml.runners import registry", "only the CLI"),
        ("docketml.ledger.verdict.fake", "def f():\n    import sqlalchemy\n", "SQL only"),
        ("docketml.ledger.verdict.fake", "from ..store import results", "verdict core is pure"),
        ("docketml.journal.fake", "from ..ledger.errors import UserError", "journal imports"),
        ("docketml.ledger.cli.fake", "from sqlalchemy import select", "builds no queries"),
        ("docketml.ledger.report.fake", "import torch.nn", "torch only"),
        ("docketml.runners.jobs.fake", "from docketml.ledger.store import db", "know nothing"),
        ("docketml.ledger.ingest", "import importlib\nimportlib.import_module('ray')", "ray only"),
        ("docketml.ledger.store.db", "from ..cli import main", "nothing imports the CLI"),
        ("docketml.migrations.versions.x", "from docketml.ledger import triggers", "migrations"),
    ],
)
def test_checker_finds_a_synthetic_violation(module: str, source: str, expected: str) -> None:
    found = violations(module, source)
    assert any(expected in v for v in found), found


def test_checker_accepts_allowed_imports() -> None:
    assert violations("docketml.ledger.cli.fake", "from sqlalchemy.exc import DBAPIError") == []
    assert (
        violations("docketml.ledger.verdict.fake", "import numpy as np\nfrom .stats import x") == []
    )
    assert violations("docketml.ledger.cli.fake", "from docketml.runners.signals import X") == []
    assert violations("docketml.runners.models.fake", "import torch\nimport json") == []


def test_relative_imports_resolve_against_the_package() -> None:
    src = "from . import a\nfrom ..b import c\nfrom ...x.y import z"
    assert [t for _, t in imports_of("docketml.ledger.cli.mod", src)] == [
        "docketml.ledger.cli.a",
        "docketml.ledger.b",
        "docketml.x.y",
    ]
    assert [
        t for _, t in imports_of("docketml.ledger.cli", "from . import a", is_package=True)
    ] == ["docketml.ledger.cli.a"]


def test_rules_are_documented() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [r.name for r in RULES if r.name not in text]
    assert not missing, f"docs/architecture.md does not state: {missing}"
