"""``docket audit`` (exit 3 on any integrity finding) and ``docket reproduce`` (exit 1 when a
claimed number is not reproduced within its tolerance)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import CheckFailed, IntegrityViolation, UserError
from .common import Env, emit, json_option, pass_env, table


@click.command("audit")
@click.option(
    "--against",
    "against",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="STH",
    help="A kept signed tree head (`docket log head --out`); the log must extend it. Repeatable.",
)
@click.option(
    "--public-key",
    "public_key",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PEM",
    help="The public key the --against heads were signed with (default: this machine's key).",
)
@json_option
@pass_env
def audit_cmd(env: Env, against: tuple[Path, ...], public_key: Path | None, as_json: bool) -> None:
    """Re-derive every protocol hash, the journal and cost hash chains, every verdict (its
    inputs hash and its outcome) and each run's cost; check that frozen protocols passed their
    sign-check, re-hash ingested files still present, check the triggers' definitions and that
    the log extends every --against head; exit 3 on any finding (notes name what could not be
    checked)."""
    from ..integrity.audit import audit

    heads, key = [], None
    if against:
        from ..integrity.consistency import read_sth_file, trusted_key

        heads = [(str(p), read_sth_file(p)) for p in against]
        key, _ = trusted_key(public_key)
    report = audit(env.ledger(), against=heads, public_key=key)
    data = report.as_dict()

    def human(c: Any) -> None:
        if report.expired_leases:
            runs = ", ".join(str(r) for r in report.expired_leases)
            c.print(
                f"run(s) {runs}: lease expired while running (the runner died); "
                "`docket runs reap` marks them abandoned and books their cost"
            )
        checked = ", ".join(
            f"{n} {k}" for k, n in report.checked.items() if not k.startswith("triggers_")
        )
        for note in report.notes:
            c.print(f"note: {note}")
        for head in report.against:
            state = "consistent" if head["ok"] else head["status"].upper()
            c.print(
                f"kept head {head['source']} (size {head['tree_size']}, {head['timestamp']}): "
                f"{state}"
            )
        if report.clean:
            c.print(f"clean: {checked}, all triggers present and unaltered")
            return
        rows = [(f.table, "" if f.row is None else f.row, f.problem) for f in report.findings]
        c.print(table("integrity findings", ["table", "row", "what differs"], rows))
        c.print(f"checked {checked}")

    emit(data, as_json, human)
    if not report.clean:
        raise IntegrityViolation(f"{len(report.findings)} integrity finding(s)")


@click.command("reproduce")
@click.argument("claim", required=False)
@click.option("--all", "all_claims", is_flag=True, help="Every claim of the frozen protocols.")
@click.option("--protocol", "protocol_id", help="Only claims of this protocol.")
@click.option("--allow-over-budget", is_flag=True, help="Re-run past the budget (needs --reason).")
@click.option("--reason", help="Why the budget may be exceeded (written to the journal).")
@json_option
@pass_env
def reproduce_cmd(
    env: Env,
    claim: str | None,
    all_claims: bool,
    protocol_id: str | None,
    allow_over_budget: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Re-run a claim's job, compare the metric with the claimed number (CLAIM is PROTOCOL:CLAIM
    or a unique claim name), record the attempt; exit 1 outside tolerance."""
    from ..reproduce import reproduce
    from .rerun import executor_rerun

    if (claim is None) == (not all_claims):
        raise UserError("give a CLAIM (PROTOCOL:CLAIM or a unique claim name) or --all, not both")
    if allow_over_budget and not (reason or "").strip():
        raise UserError('--allow-over-budget needs --reason "..." (it is written to the journal)')
    results = reproduce(
        env.ledger(),
        claim,
        protocol_id=protocol_id,
        rerun=executor_rerun(allow_over_budget=allow_over_budget, reason=reason),
    )
    data = [r.as_dict() for r in results]

    def human(c: Any) -> None:
        if not results:
            c.print("no claims to reproduce (no frozen protocol declares claims:)")
            return
        rows = [
            (
                r.ref,
                r.run_id or "",
                repr(r.expected),
                "—" if r.observed is None else f"{r.observed:.6g}",
                repr(r.tolerance),
                "—" if r.difference is None else f"{r.difference:.4g}",
                "REPRODUCED" if r.passed else "NOT REPRODUCED",
                r.detail or "",
            )
            for r in results
        ]
        cols = ["claim", "run", "expected", "observed", "tolerance", "|diff|", "result", "detail"]
        c.print(table("reproduce", cols, rows))

    emit(data, as_json, human)
    failed = [r for r in results if not r.passed]
    if failed:
        raise CheckFailed(
            f"{len(failed)} of {len(results)} claim(s) not reproduced: "
            + ", ".join(r.ref for r in failed)
        )
