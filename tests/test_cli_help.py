"""CLI help conventions: every command shows an ``Example:``, no command summary is truncated, and
output paths are ``--out`` everywhere (old option names still work, hidden)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import DocketCli

from docketml.ledger.cli.examples import HELP, SUMMARY_MAX, walk_commands
from docketml.ledger.cli.main import cli

COMMANDS = list(walk_commands(cli))


def _help(path: tuple[str, ...], width: int) -> str:
    result = CliRunner().invoke(
        cli, [*path, "--help"], prog_name="docket", terminal_width=width, env={"COLUMNS": ""}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_the_walk_sees_the_whole_tree() -> None:
    assert len(COMMANDS) >= 37
    assert ("protocol", "freeze") in {p for p, _ in COMMANDS}


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "docket")
def test_every_command_help_has_an_example_kept_verbatim(path: tuple[str, ...]) -> None:
    text = _help(path, 80)
    assert "Example:" in text, f"docket {' '.join(path)} --help has no Example: block"
    after = text.split("Example:", 1)[1].splitlines()[1]
    assert after.strip().startswith("docket ") or after.strip().startswith("cp "), after


@pytest.mark.parametrize("width", [80, 100, 200])
def test_no_group_help_truncates_a_command_summary(width: int) -> None:
    groups = [p for p, c in COMMANDS if isinstance(c, click.Group)]
    assert () in groups and len(groups) >= 7
    for path in groups:
        listing = _help(path, width).split("\nCommands:\n", 1)[1].splitlines()
        assert len(listing) == len(path and cli.commands[path[0]].commands or cli.commands)
        for line in listing:
            assert not line.rstrip().endswith("..."), f"docket {' '.join(path)} --help: {line!r}"


def test_the_lazy_registry_names_every_command_as_it_calls_itself() -> None:
    """``COMMANDS`` (name -> module, attribute) and the commands' own click names agree, so
    ``docket NAME`` runs the command the listing promises."""
    from docketml.ledger.cli.main import COMMANDS

    assert set(cli.commands) == set(COMMANDS)
    for name, command in cli.commands.items():
        assert command.name == name, (name, command.name)


def test_root_help_loads_no_command_module() -> None:
    """``docket --help`` lists every command from HELP without importing SQLAlchemy, SciPy,
    torch or any command module (a subprocess: this test process has them all loaded)."""
    code = (
        "import json, sys\n"
        "from docketml.ledger.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('sqlalchemy', 'alembic', 'scipy', 'torch', 'docketml.ledger.cli.')\n"
        "bad = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "root = ('docketml.ledger.cli.main', 'docketml.ledger.cli.common',"
        " 'docketml.ledger.cli.examples')\n"
        "bad = [m for m in bad if m not in root]\n"
        "print(json.dumps(bad), file=sys.stderr)\n"
    )
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert json.loads(done.stderr.strip().splitlines()[-1]) == [], done.stderr
    listed = done.stdout.split("\nCommands:\n", 1)[1]
    for name in cli.commands:
        assert f"  {name} " in listed, name


def test_summaries_are_short_and_cover_every_command() -> None:
    paths = {" ".join(p) for p, _ in COMMANDS}
    assert paths <= set(HELP), f"commands without a summary/example: {sorted(paths - set(HELP))}"
    assert set(HELP) <= paths, (
        f"entries for commands that do not exist: {sorted(set(HELP) - paths)}"
    )
    long = {k: s for k, (s, _) in HELP.items() if len(s) > SUMMARY_MAX}
    assert not long, long


OUTPUT_COMMANDS = [
    ("report",),
    ("trajectory",),
    ("protocol", "simulate"),
    ("journal", "export"),
]


@pytest.mark.parametrize("path", OUTPUT_COMMANDS, ids=" ".join)
def test_output_option_is_out_and_old_names_are_hidden(path: tuple[str, ...]) -> None:
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    visible = {o for p in command.params if not getattr(p, "hidden", False) for o in p.opts}
    assert "--out" in visible
    assert not visible & {"--plot", "--output"}
    assert "--out PATH" in _help(path, 100)


def test_journal_export_old_and_new_option_names_write_the_same(
    docket: DocketCli, tmp_path: Path
) -> None:
    added = docket("journal", "add", "--title", "t", "--obs", "o")
    assert added.exit_code == 0, added.output
    for option in ("--out", "-o", "--output"):
        target = tmp_path / f"j{option.strip('-')}.md"
        result = docket("journal", "export", option, str(target))
        assert result.exit_code == 0, result.output
    texts = {p.read_text() for p in tmp_path.glob("j*.md")}
    assert len(texts) == 1 and "t" in texts.pop()
    clash = docket("journal", "export", "--out", "a.md", "--output", "b.md")
    assert clash.exit_code == 2 and "not both" in clash.output
