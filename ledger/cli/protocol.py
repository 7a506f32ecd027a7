"""``docket protocol ...``: validate, register, sign-check, simulate, freeze, amend, show, list,
schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from docketml.extras import require_extra
from docketml.protocols.loader import load_protocol_file
from docketml.protocols.schema import Protocol

from ..errors import CheckFailed
from ..store import protocols as store
from .common import LEDGER_ID, Env, emit, json_option, out_option, pass_env, print_json, table


def load_runnable(file: Path) -> Any:
    """Load FILE checking its job kinds and hardware names against the runners' (exit 2 with the
    line if unknown), so a protocol that cannot run is refused before it is frozen."""
    from docketml.runners.registry import job_kinds

    from ..billing.hardware import load_catalog

    return load_protocol_file(file, job_kinds=set(job_kinds()), hardware=set(load_catalog()))


def signal_registry() -> dict[str, str]:
    """What the runners say a high value of each known signal means (for the sign-check)."""
    from docketml.runners.signals import SIGNALS

    return {name: info.higher_means for name, info in SIGNALS.items()}


def run_sign_check(protocol: Protocol) -> dict[str, Any]:
    """The sign-check with the runners' signal registry and job pre-flight (checkpoints).

    A job param the runners know to be bad (``runners.jobs.preflight.param_checks``: an unknown
    stage, an empty beta list, ...) is a :class:`UserError` (exit 2) naming the job and field,
    raised before any check runs or is stored."""
    from docketml.runners.jobs.preflight import model_checks, param_checks

    from ..errors import UserError
    from ..verdict.signcheck import sign_check

    problems = [p for job in protocol.jobs for p in param_checks(job, protocol.jobs)]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return sign_check(protocol, registry=signal_registry(), job_checks=model_checks)


def print_sign_check(report: dict[str, Any], console: Any) -> None:
    rows = [
        (
            "PASS" if c["passed"] else "FAIL",
            c["check"],
            c["target"],
            c.get("expected", ""),
            c.get("found", ""),
            c.get("cause") or "",
        )
        for c in report["checks"]
    ]
    console.print(
        table("sign-check", ["", "check", "target", "expected", "found", "likely cause"], rows)
    )
    for c in report["checks"]:
        if not c["passed"]:
            console.print(
                f"FAIL {c['check']} {c['target']}: expected {c.get('expected', '')}, "
                f"found {c.get('found', '')}; likely cause: {c.get('cause') or 'unknown'}",
                markup=False,
            )
    for note in report.get("notes", []):
        console.print(f"note: {note}")
    console.print("sign-check " + ("passed" if report["passed"] else "FAILED"))


@click.group("protocol")
def protocol_group() -> None:
    """Pre-registered protocols: validate, register, sign-check, freeze, amend, inspect."""


@protocol_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def validate_cmd(file: Path, as_json: bool) -> None:
    """Check FILE against the protocol schema (exit 2 with FILE:LINE errors)."""
    loaded = load_runnable(file)
    data = {"file": str(file), "id": loaded.protocol.id, "sha256": loaded.sha256, "valid": True}
    emit(
        data,
        as_json,
        lambda c: c.print(f"{file}: valid protocol {loaded.protocol.id} (sha256 {loaded.sha256})"),
    )


@protocol_group.command("register")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_env
def register_cmd(env: Env, file: Path, as_json: bool) -> None:
    """Register FILE as a new protocol (same content again is a no-op)."""
    loaded = load_runnable(file)
    with env.ledger().session() as session:
        outcome = store.register(session, loaded, str(file))
        data = store.describe(session, outcome.row) | {"created": outcome.created}
    verb = "registered" if data["created"] else "already registered"
    emit(
        data,
        as_json,
        lambda c: c.print(f"{verb} {data['id']} v{data['version']} sha256 {data['sha256']}"),
    )


@protocol_group.command("signcheck")
@click.argument("protocol_id")
@json_option
@pass_env
def signcheck_cmd(env: Env, protocol_id: str, as_json: bool) -> None:
    """Exercise every metric, polarity and rule on synthetic data (exit 1 if any check fails)."""
    with env.ledger().session() as session:
        row = store.latest(session, protocol_id)
        report = run_sign_check(store.parse_row(row))
        if row.status != "frozen":
            store.store_sign_check(session, row, report)
    emit(report, as_json, lambda c: print_sign_check(report, c))
    if not report["passed"]:
        raise CheckFailed("")


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(
            f"expected sizes separated by commas, e.g. 15,30,60; got {text!r}", param_hint="--n"
        ) from None
    if not sizes or any(x < 2 or x > 100_000 for x in sizes):
        raise click.BadParameter("every size must be between 2 and 100000", param_hint="--n")
    return sorted(set(sizes))


@protocol_group.command("simulate")
@click.argument("protocol_id")
@click.option("--runs", "n_sims", default=200, show_default=True, help="Simulated studies per gap.")
@click.option(
    "--n",
    "sizes_text",
    default="30",
    show_default=True,
    help="Items per class per group in each simulated study; several sizes separated by "
    "commas (15,30,60,120) report power by size and the smallest size reaching 80% power.",
)
@click.option(
    "--resamples",
    type=click.IntRange(1, 1_000_000),
    default=None,
    help="Cap every rule's bootstrap resamples (default: each rule's own count, as frozen).",
)
@click.option(
    "--pilot",
    "pilot_ref",
    metavar="run:ID",
    default=None,
    help="Draw studies by resampling a run's items per group and class instead of binormal "
    "signals.",
)
@click.option(
    "--effect",
    type=float,
    default=None,
    help="With several --n: the true gap to plan for (default: the rule's declared margin).",
)
@out_option("plot", "Write a PNG power curve.", aliases=("--plot",))
@json_option
@pass_env
def simulate_cmd(
    env: Env,
    protocol_id: str,
    n_sims: int,
    sizes_text: str,
    resamples: int | None,
    pilot_ref: str | None,
    effect: float | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Power curve: probability of each verdict against the true AUROC gap, and the PROVEN rate
    when there is no effect; with several --n, power by sample size.

    \b
    Example:
      docket protocol simulate router-entropy-metacog
      docket protocol simulate router-entropy-metacog --n 15,30,60,120 --json
      docket protocol simulate router-entropy-metacog --pilot run:12
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..errors import UserError
    from ..verdict.parallel import worker_count
    from ..verdict.simulate import PilotError, plot_simulation, simulate_protocol
    from ..verdicts import engine_version, load_pilot

    try:
        worker_count(1)  # a malformed DOCKET_WORKERS is exit 2 before any work
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if plot is not None:
        require_extra("plots")  # before minutes of simulation, not after
    if n_sims < 1:
        raise click.BadParameter("must be at least 1", param_hint="--runs")
    sizes = _sizes(sizes_text)
    with env.ledger().read_session() as session:  # a query: nothing here writes
        row = store.latest(session, protocol_id)
        protocol = store.parse_row(row)
        engine = engine_version(session, row)  # the engine a verdict of this version runs with
        pilot = load_pilot(session, pilot_ref) if pilot_ref is not None else None
    err = Console(stderr=True)
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} points"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as bar:
        task = bar.add_task("simulate", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = simulate_protocol(
                protocol,
                n_sims=n_sims,
                sizes=sizes,
                resamples=resamples,
                pilot=pilot,
                effect=effect,
                progress=tick,
                engine=engine,
            )
        except PilotError as exc:
            raise UserError(f"--pilot {pilot_ref}: {exc}") from None
    if plot is not None:
        plot_simulation(result, plot)
        result["plot"] = str(plot)

    def human(c: Any) -> None:
        for rule in result["rules"]:
            verdicts = rule["verdicts"]
            for block in rule.get("by_size", [{"n": sizes[0], "points": rule["points"]}]):
                rows = [
                    ["pilot" if p["gap"] is None else f"{p['gap']:+.3f}"]
                    + [f"{p['rates'].get(v, 0):.2f}" for v in verdicts]
                    for p in block["points"]
                ]
                c.print(
                    table(
                        f"rule {rule['rule']} ({rule['kind']}), n = {block['n']} per class, "
                        f"resamples {rule['resamples']}: verdict rates by "
                        f"{rule.get('gap_label', 'true gap')}",
                        ["gap"] + verdicts,
                        rows,
                    )
                )
            blocks = rule.get("by_size", [])
            if rule["null_proven_rate"] is not None and not blocks:
                c.print(f"PROVEN rate under the null: {rule['null_proven_rate']:.3f}")
            elif blocks and rule["null_proven_rate"] is not None:
                nulls = ", ".join(f"n={b['n']}: {b['null_proven_rate']:.3f}" for b in blocks)
                c.print(f"PROVEN rate under the null: {nulls}")
            if "planning" in rule:
                pl = rule["planning"]
                need = ", ".join(
                    ("pilot" if r["gap"] is None else f"{r['gap']:+.3f}")
                    + f": {r['n'] if r['n'] is not None else '-'}"
                    for r in rule["required_n"]
                )
                c.print(f"smallest n reaching {pl['power_target']:.0%} PROVEN, by gap: {need}")
                if pl["gap"] is not None:
                    got = (
                        f"n = {pl['n']} per class"
                        if pl["n"] is not None
                        else "not reached by any size tried"
                    )
                    c.print(f"at gap {pl['gap']:+.3f} ({pl['basis']}): {got}")
        for skip in result.get("skipped", []):
            c.print(f"rule {skip['rule']} not simulated: {skip['reason']}")
        for note in result.get("notes", []):
            c.print(f"note: {note}")
        if plot is not None:
            c.print(f"plot written to {plot}")

    emit(result, as_json, human)


@protocol_group.command("freeze")
@click.argument("protocol_id")
@json_option
@pass_env
def freeze_cmd(env: Env, protocol_id: str, as_json: bool) -> None:
    """Sign-check, then freeze the latest version (refused unless the sign-check passes)."""
    with env.ledger().session() as session:
        row, report, newly = store.freeze(session, protocol_id, run_sign_check)
        data = store.describe(session, row) | {"newly_frozen": newly, "sign_check": report}
    if not report["passed"]:
        emit(data, as_json, lambda c: print_sign_check(report, c))
        raise CheckFailed(f"refused to freeze {protocol_id}: the sign-check failed (see above)")

    def human(c: Any) -> None:
        print_sign_check(report, c)
        state = "frozen" if newly else "already frozen"
        c.print(f"{state}: {data['id']} v{data['version']} sha256 {data['sha256']}")

    emit(data, as_json, human)


@protocol_group.command("amend")
@click.argument("protocol_id")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--reason", required=True, help="Why the protocol changes (stored and shown in every verdict)."
)
@json_option
@pass_env
def amend_cmd(env: Env, protocol_id: str, file: Path, reason: str, as_json: bool) -> None:
    """Register FILE as a new version of PROTOCOL_ID, linked to the current one."""
    loaded = load_runnable(file)
    with env.ledger().session() as session:
        row = store.amend(session, protocol_id, loaded, reason, str(file))
        data = store.describe(session, row)
    emit(
        data,
        as_json,
        lambda c: c.print(
            f"amended {protocol_id}: v{data['parent_version']} -> v{data['version']} "
            f"(sha256 {data['sha256']}); freeze it to use it"
        ),
    )


@protocol_group.command("show")
@click.argument("protocol_id")
@click.option("--version", "version", type=LEDGER_ID, help="A specific version (default: latest).")
@click.option("--yaml", "show_yaml", is_flag=True, help="Print the stored YAML text.")
@json_option
@pass_env
def show_cmd(
    env: Env, protocol_id: str, version: int | None, show_yaml: bool, as_json: bool
) -> None:
    """Show a protocol, its sha256, its sign-check and its amendment chain."""
    with env.ledger().read_session() as session:
        versions = store.chain(session, protocol_id)
        if not versions:
            store.latest(session, protocol_id)  # raises a UserError naming known ids
        if version is not None:
            matches = [v for v in versions if v.version == version]
            if not matches:
                raise click.BadParameter(
                    f"{protocol_id} has versions {', '.join(str(v.version) for v in versions)}",
                    param_hint="--version",
                )
            row = matches[0]
        else:
            row = versions[-1]
        data = store.describe(session, row)
        data["chain"] = [store.describe(session, v) for v in versions]
        data["protocol"] = json.loads(row.canonical_json)
        yaml_text = row.yaml_text
    if show_yaml and not as_json:
        click.echo(yaml_text, nl=False)
        return

    def human(c: Any) -> None:
        from ..verdict.signcheck import describe_null

        c.print(f"[bold]{data['id']}[/bold] v{data['version']} - {data['title']}")
        c.print(
            f"sha256 {data['sha256']}  status {data['status']}  "
            f"frozen_at {data['frozen_at'] or '-'}"
        )
        sc = data["sign_check"]
        c.print(
            "sign-check: "
            + ("never run" if sc is None else ("passed" if sc["passed"] else "FAILED"))
            + ("" if sc is None else f"  bootstrap engine {sc['engine']}")
        )
        null_line = None if sc is None else describe_null(sc.get("null_proven"))
        if null_line:
            c.print(null_line, markup=False)
        proto = data["protocol"]
        c.print(
            table(
                "hypotheses",
                ["id", "rule", "statement"],
                [(h["id"], h["rule"], h["statement"]) for h in proto["hypotheses"]],
            )
        )
        rows = [
            (
                v["version"],
                v["status"],
                v["sha256"][:16],
                v["registered_at"],
                v["amendment_reason"] or "",
            )
            for v in data["chain"]
        ]
        c.print(
            table(
                "versions (amendment chain)",
                ["version", "status", "sha256", "registered", "reason"],
                rows,
            )
        )
        if proto.get("jobs"):
            c.print(
                table(
                    "jobs",
                    ["name", "kind", "after", "hardware", "params"],
                    [
                        (
                            j["name"],
                            j["kind"],
                            ", ".join(j["after"]),
                            j["hardware"],
                            json.dumps(j["params"]),
                        )
                        for j in proto["jobs"]
                    ],
                )
            )

    emit(data, as_json, human)


@protocol_group.command("diff")
@click.argument("protocol_id")
@click.argument("version_a", type=int)
@click.argument("version_b", type=int)
@json_option
@pass_env
def diff_cmd(env: Env, protocol_id: str, version_a: int, version_b: int, as_json: bool) -> None:
    """Field-by-field differences between two versions of a protocol (canonical JSON, dotted
    paths: what an amendment changed). Read-only."""
    with env.ledger().read_session() as session:
        data = store.diff_versions(session, protocol_id, version_a, version_b)

    def show(value: Any) -> str:
        return "" if value is None else json.dumps(value, sort_keys=True)

    def human(c: Any) -> None:
        title = f"{protocol_id} v{version_a} -> v{version_b}"
        if data["amendment_reason"]:
            c.print(f"v{version_b} amendment reason: {data['amendment_reason']}")
        if not data["changes"]:
            c.print(f"{title}: no differences (same canonical JSON)")
            return
        rows = [(d["path"], d["change"], show(d["old"]), show(d["new"])) for d in data["changes"]]
        c.print(table(title, ["path", "change", f"v{version_a}", f"v{version_b}"], rows))

    emit(data, as_json, human)


@protocol_group.command("list")
@json_option
@pass_env
def list_cmd(env: Env, as_json: bool) -> None:
    """List registered protocols with their latest and frozen versions."""
    with env.ledger().read_session() as session:
        data = store.list_protocols(session)

    def human(c: Any) -> None:
        rows = [
            (
                p["id"],
                p["latest_version"],
                p["latest_status"],
                p["frozen_version"] or "-",
                (p["frozen_sha256"] or "")[:16],
                p["title"],
            )
            for p in data
        ]
        c.print(
            table("protocols", ["id", "latest", "status", "frozen", "frozen sha256", "title"], rows)
        )

    emit(data, as_json, human)


@protocol_group.command("schema")
def schema_cmd() -> None:
    """Print the protocol JSON Schema (for yaml-language-server and editors)."""
    schema = Protocol.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "docket protocol"
    print_json(schema)
