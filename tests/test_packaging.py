"""The wheel: one import namespace ``docketml`` and nothing else in site-packages.

The slow test copies the source tree (the files git would put in a clone), builds the wheel
without build isolation, installs it with ``--no-deps`` into a fresh venv (no system site
packages; the dependencies come from this test venv's site-packages through a ``.pth`` path
entry, so nothing is downloaded), and from a directory holding its own ``protocols/``,
``runners/``, ``migrations/``, ``ledger/`` and ``journal/`` packages — each of which fails loudly if
imported — imports every module of ``docketml``. The fast test checks that every folder with an
``__init__.py`` under the mapped top-level folders is in pyproject's explicit ``packages`` list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("docketml", "ledger", "protocols", "runners", "journal", "migrations")
USER_PACKAGES = ("protocols", "runners", "migrations", "ledger", "journal")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _dotted(folder: Path) -> str:
    """``ledger/store`` -> ``docketml.ledger.store``; ``docketml`` -> ``docketml``."""
    rel = folder.relative_to(REPO).parts
    return ".".join(rel) if rel[0] == "docketml" else ".".join(("docketml", *rel))


def test_every_package_folder_is_in_the_pyproject_packages_list() -> None:
    tool = _pyproject()["tool"]["setuptools"]
    listed = set(tool["packages"])
    mapped = tool["package-dir"]
    assert all(mapped[_dotted(REPO / r)] == r for r in ROOTS), mapped
    folders = sorted(
        init.parent
        for root in ROOTS
        for init in (REPO / root).rglob("__init__.py")
        if "__pycache__" not in init.parts
    )
    assert folders, "no package folders found"
    missing = [_dotted(f) for f in folders if _dotted(f) not in listed]
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    for name in listed:  # and the list names nothing that does not exist
        parts = name.split(".")
        folder = REPO.joinpath(*parts) if len(parts) == 1 else REPO.joinpath(*parts[1:])
        assert folder.is_dir(), f"pyproject lists {name} but {folder} does not exist"


def _source_files() -> list[Path]:
    """The files a clone would have: tracked plus untracked-but-not-ignored (git), else a walk."""
    try:
        git = ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others"]
        out = subprocess.run(
            [*git, "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout
        files = [REPO / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "dist", "__pycache__", ".docket", "docket-demo"}
        files = [
            p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.relative_to(REPO).parts)
        ]
    return [p for p in files if p.is_file()]


CHECK_SCRIPT = r"""
import importlib, importlib.util, json, pkgutil, sys
from pathlib import Path

import docketml

root = Path(docketml.__file__).resolve().parent
site = Path(sys.argv[1]).resolve()
assert root.parent == site, f"docketml imported from {root}, not from {site}"
# Alembic scripts: env.py runs only inside alembic; versions/ are loaded by file path.
NOT_IMPORTABLE = {"docketml.migrations.env"}
names = {m.name for m in pkgutil.walk_packages(docketml.__path__, "docketml.", onerror=None)}
for py in root.rglob("*.py"):  # folders without __init__.py (namespace packages) too
    rel = py.relative_to(root.parent).with_suffix("").parts
    if "versions" in rel or rel[-1] == "__init__":
        continue
    names.add(".".join(rel))
imported = []
for name in sorted(names - NOT_IMPORTABLE):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().is_relative_to(site), (name, module.__file__)
    imported.append(name)
for py in sorted((root / "migrations" / "versions").glob("*.py")):
    spec = importlib.util.spec_from_file_location(f"_revision_{py.stem}", py)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    imported.append(py.name)
# docket's own job kinds come from the wheel's entry points (the one registry source)
from importlib.metadata import distribution
from docketml.runners.registry import job_kinds

kinds = job_kinds()
own = [ep for ep in distribution("docketml").entry_points if ep.group == "docketml.jobs"]
assert {"sleep", "python", "command", "probe", "poe_train"} <= {ep.name for ep in own}, own
for ep in own:
    fn = kinds[ep.name]
    assert Path(sys.modules[fn.__module__].__file__).resolve().is_relative_to(site), ep
leaked = sorted({m.split(".")[0] for m in sys.modules} & USER)
assert not leaked, f"the user's own packages were imported: {leaked}"
print(json.dumps(imported))
"""


@pytest.mark.slow
def test_wheel_installs_only_docketml_and_imports_beside_user_packages(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for path in _source_files():
        dest = src / path.relative_to(REPO)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("docketml-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist()}
        names = zf.namelist()
    dist_info = tops - {"docketml"}
    assert "docketml" in tops and len(dist_info) == 1, f"the wheel's top-level entries: {tops}"
    assert next(iter(dist_info)).endswith(".dist-info"), tops
    for data in (
        "docketml/protocols/library/router_entropy_metacog.yaml",
        "docketml/migrations/script.py.mako",
        "docketml/migrations/versions/0001_initial_ledger_schema.py",
    ):
        assert data in names, f"{data} missing from the wheel"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    before = set(os.listdir(site))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps"]
        + ["--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    added = set(os.listdir(site)) - before
    assert "docketml" in added and all(
        a == "docketml" or (a.startswith("docketml-") and a.endswith(".dist-info")) for a in added
    ), f"the wheel put more than docketml in site-packages: {sorted(added)}"
    # Dependencies: this venv's site-packages as a plain path entry (its .pth files, including
    # the editable docketml finder, are not processed; the fresh venv's own entry comes first).
    (site / "_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    user = tmp_path / "user_repo"
    for pkg in USER_PACKAGES:
        (user / pkg).mkdir(parents=True)
        (user / pkg / "__init__.py").write_text(
            f"raise AssertionError('docketml imported the user repository package {pkg}')\n"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    script = CHECK_SCRIPT.replace("USER)", f"{set(USER_PACKAGES)!r})", 1)
    r = subprocess.run(
        [str(py), "-c", script, str(site)],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    imported = json.loads(r.stdout.strip().splitlines()[-1])
    expected = [
        "docketml.ledger.cli.main",
        "docketml.ledger.report.html",
        "docketml.protocols.loader",
        "docketml.runners.execute.executor",
        "docketml.journal",
    ]
    assert all(name in imported for name in expected), imported
    for script_name in ("docket", "docketml"):
        h = subprocess.run(
            [str(venv / "bin" / script_name), "--help"],
            cwd=user,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert h.returncode == 0 and "Usage" in h.stdout, h.stdout + h.stderr
