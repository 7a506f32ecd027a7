"""``docket demo``: the end-to-end miniature study (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import click

from docketml.extras import require_extra

from ..errors import CheckFailed


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("docket-demo"),
    show_default=True,
    help="Directory of the demo's own ledger, artifacts and report (recreated on each run).",
)
def demo_cmd(directory: Path) -> None:
    """Register, sign-check, freeze, run both shipped studies, verdicts, bill, journal, audit,
    report: everything docket does, on this machine, in a few minutes."""
    require_extra("models")  # the demo trains two tiny models
    from .demo_steps import run_demo

    if run_demo(directory) != 0:
        raise CheckFailed("the demo did not go as expected (see above)")
