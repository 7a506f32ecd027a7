"""``docket run`` and ``docket runs list``. The CLI is the composition root: it is the one place
in ``ledger`` that reaches into ``runners`` (lazily, so query commands never import torch)."""

from __future__ import annotations

from typing import Any

import click

from ..billing.money import format_usd
from ..errors import CheckFailed
from ..store import protocols as store
from ..store.runs import list_runs, reap_abandoned, run_summary
from .common import Env, emit, json_option, pass_env, table


@click.command("run")
@click.argument("protocol_id")
@click.option("--job", help="Run only this job (its dependencies must have succeeded).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--address", help="Ray cluster address (e.g. auto); default starts a local Ray.")
@click.option("--hardware", help="Run on this hardware (catalog name) instead of the job's.")
@click.option("--force", is_flag=True, help="Re-run jobs that already succeeded.")
@click.option("--allow-over-budget", is_flag=True, help="Proceed past the budget (needs --reason).")
@click.option("--reason", help="Why the budget may be exceeded (written to the journal).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@json_option
@pass_env
def run_cmd(
    env: Env,
    protocol_id: str,
    job: str | None,
    executor: str,
    address: str | None,
    hardware: str | None,
    force: bool,
    allow_over_budget: bool,
    reason: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Run the jobs of a frozen protocol in dependency order, recording every run."""
    from docketml.runners.execute.executor import run_protocol

    outcomes = run_protocol(
        env.ledger(),
        protocol_id,
        job=job,
        force=force,
        hardware=hardware,
        executor=executor,
        address=address,
        show_progress=not no_progress and not as_json,
        allow_over_budget=allow_over_budget,
        over_budget_reason=reason,
    )
    data = [o.as_dict() for o in outcomes]

    def human(c: Any) -> None:
        rows = [
            (
                o.job,
                o.status,
                o.run_id or "",
                f"{o.wall_s:.1f}" if o.wall_s else "",
                format_usd(o.cost_micros),
                (o.error or "").strip().splitlines()[0] if o.error else "",
            )
            for o in outcomes
        ]
        c.print(
            table(f"run {protocol_id}", ["job", "status", "run", "wall s", "cost", "note"], rows)
        )

    emit(data, as_json, human)
    bad = [o for o in outcomes if o.status not in ("succeeded", "up_to_date")]
    if bad:
        raise CheckFailed(
            f"{len(bad)} job(s) did not succeed: " + ", ".join(f"{o.job} ({o.status})" for o in bad)
        )


@click.group("runs")
def runs_group() -> None:
    """Inspect recorded runs."""


@runs_group.command("list")
@click.option("--protocol", "protocol_id", help="Only runs of this protocol (all versions).")
@click.option(
    "--status",
    type=click.Choice(
        ["queued", "running", "succeeded", "failed", "abandoned", "silent_noop", "skipped"]
    ),
)
@json_option
@pass_env
def runs_list(env: Env, protocol_id: str | None, status: str | None, as_json: bool) -> None:
    """List runs (abandoned runs are detected first: an expired lease means the runner died)."""
    with env.ledger().session() as session:
        reap_abandoned(session)
        pks: list[int] | None = None
        if protocol_id:
            pks = [v.id for v in store.chain(session, protocol_id)]
            if not pks:
                store.latest(session, protocol_id)
        data = [run_summary(r) for r in list_runs(session, protocol_pks=pks, status=status)]

    def human(c: Any) -> None:
        rows = [
            (
                r["id"],
                r["job"],
                r["kind"],
                r["status"],
                r["hardware"],
                f"{r['wall_s']:.1f}" if r["wall_s"] else "",
                format_usd(r["cost_micros"]),
                (r["protocol_sha256"] or "")[:12],
                ", ".join(r["silent_noop_knobs"])
                or ((r["error"] or "").splitlines()[0] if r["error"] else ""),
            )
            for r in data
        ]
        c.print(
            table(
                "runs",
                ["id", "job", "kind", "status", "hardware", "wall s", "cost", "protocol", "note"],
                rows,
            )
        )

    emit(data, as_json, human)
