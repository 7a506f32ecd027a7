"""``docket hardware list``, ``docket cost add|import-receipts`` and ``docket costs`` (the bill).

Money on the command line is parsed as text (``--usd 0.18``, ``--usd '$0.18'``) straight into
integer micro-dollars: no float ever holds an amount.
"""

from __future__ import annotations

from typing import Any

import click

from ..billing import bill as billing
from ..billing.money import format_usd, usd_to_micros
from ..errors import UserError
from ..store.protocols import latest as latest_version
from .common import Env, emit, json_option, pass_env, table


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.1f} s"


@click.group("hardware")
def hardware_group() -> None:
    """The hardware catalog: $/hour, setup overhead, billing granularity (user-editable in
    .docket/hardware.yaml or $DOCKET_HARDWARE)."""


@hardware_group.command("list")
@json_option
def hardware_list(as_json: bool) -> None:
    """List the hardware catalog with its hourly rates."""
    from ..billing.costs import rate_micros_per_hour

    catalog = billing.user_catalog()
    items = [
        {
            "name": hw.name,
            "usd_per_hour": str(hw.usd_per_hour),
            "rate_micros_per_hour": rate_micros_per_hour(hw),
            "setup_seconds": hw.setup_seconds,
            "billing_granularity_s": hw.billing_granularity_s,
            "is_gpu": hw.is_gpu,
            "description": hw.description,
        }
        for hw in catalog.values()
    ]
    data = {"source": str(catalog.source) if catalog.source else None, "hardware": items}

    def human(c: Any) -> None:
        rows = [
            (
                i["name"],
                format_usd(i["rate_micros_per_hour"], precise=True),
                i["setup_seconds"],
                i["billing_granularity_s"],
                "yes" if i["is_gpu"] else "no",
                i["description"],
            )
            for i in items
        ]
        cols = ["name", "$/hour", "setup s", "billing granularity s", "gpu", "description"]
        c.print(table("hardware catalog", cols, rows))
        c.print(f"overrides: {data['source'] or 'none (built-in rates)'}")

    emit(data, as_json, human)


@click.group("cost")
def cost_group() -> None:
    """Record spend: manual entries and the receipts' bill."""


@cost_group.command("add")
@click.option("--protocol", "protocol_id", help="Protocol the spend belongs to (its budget).")
@click.option("--hardware", required=True, help="Hardware name from `docket hardware list`.")
@click.option("--seconds", help="Wall time in seconds; without --usd the cost is computed.")
@click.option("--usd", help="Dollars actually paid, e.g. 0.18 (recorded as given).")
@click.option("--note", help="Free text kept with the entry.")
@click.option("--label", help="Short name shown on the bill (e.g. v8a).")
@click.option(
    "--run",
    "run_id",
    type=int,
    help="Attach the cost to this existing run (its protocol; runs.cost_micros follows).",
)
@json_option
@pass_env
def cost_add(
    env: Env,
    protocol_id: str | None,
    run_id: int | None,
    hardware: str,
    seconds: str | None,
    usd: str | None,
    note: str | None,
    label: str | None,
    as_json: bool,
) -> None:
    """Record spend outside `docket run`: --seconds and/or --usd (exact decimal dollars);
    --run N attaches it to run N."""
    if run_id is not None and protocol_id is not None:
        raise UserError("give --run (the cost takes the run's protocol) or --protocol, not both")
    wall = billing.parse_seconds(seconds) if seconds is not None else None
    micros: int | None = None
    if usd is not None:
        try:
            micros = usd_to_micros(usd)
        except ValueError as exc:
            raise UserError(f"--usd: {exc}") from None
    with env.ledger().session() as session:
        pk = latest_version(session, protocol_id).id if protocol_id else None
        row = billing.add_manual_cost(
            session,
            hardware=hardware,
            seconds=wall,
            usd_micros=micros,
            protocol_pk=pk,
            label=label,
            note=note,
            run_id=run_id,
        )
        data = {
            "seq": row.seq,
            "run_id": row.run_id,
            "protocol": protocol_id,
            "hardware": row.hardware,
            "wall_s": row.wall_s,
            "billed_s": row.billed_s,
            "rate_micros_per_hour": row.rate_micros_per_hour,
            "usd_micros": row.usd_micros,
            "usd": format_usd(row.usd_micros),
            "computed": micros is None,
            "label": row.label,
            "note": row.note,
            "hash": row.hash,
        }

    def human(c: Any) -> None:
        how = (
            f"computed: {data['billed_s']} s billed at "
            f"{format_usd(data['rate_micros_per_hour'], precise=True)}/h"
            if data["computed"]
            else "recorded"
        )
        exact = format_usd(data["usd_micros"], precise=True)
        to_run = f" for run {data['run_id']}" if data["run_id"] is not None else ""
        c.print(f"cost #{data['seq']}{to_run}: {exact} on {data['hardware']} ({how})")

    emit(data, as_json, human)


