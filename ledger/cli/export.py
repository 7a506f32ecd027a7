"""``docket export``: a protocol's runs, observations, metrics and verdicts as files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import Env, emit, json_option, out_option, pass_env


@click.command("export")
@click.argument("protocol_id")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True
)
@out_option(
    "out_dir",
    "Directory to write runs, observations, metrics and verdicts into.",
    directory=True,
    required=True,
)
@json_option
@pass_env
def export_cmd(env: Env, protocol_id: str, fmt: str, out_dir: Path, as_json: bool) -> None:
    """Export a protocol's tables for pandas or R.

    Writes runs, observations, metrics and verdicts of every version of PROTOCOL_ID, one file
    per table plus manifest.json; columns are documented in docs/export.md. Read-only.

    \b
    Example:
      docket export router-entropy-metacog --out export/
      docket export router-entropy-metacog --format parquet --out export/
    """
    from docketml.extras import require_extra

    from ..store.export import collect_tables, write_tables

    if fmt == "parquet":
        require_extra("parquet", "--format parquet")  # before anything is read or written
    with env.ledger().read_session() as session:
        tables = collect_tables(session, protocol_id)
    data = {"protocol": protocol_id, "format": fmt, "tables": write_tables(tables, out_dir, fmt)}

    def human(c: Any) -> None:
        for entry in data["tables"].values():
            c.print(f"{entry['rows']:>8} rows  {entry['path']}")

    emit(data, as_json, human)
