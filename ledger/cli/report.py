"""``docket report`` (the HTML report) and ``docket trajectory`` (metrics per checkpoint step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from docketml.extras import require_extra

from .common import Env, emit, json_option, out_option, pass_env, table


@click.command("report")
@click.argument("protocol_id")
@out_option(
    "out_dir",
    "Directory for index.html and figures/ (created if missing).",
    directory=True,
    required=True,
)
@click.option(
    "--embed",
    is_flag=True,
    help="Inline the figures as data: URIs so index.html is one portable file.",
)
@json_option
@pass_env
def report_cmd(env: Env, protocol_id: str, out_dir: Path, embed: bool, as_json: bool) -> None:
    """Write a static HTML report of a protocol: its sha, sign-check, verdict per hypothesis,
    ROC curves, forest plot, trajectories, cost per run and journal entries."""
    from ..report.html import build_report

    index = build_report(env.ledger(), protocol_id, out_dir, embed_images=embed)
    figures = sorted(str(p) for p in (index.parent / "figures").glob("*.png"))
    data = {"protocol": protocol_id, "index": str(index.resolve()), "figures": figures}
    emit(
        data,
        as_json,
        lambda c: c.print(
            f"report of {protocol_id} written to {index.resolve()} ({len(figures)} figure(s))"
        ),
    )


@click.command("trajectory")
@click.argument("protocol_id")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME",
    help="Only this metric (repeatable; default: every metric recorded with a step).",
)
@click.option(
    "--job",
    metavar="NAME",
    help="Only this job's runs (default: every job; a metric of several jobs is one series each).",
)
@out_option(
    "plot",
    "Also write a PNG with one panel per metric against checkpoint step.",
    aliases=("--plot",),
)
@json_option
@pass_env
def trajectory_cmd(
    env: Env,
    protocol_id: str,
    metrics: tuple[str, ...],
    job: str | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Recorded metrics against checkpoint step, from the succeeded runs of the protocol's
    latest frozen version."""
    from ..report.trajectory import plot_trajectory, trajectory

    if plot is not None:
        require_extra("plots")
    with env.ledger().read_session() as session:
        traj = trajectory(session, protocol_id, list(metrics) or None, job=job)
    data = traj.as_dict()
    if plot is not None:
        plot_trajectory(traj, plot)
        data["plot"] = str(plot)

    def human(c: Any) -> None:
        title = f"{traj.protocol_id} v{traj.version}: metrics by checkpoint step"
        if not traj.series:
            c.print(f"{title}: none recorded")
        else:
            rows = [
                [row["step"]] + ["" if row[m] is None else f"{row[m]:.4g}" for m in traj.metrics]
                for row in traj.table()
            ]
            c.print(table(title, ["step", *traj.metrics], rows))
        if traj.ignored_runs:
            c.print(f"{traj.ignored_runs} run(s) of other versions ignored")
        if plot is not None:
            c.print(f"plot written to {plot}")

    emit(data, as_json, human)
