"""The report's stylesheet and script are package-data files, shipped and inlined verbatim."""

from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

from docketml.ledger.report import html

REPO = Path(__file__).resolve().parents[1]


def test_css_and_js_are_read_from_the_package_data_files() -> None:
    assets = importlib.resources.files("docketml.ledger.report") / "assets"
    css = (assets / "report.css").read_text(encoding="utf-8")
    js = (assets / "report.js").read_text(encoding="utf-8")
    assert html.CSS == css and ":root" in css and "--accent" in css
    assert html.SCRIPT == js and "addEventListener('load'" in js
    assert "<style>" not in Path(html.__file__).read_text(encoding="utf-8").replace(
        "<style>{CSS}</style>", ""
    )


def test_pyproject_ships_the_assets() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "docketml.ledger.report.assets" in config["tool"]["setuptools"]["packages"]
    globs = config["tool"]["setuptools"]["package-data"]["docketml.ledger.report.assets"]
    shipped = {p.name for g in globs for p in (REPO / "ledger" / "report" / "assets").glob(g)}
    assert {"report.css", "report.js"} <= shipped