@cost_group.command("import-receipts")
@click.option("--protocol", "protocol_id", help="Attach the imported spend to this protocol.")
@json_option
@pass_env
def cost_import_receipts(env: Env, protocol_id: str | None, as_json: bool) -> None:
    """Import the receipts' bill (v5, v6, v7, v8a, v8b, splice) with the recorded dollars;
    running it again imports nothing."""
    with env.ledger().session() as session:
        pk = latest_version(session, protocol_id).id if protocol_id else None
        data = billing.import_receipts(session, pk)
    data["gpu"] = format_usd(data["gpu_micros"])
    data["total"] = format_usd(data["total_micros"])

    def human(c: Any) -> None:
        c.print(
            f"imported {len(data['imported'])} receipt(s) (GPU {data['gpu']}, total "
            f"{data['total']}); {len(data['skipped'])} already in the ledger"
        )

    emit(data, as_json, human)


@click.command("costs")
@click.option(
    "--by",
    type=click.Choice(billing.GROUPINGS),
    default="run",
    show_default=True,
    help="Group the bill by run, protocol, hardware or month.",
)
@click.option("--protocol", "protocol_id", help="Only this protocol's costs (all versions).")
@json_option
@pass_env
def costs_cmd(env: Env, by: str, protocol_id: str | None, as_json: bool) -> None:
    """The bill: each cost with hardware, wall time and dollars; totals per group, overall and
    GPU vs CPU."""
    with env.ledger().read_session() as session:
        if protocol_id is not None:
            latest_version(session, protocol_id)  # unknown id -> exit 2 naming known ones
        result = billing.bill(session, by, protocol_id=protocol_id)  # type: ignore[arg-type]
    data = result.as_dict()

    def human(c: Any) -> None:
        rows: list[tuple[Any, ...]] = []
        for group in result.groups:
            for line in group.lines:
                hw = line.hardware + (" (unknown)" if line.hardware_class == "unknown" else "")
                rows.append(
                    (
                        group.key,
                        line.entry,
                        line.protocol or "",
                        hw,
                        _wall(line.wall_s),
                        "—" if line.billed_s is None else f"{line.billed_s} s",
                        line.usd,
                    )
                )
            if by != "run" or len(group.lines) > 1:
                rows.append(
                    ("", f"subtotal {group.key}", "", "", "", "", format_usd(group.total_micros))
                )
        cols = [by, "entry", "protocol", "hardware", "wall time", "billed", "cost"]
        if by == "run":  # the entry is the group
            cols, rows = cols[1:], [r[1:] for r in rows]
        c.print(table(f"the bill (by {by})", cols, rows))
        line = (
            f"Total {format_usd(result.total_micros)}  "
            f"(GPU {format_usd(result.gpu_micros)}, CPU {format_usd(result.cpu_micros)}"
        )
        if result.unknown_hardware:
            line += (
                f", unknown hardware {format_usd(result.unknown_micros)}: "
                f"{', '.join(result.unknown_hardware)}"
            )
        c.print(line + ")")

    emit(data, as_json, human)
