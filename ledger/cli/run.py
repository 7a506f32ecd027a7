"""``docket run`` and ``docket runs list``. The CLI is the composition root: it is the one place
in ``ledger`` that reaches into ``runners`` (lazily, so query commands never import torch)."""

from __future__ import annotations

from typing import Any

import click

from ..billing.money import format_usd
from ..errors import CheckFailed, UserError
from ..ingest import DEFAULT_JOB
from ..store import protocols as store
from ..store.runs import list_runs, reap_abandoned, run_summary
from .common import LEDGER_ID, Env, emit, json_option, pass_env, table


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
@click.argument("protocol", required=False, metavar="[PROTOCOL_ID]")
@click.option("--protocol", "protocol_id", help="Only runs of this protocol (all versions).")
@click.option("--job", help="Only runs of this job (with a protocol: one of its jobs).")
@click.option(
    "--status",
    type=click.Choice(
        ["queued", "running", "succeeded", "failed", "abandoned", "silent_noop", "skipped"]
    ),
)
@json_option
@pass_env
def runs_list(
    env: Env,
    protocol: str | None,
    protocol_id: str | None,
    job: str | None,
    status: str | None,
    as_json: bool,
) -> None:
    """List runs; a running run whose lease expired shows as "running (lease expired)".

    PROTOCOL_ID (or --protocol) keeps the runs of that protocol, all versions; --job the runs
    of one job. Read-only: nothing is written (``docket runs reap`` marks such runs abandoned)."""
    if protocol and protocol_id and protocol != protocol_id:
        raise UserError(f"give the protocol once: {protocol!r} and --protocol {protocol_id!r}")
    protocol_id = protocol or protocol_id
    with env.ledger().read_session() as session:
        pks: list[int] | None = None
        if protocol_id:
            pks = [v.id for v in store.chain(session, protocol_id)]
            if not pks:
                store.latest(session, protocol_id)
            if job is not None:
                names = {j.name for v in store.chain(session, protocol_id)
                         for j in store.parse_row(v).jobs} | {DEFAULT_JOB}  # fmt: skip
                if job not in names:
                    raise UserError(
                        f"--job {job!r} is not a job of {protocol_id}; jobs: "
                        + ", ".join(sorted(names))
                    )
        runs = list_runs(session, protocol_pks=pks, status=status, job=job)
        data = [run_summary(r) for r in runs]

    def human(c: Any) -> None:
        rows = [
            (
                r["id"],
                r["job"],
                r["kind"],
                r["status"] + (" (lease expired)" if r["lease_expired"] else ""),
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


@runs_group.command("reap")
@json_option
@pass_env
def runs_reap(env: Env, as_json: bool) -> None:
    """Mark runs whose lease expired as abandoned.

    A run whose runner died (SIGKILL, lost node) stays "running" until a writer reaps it:
    `docket run` and `docket ingest` do so first; this command does only that. Each reaped run
    keeps its cost up to its last heartbeat.

    \b
    Example:
      docket runs reap --json
    """
    with env.ledger().session() as session:
        data = [run_summary(r) for r in reap_abandoned(session)]

    def human(c: Any) -> None:
        if not data:
            c.print("no run with an expired lease")
        for r in data:
            c.print(f"run #{r['id']} ({r['job']}) marked abandoned: {r['error']}")

    emit(data, as_json, human)


@runs_group.command("show")
@click.argument("run_id", type=LEDGER_ID)
@click.option("--texts", is_flag=True, help="Also print the run's generated texts.")
@json_option
@pass_env
def runs_show(env: Env, run_id: int, texts: bool, as_json: bool) -> None:
    """One run in full: config, provenance, metrics.

    Shows its config, provenance (git sha, input and checkpoint sha256, protocol version), knob
    audit, effective metrics (the no-step row, else the highest step), per-group signal
    summaries and, with --texts, its generated texts. Read-only.

    \b
    Example:
      docket runs show 12 --texts
      docket runs show 12 --json | jq .metrics
    """
    from ..store.inspect import run_detail

    with env.ledger().read_session() as session:
        data = run_detail(session, run_id, texts=texts)

    def human(c: Any) -> None:
        status = data["status"] + (" (lease expired)" if data["lease_expired"] else "")
        c.print(
            f"run #{data['id']}  {data['protocol']} v{data['protocol_version']}  job "
            f"{data['job']} ({data['kind']}, {data['source']})  {status}"
        )
        for key in ("seed", "hardware", "started_at", "finished_at", "wall_s", "git_sha",
                    "input_sha256", "checkpoint_sha256", "error"):  # fmt: skip
            if data.get(key) not in (None, ""):
                c.print(f"  {key}: {data[key]}")
        c.print(f"  cost: {format_usd(data['cost_micros'])}")
        if data["silent_noop_knobs"]:
            c.print(f"  knobs that never fired: {', '.join(data['silent_noop_knobs'])}")
        metric_rows = [
            (name, m["value"], m["step"] if m["step"] is not None else "final",
             "" if m["ci_low"] is None else f"[{m['ci_low']:.4g}, {m['ci_high']:.4g}]")
            for name, m in data["metrics"].items()
        ]  # fmt: skip
        if metric_rows:
            c.print(
                table("metrics (the rows that count)", ["name", "value", "step", "CI"], metric_rows)
            )
        signal_rows = [
            (s["group"], s["signal"], s["n"], f"{s['mean']:.4g}",
             "" if s["mean_pos"] is None else f"{s['mean_pos']:.4g}",
             "" if s["mean_neg"] is None else f"{s['mean_neg']:.4g}")
            for s in data["signals"]
        ]  # fmt: skip
        if signal_rows:
            c.print(
                table(
                    "signals",
                    ["group", "signal", "n", "mean", "mean (label 1)", "mean (label 0)"],
                    signal_rows,
                )  # fmt: skip
            )
        if texts:
            for item, text in data["texts"].items():
                c.print(f"[bold]{item}[/bold]: {text}", markup=True, highlight=False)
        elif data["n_texts"]:
            c.print(f"  {data['n_texts']} generated texts (--texts shows them)")

    emit(data, as_json, human)


@runs_group.command("compare")
@click.argument("run_ids", type=LEDGER_ID, nargs=-1, required=True)
@json_option
@pass_env
def runs_compare(env: Env, run_ids: tuple[int, ...], as_json: bool) -> None:
    """Runs side by side: params, metrics, signals.

    For each param, effective metric and per-group signal mean: one column per run and whether
    they agree. Read-only.

    \b
    Example:
      docket runs compare 12 15
      docket runs compare 12 15 18 --json
    """
    from ..store.inspect import compare_runs

    with env.ledger().read_session() as session:
        data = compare_runs(session, list(run_ids))

    def human(c: Any) -> None:
        heads = [f"#{r['id']} {r['job']} ({r['status']})" for r in data["runs"]]
        for section in ("params", "metrics", "signal_means"):
            rows = [
                (name, *("" if v is None else v for v in entry["values"]),
                 "" if entry["same"] else "differs")
                for name, entry in data[section].items()
            ]  # fmt: skip
            if rows:
                c.print(table(section, ["name", *heads, ""], rows))

    emit(data, as_json, human)
