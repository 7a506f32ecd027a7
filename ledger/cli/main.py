"""The ``docket`` command line (click). Thin: it parses, calls a function, prints.

Exit codes: 0 success; 1 a check ran and failed; 2 bad input or usage; 3 integrity violation.
Each command group is a standalone click command in its own module of this package; the root
group below adds them (``cli.add_command``), so every command exists in every installation and a
command that needs an optional extra says which one when it runs.
"""

from __future__ import annotations

import sys

import click
from sqlalchemy.exc import OperationalError

from ..errors import LedgerBusy
from ..store.db import is_lock_timeout, lock_timeout_error, resolve_url
from . import audit, costs, db, demo, export, journal, log, protocol, report, run, verdict
from .common import DocketGroup, Env
from .examples import apply_help

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=DocketGroup, context_settings=CONTEXT_SETTINGS)
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


for command in (
    db.init_cmd,
    db.db_group,
    protocol.protocol_group,
    run.run_cmd,
    run.runs_group,
    verdict.ingest_cmd,
    verdict.verdict_cmd,
    costs.costs_cmd,
    costs.cost_group,
    costs.hardware_group,
    journal.journal_group,
    audit.audit_cmd,
    log.log_group,
    log.verify_cmd,
    audit.reproduce_cmd,
    report.report_cmd,
    report.trajectory_cmd,
    export.export_cmd,
    demo.demo_cmd,
):
    cli.add_command(command)
apply_help(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``docket`` and ``docketml``)."""
    try:
        cli.main(args=argv, prog_name="docket")
    except OperationalError as exc:  # pragma: no cover - safety net; commands map this themselves
        if is_lock_timeout(exc):
            click.echo(f"docket: {lock_timeout_error(resolve_url())}", err=True)
            sys.exit(LedgerBusy.exit_code)
        click.echo(f"docket: database error: {exc.orig}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
