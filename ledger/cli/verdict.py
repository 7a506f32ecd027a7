"""``docket verdict`` and ``docket ingest``.

``docket verdict PROTOCOL [--json]``: the verdict of the latest frozen version from its
succeeded runs (see ``ledger/verdict.py``), recorded in the ledger; exit 0 whatever the verdict,
1 if the protocol was never frozen.

``docket ingest PROTOCOL FILE [--job NAME] [--metrics F] [--texts F] [--hardware H --seconds S
| --usd X] [--device D] [--json]``: bring-your-own per-sample results, per-step metrics, texts and
a cost, with the provenance of the current directory (see ``ledger/ingest.py``); exit 2 listing
every bad line of every file, 1 if the protocol is not frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from ..billing.money import format_usd
from ..errors import UserError
from .common import Env, emit, json_option, pass_env, table


def _num(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _ci(lo: Any, hi: Any, fmt: str = "+.3f") -> str:
    return "-" if lo is None or hi is None else f"[{format(lo, fmt)}, {format(hi, fmt)}]"


def print_verdict(data: dict[str, Any], c: Any) -> None:
    """The human form: one table per hypothesis, then the overall verdict."""
    c.print(
        f"[bold]{escape(data['protocol'])}[/bold] v{data['version']}  "
        f"sha256 {data['protocol_sha256']}"
    )
    c.print(escape(data["amendments"]["note"]))
    c.print(escape(data["ignored_runs"]["note"]))
    used = ", ".join(f"#{r['id']} {r['job']}" for r in data["runs"]) or "none"
    c.print(f"runs used: {escape(used)}")
    head = data.get("log_head")
    if isinstance(head, dict):
        signed = "signed" if head.get("sth") else f"unsigned: {head.get('unsigned')}"
        c.print(f"log head: size {head['tree_size']}, root {head['root_hash'][:16]}... ({signed})")
    for note in data.get("reruns", []):
        c.print(f"note: {escape(note)}")
    for h in data["hypotheses"]:
        title = escape(f"{h['id']} ({h['rule']}, {h['kind']}): {h['verdict']}")
        if h["kind"] == "regime_wins":
            rows = [
                (
                    g["group"],
                    g["candidate"],
                    _num(g["auroc"]),
                    g["baseline"] or "-",
                    _num(g["baseline_auroc"]),
                    _num(g["delta"], "+.3f"),
                    _ci(g["ci_low"], g["ci_high"]),
                    "WIN" if g["win"] else ("missing" if g.get("missing") else ""),
                )
                for g in h["groups"]
            ]
            cols = [
                "group",
                "candidate",
                "AUROC",
                "best baseline",
                "its AUROC",
                "delta",
                "CI",
                "win",
            ]
            c.print(table(title, cols, rows))
            pooled = [
                (
                    p["signal"],
                    p.get("role", ""),
                    _num(p["auroc"]),
                    _ci(*(p.get("delong_ci95") or [None, None]), fmt=".3f"),
                )
                for p in h.get("pooled", [])
                if p.get("auroc") is not None
            ]
            if pooled:
                c.print(
                    table(
                        "  pooled (cross-group) AUROC",
                        ["signal", "role", "AUROC", "DeLong 95% CI"],
                        pooled,
                    )
                )
            if h.get("wins") is not None:
                c.print(f"  wins: {h['wins']} of {len(h.get('contests', []))}")
        elif h["kind"] == "threshold":
            what = h["metric"] if h["statistic"] == "metric" else f"{h['statistic']}({h['signal']})"
            rows = [
                (
                    what,
                    _num(h["value"], ".4f"),
                    _ci(h["ci_low"], h["ci_high"], ".4f")
                    + (" (not used)" if h.get("decide") == "observed" else ""),
                    f"{h['op']} {h['bound']:g}"
                    + (" observed" if h.get("decide") == "observed" else ""),
                )
            ]
            c.print(table(title, ["statistic", "value", "CI", "needs"], rows))
        elif h["kind"] == "non_inferiority":
            rows = [
                (
                    f"{h['statistic']}({h['signal']})",
                    f"{h['candidate_job']} {_num(h['candidate_value'], '.4f')}",
                    f"{h['reference_job']} {_num(h['reference_value'], '.4f')}",
                    _num(h["difference"], "+.4f"),
                    _ci(h["ci_low"], h["ci_high"], "+.4f"),
                    f"> -{h['margin']:g}",
                )
            ]
            c.print(
                table(
                    title,
                    ["statistic", "candidate", "reference", "difference", "CI", "needs"],
                    rows,
                )
            )
        else:
            c.print(f"[bold]{title}[/bold]")
        c.print(f"  {h['verdict']}: {escape(h['why'])}")
    c.print(
        f"[bold]verdict: {data['verdict']}[/bold] (primary hypothesis {data['primary']}); "
        f"inputs sha256 {data['inputs_sha256']}" + _recorded_note(data)
    )


def _recorded_note(data: dict[str, Any]) -> str:
    if "verdict_id" not in data:
        return ""
    if data.get("recorded") == "look":
        return (
            f"; same inputs and result as verdict #{data['verdict_id']}: "
            "logged as a look, no new verdict row"
        )
    return f"; recorded as verdict #{data['verdict_id']}"


def print_history(events: list[dict[str, Any]], c: Any) -> None:
    rows = [
        (
            e["at"][:19].replace("T", " "),
            e["kind"],
            f"v{e['version']}",
            f"#{e['verdict_id']}",
            e["verdict"],
            e["inputs_sha256"][:16],
            e.get("who") or ", ".join(f"#{r}" for r in e.get("runs", [])),
        )
        for e in events
    ]
    c.print(
        table(
            "verdicts and looks",
            ["at (UTC)", "kind", "version", "verdict", "result", "inputs sha256", "who / runs"],
            rows,
        )
    )


@click.command("verdict")
@click.argument("protocol_id")
@click.option(
    "--history", is_flag=True, help="List every recorded verdict and every look (read-only)."
)
@json_option
@pass_env
def verdict_cmd(env: Env, protocol_id: str, history: bool, as_json: bool) -> None:
    """Compute and record the verdict of PROTOCOL_ID's latest frozen version from its succeeded
    runs (runs bound to other versions are ignored, and said so).

    A new verdict row is recorded only when the inputs or the result changed; a repeated look
    is logged as a look. --history lists both. The verdict reads in a read-only snapshot, so
    runs, costs and journal entries keep being written while it computes.

    \b
    Example:
      docket verdict router-entropy-metacog
      docket verdict router-entropy-metacog --history --json
    """
    if history:
        from ..store.looks import history as verdict_history

        with env.ledger().read_session() as session:
            events = verdict_history(session, protocol_id)
        emit(events, as_json, lambda c: print_history(events, c))
        return
    from ..verdicts import verdict_outside_lock

    data = verdict_outside_lock(env.ledger(), protocol_id)
    emit(data, as_json, lambda c: print_verdict(data, c))


@click.command("ingest")
@click.argument("protocol_id")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--job",
    "job",
    metavar="NAME",
    help="Record the run as this job of the protocol (so rules with `job: NAME` read it); "
    "default: ingest.",
)
@click.option(
    "--metrics",
    "metrics",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Per-step metrics, JSONL: {"name": str, "value": number, "step": int|null}.',
)
@click.option(
    "--texts",
    "texts",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Generated texts, JSONL: {"item": str, "text": str}.',
)
@click.option("--hardware", help="Hardware the results were produced on (`docket hardware list`).")
@click.option("--seconds", help="Wall time on --hardware; the cost is metered at its rate.")
@click.option("--usd", help="Dollars actually paid (recorded as given), with --hardware.")
@click.option(
    "--device",
    help="Device the job ran on (e.g. cuda:0); default cuda for GPU hardware, cpu for other "
    "hardware, unknown without --hardware.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    help="The replicate seed these results were produced with (required for a job that "
    "declares replicates; one of its seeds).",
)
@json_option
@pass_env
def ingest_cmd(
    env: Env,
    protocol_id: str,
    file: Path,
    job: str | None,
    metrics: Path | None,
    texts: Path | None,
    hardware: str | None,
    seconds: str | None,
    usd: str | None,
    device: str | None,
    seed: int | None,
    as_json: bool,
) -> None:
    """Record per-sample results produced elsewhere (JSONL or CSV) as a run of PROTOCOL_ID's
    frozen version, with optional per-step metrics, generated texts and a cost, and the
    provenance of the current directory; every bad line is reported and nothing is written."""
    from docketml.runners.execute.provenance import provenance

    from ..billing.bill import parse_seconds, user_catalog
    from ..billing.hardware import UnknownHardwareError
    from ..billing.money import usd_to_micros
    from ..ingest import IngestCost, ingest_file

    cost = None
    if hardware is None:
        if seconds is not None or usd is not None:
            raise UserError("--seconds and --usd need --hardware (the machine the job ran on)")
    else:
        micros = None
        if usd is not None:
            try:
                micros = usd_to_micros(usd)
            except ValueError as exc:
                raise UserError(f"--usd: {exc}") from None
        wall = parse_seconds(seconds) if seconds is not None else None
        cost = IngestCost(hardware, wall, micros)
        if device is None:
            try:
                device = "cuda" if user_catalog()[hardware].is_gpu else "cpu"
            except UnknownHardwareError:
                pass  # ingest_file names the known hardware
    where = provenance(device)  # git calls outside the transaction, as for executed runs
    data = ingest_file(
        env.ledger(),
        protocol_id,
        file,
        job,
        metrics=metrics,
        texts=texts,
        cost=cost,
        provenance=where,
        seed=seed,
    )

    def human(c: Any) -> None:
        c.print(
            f"ingested {data['items']} items x {len(data['signals'])} signals "
            f"({data['observations']} observations) from {data['file']} as run #{data['run_id']} "
            f"(job {data['job']}"
            + ("" if data["seed"] is None else f", seed {data['seed']}")
            + f") of {data['protocol']} v{data['version']}"
        )
        c.print(f"file sha256 {data['file_sha256']}")
        if data["metrics"] or data["texts"]:
            c.print(f"{data['metrics']} metric rows, {data['texts']} generated texts")
        if data["cost_seq"] is not None:
            c.print(f"cost #{data['cost_seq']}: {format_usd(data['cost_micros'], precise=True)}")
        git = data["provenance"]["git_commit"]
        dirty = " (dirty)" if data["provenance"]["git_dirty"] else ""
        c.print(f"git {git[:12] + dirty if git else '(not a git work tree)'}")
        if data["previously_ingested_as"]:
            runs = ", ".join(f"#{r}" for r in data["previously_ingested_as"])
            c.print(f"note: the same file was ingested before as run(s) {runs}")
        for note in data["notes"]:
            c.print(f"note: {note}")

    emit(data, as_json, human)
