"""docs/cli.md is generated from the click commands and must be current."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    path = REPO / "scripts" / "gen_cli_docs.py"
    spec = importlib.util.spec_from_file_location("gen_cli_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_cli_docs", module)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current() -> None:
    expected = _generator().render()
    current = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert current == expected, (
        "docs/cli.md is stale: run `python scripts/gen_cli_docs.py` and commit the result"
    )


def test_cli_reference_covers_every_command() -> None:
    import click

    from docketml.ledger.cli.main import cli

    text = _generator().render()

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        assert f"## `{' '.join(path)}`" in text, path
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    walk(sub, (*path, name))

    walk(cli, ("docket",))
    assert "docket report [OPTIONS] PROTOCOL_ID" in text
    assert "`--metric` NAME" in text


def test_generator_is_deterministic(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gen = _generator()
    first = gen.render()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "37")
    monkeypatch.setenv("DOCKET_DB", f"sqlite:///{tmp_path / 'other.db'}")
    assert gen.render() == first
