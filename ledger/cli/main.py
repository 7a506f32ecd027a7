"""The ``docket`` command line (click). Thin: it parses, calls a function, prints.

Exit codes: 0 success; 1 a check ran and failed; 2 bad input or usage; 3 integrity violation.
Each command group is a standalone click command in its own module of this package; the root
group below names them (:data:`COMMANDS`) and imports a module when its command runs, so every
command exists in every installation, a command that needs an optional extra says which one when
it runs, and ``docket --help`` or ``docket verify`` do not pay for SQLAlchemy, SciPy or torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ..errors import LedgerBusy
from .common import DocketGroup, Env, is_database_error
from .examples import HELP, apply_help

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


#: Every top-level command: name -> (module of this package, attribute). A command's module (and
#: what it imports: SQLAlchemy, SciPy, torch) is imported only when that command runs, or when
#: the whole tree is walked (``cli.commands``: the docs generator, the help tests); ``docket
#: --help`` lists the summaries of :data:`~.examples.HELP` without importing any of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("db", "init_cmd"),
    "db": ("db", "db_group"),
    "protocol": ("protocol", "protocol_group"),
    "run": ("run", "run_cmd"),
    "runs": ("run", "runs_group"),
    "ingest": ("verdict", "ingest_cmd"),
    "verdict": ("verdict", "verdict_cmd"),
    "costs": ("costs", "costs_cmd"),
    "cost": ("costs", "cost_group"),
    "hardware": ("costs", "hardware_group"),
    "journal": ("journal", "journal_group"),
    "audit": ("audit", "audit_cmd"),
    "log": ("log", "log_group"),
    "verify": ("log", "verify_cmd"),
    "reproduce": ("audit", "reproduce_cmd"),
    "report": ("report", "report_cmd"),
    "trajectory": ("report", "trajectory_cmd"),
    "export": ("export", "export_cmd"),
    "demo": ("demo", "demo_cmd"),
}


class LazyDocketGroup(DocketGroup):
    """The root group: commands of :data:`COMMANDS` are imported on first use, their help from
    :data:`~.examples.HELP` applied as they load (:func:`~.examples.apply_help`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded: dict[str, click.Command] = {}
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        """Every command, loaded (walking the tree needs them all)."""
        for name in COMMANDS:
            self._load(name)
        return self._loaded

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._loaded.update(value)

    def _load(self, name: str) -> click.Command | None:
        if name not in self._loaded:
            if name not in COMMANDS:
                return None
            module_name, attribute = COMMANDS[name]
            module = importlib.import_module(f"{__package__}.{module_name}")
            command = getattr(module, attribute)
            apply_help(command, (name,))
            self._loaded[name] = command
        return self._loaded[name]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._load(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the summaries in HELP (a command without one is loaded)."""
        rows = []
        for name in self.list_commands(ctx):
            entry = HELP.get(name)
            if entry is None:
                command = self._load(name)
                summary = command.get_short_help_str(formatter.width) if command else ""
            else:
                summary = entry[0]
            rows.append((name, summary))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyDocketGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--db",
    "db_url",
    envvar="DOCKET_DB",
    metavar="URL",
    help="Ledger URL (default: sqlite:///./.docket/ledger.db; env DOCKET_DB).",
)
@click.version_option(package_name="docketml", prog_name="docket")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None) -> None:
    """docket: pre-register ML experiments, freeze them, run them, and get verdicts that cannot
    drift after the numbers come in."""
    ctx.obj = Env(db_url)


apply_help(cli, (), recurse=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``docket`` and ``docketml``)."""
    try:
        cli.main(args=argv, prog_name="docket")
    except Exception as exc:  # pragma: no cover - safety net; commands map this themselves
        if not is_database_error(exc):
            raise
        from ..store.db import is_lock_timeout, lock_timeout_error, resolve_url

        if is_lock_timeout(exc):
            click.echo(f"docket: {lock_timeout_error(resolve_url())}", err=True)
            sys.exit(LedgerBusy.exit_code)
        click.echo(f"docket: database error: {exc.orig}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
