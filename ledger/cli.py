"""The ``docket`` command line (click). Thin: it parses, calls a function, prints.

Exit codes: 0 success; 1 a check ran and failed; 2 bad input or usage; 3 integrity violation.
Command groups live in ``ledger/cli_*.py`` modules and attach themselves to :data:`cli`.
"""

from __future__ import annotations

import sys

import click
from sqlalchemy.exc import OperationalError

from ledger.cli_common import DocketGroup, Env

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=DocketGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--db",
    "db_url",
    envvar="DOCKET_DB",
    metavar="URL",
    help="Ledger URL (default: sqlite:///./.docket/ledger.db; env DOCKET_DB).",
)
@click.version_option(package_name="docket", prog_name="docket")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None) -> None:
    """docket: pre-register ML experiments, freeze them, run them, and get verdicts that cannot
    drift after the numbers come in."""
    ctx.obj = Env(db_url)


def _register_commands() -> None:
    # Each module adds its commands to `cli` on import.
    from ledger import (  # noqa: F401
        cli_db,
        cli_protocol,
    )

    for optional in (
        "ledger.cli_verdict",
        "ledger.cli_run",
        "ledger.cli_costs",
        "ledger.cli_journal",
        "ledger.cli_audit",
        "ledger.cli_report",
        "ledger.cli_demo",
    ):
        try:
            __import__(optional)
        except ModuleNotFoundError as exc:
            if exc.name != optional:
                raise


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="docket")
    except OperationalError as exc:  # pragma: no cover - safety net; commands map this themselves
        click.echo(f"docket: database error: {exc.orig}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
