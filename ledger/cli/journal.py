"""``docket journal add|list|show|export|import``: the append-only research journal.

Entries are never edited or deleted; a mistake is fixed by a new entry with ``--corrects SEQ``
(both entries then show the link in ``journal list``). Bad input exits 2 naming the flag, or the
file and line.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from docketml.journal.flags import entry_from_flags, entry_from_markdown
from docketml.journal.markdown import JournalParseError, render_entry

from ..errors import UserError
from ..store import journal as store
from ..store.protocols import latest as latest_version
from .common import LEDGER_ID, Env, emit, json_option, out_option, pass_env, table


@click.group("journal")
def journal_group() -> None:
    """The append-only, hash-chained research journal (obs / inf with credence / failure
    modes with priors / next action)."""


def _read_text(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None


@journal_group.command("add")
@click.option("--protocol", "protocol_id", help="Protocol the entry belongs to.")
@click.option("--file", "file", help="An entry in the journal's markdown format ('-': stdin).")
@click.option("--title", help="One-line title.")
@click.option("--context", help="What was run, where, with what.")
@click.option("--hypothesis", help="What you expected.")
@click.option("--obs", multiple=True, help="An observation (repeatable).")
@click.option(
    "--inf", multiple=True, help='An inference with its credence: "TEXT:0.6" (repeatable).'
)
@click.option(
    "--failure", multiple=True, help='A failure mode with its prior: "TEXT:0.3" (repeatable).'
)
@click.option("--next", "next_action", help="The next action.")
@click.option("--notes", help="Free text.")
@click.option("--tag", help="A short reference for the entry, e.g. j (shown as '## DATE (j)').")
@click.option(
    "--run", "runs", multiple=True, type=LEDGER_ID, help="A run id the entry is about (repeatable)."
)
@click.option(
    "--date", type=click.DateTime(formats=["%Y-%m-%d"]), help="Entry date (default today)."
)
@click.option("--corrects", help="SEQ (or tag) of the earlier entry this one corrects.")
@json_option
@pass_env
def journal_add(
    env: Env,
    protocol_id: str | None,
    file: str | None,
    title: str | None,
    context: str | None,
    hypothesis: str | None,
    obs: tuple[str, ...],
    inf: tuple[str, ...],
    failure: tuple[str, ...],
    next_action: str | None,
    notes: str | None,
    tag: str | None,
    runs: tuple[int, ...],
    date: dt.datetime | None,
    corrects: str | None,
    as_json: bool,
) -> None:
    """Append an entry, from --file or from flags (never edits an existing one)."""
    corrects_seq = (
        LEDGER_ID.convert(corrects, None, click.get_current_context())
        if corrects is not None and corrects.isdigit()
        else None
    )
    corrects_ref = corrects if corrects is not None and corrects_seq is None else None
    if file is not None:
        given = {
            "--title": title,
            "--context": context,
            "--hypothesis": hypothesis,
            "--obs": obs,
            "--inf": inf,
            "--failure": failure,
            "--next": next_action,
            "--notes": notes,
            "--tag": tag,
            "--run": runs,
            "--date": date,
        }
        clash = [flag for flag, value in given.items() if value]
        if clash:
            raise UserError(f"--file cannot be combined with {', '.join(clash)}")
        markdown = _read_text(file)
    elif title is None:
        raise UserError("give --file ENTRY.md, or at least --title (and --obs, --inf, ...)")
    with env.ledger().session() as session:
        pk = latest_version(session, protocol_id).id if protocol_id else None
        if corrects_seq is not None:
            corrects_ref = store.reference_for(session, corrects_seq)
        if file is not None:
            try:
                entry = entry_from_markdown(markdown)
            except JournalParseError as exc:
                raise UserError(f"{file}:{exc.line}: {exc.message}") from None
            if corrects_ref is not None and entry.corrects is None:
                entry = entry.model_validate({**entry.model_dump(), "corrects": corrects_ref})
            elif (
                corrects_ref is not None and corrects_seq is None and entry.corrects != corrects_ref
            ):
                raise UserError(
                    f"--corrects {corrects_ref} but {file} is a CORRECTION to ({entry.corrects})"
                )
        else:
            assert title is not None
            try:
                entry = entry_from_flags(
                    title=title,
                    context=context,
                    hypothesis=hypothesis,
                    obs=obs,
                    inf=inf,
                    failure=failure,
                    next_action=next_action,
                    corrects=corrects_ref,
                    tag=tag,
                    runs=runs,
                    notes=notes,
                    date=date.date() if date else None,
                )
            except ValueError as exc:
                raise UserError(str(exc)) from None
        row = store.append_entry(session, entry, protocol_pk=pk, corrects_seq=corrects_seq)
        data = store.row_summary(row)

    def human(c: Any) -> None:
        what = f" (corrects #{data['corrects_seq']})" if data["corrects_seq"] else ""
        c.print(f"journal entry #{data['seq']}{what}: {data['title']}  hash {data['hash'][:12]}")

    emit(data, as_json, human)


def _protocol_pk(session: Any, protocol_id: str | None) -> int | None:
    return latest_version(session, protocol_id).id if protocol_id else None


@journal_group.command("list")
@click.option("--protocol", "protocol_id", help="Only this protocol's entries.")
@json_option
@pass_env
def journal_list(env: Env, protocol_id: str | None, as_json: bool) -> None:
    """List entries, oldest first; corrections show on both entries."""
    with env.ledger().read_session() as session:
        pk = _protocol_pk(session, protocol_id)
        index = store.corrections_index(session)
        rows = store.list_entries(session, pk)
        data = [store.row_summary(r, index.get(r.seq, ())) for r in rows]

    def human(c: Any) -> None:
        out = [
            (
                d["seq"],
                d["date"],
                d["tag"] or "",
                d["title"] or f"CORRECTION to ({d['corrects']})",
                d["protocol"] or "",
                "" if d["corrects"] is None else f"#{d['corrects_seq'] or '?'} ({d['corrects']})",
                ", ".join(f"#{s}" for s in d["corrected_by"]),
                f"{len(d['entry']['observations'])}/{len(d['entry']['inferences'])}"
                f"/{len(d['entry']['failure_modes'])}",
            )
            for d in data
        ]
        cols = ["seq", "date", "tag", "title", "protocol", "corrects", "corrected by", "obs/inf/fm"]
        c.print(table("journal", cols, out))
        if not data:
            c.print("no journal entries")

    emit(data, as_json, human)


@journal_group.command("show")
@click.argument("seq", type=LEDGER_ID)
@json_option
@pass_env
def journal_show(env: Env, seq: int, as_json: bool) -> None:
    """Show one entry in full (markdown)."""
    with env.ledger().read_session() as session:
        row = store.entry_by_seq(session, seq)
        if row is None:
            raise UserError(f"no journal entry with seq {seq}")
        data = store.row_summary(row, store.corrections_index(session).get(seq, ()))
        text = render_entry(store.entry_of(row))

    def human(c: Any) -> None:
        click.echo(f"# entry #{seq}  hash {data['hash']}")
        if data["corrects_seq"]:
            click.echo(f"# corrects #{data['corrects_seq']}")
        if data["corrected_by"]:
            click.echo("# corrected by " + ", ".join(f"#{s}" for s in data["corrected_by"]))
        click.echo(text, nl=False)

    emit(data, as_json, human)


@journal_group.command("export")
@click.option("--protocol", "protocol_id", help="Only this protocol's entries.")
@out_option("output", "Write here instead of stdout.", short="-o", aliases=("--output",))
@pass_env
def journal_export(env: Env, protocol_id: str | None, output: Path | None) -> None:
    """Write the journal as markdown (newest first, the seed journal's style) to stdout."""
    with env.ledger().read_session() as session:
        text = store.export_markdown(session, _protocol_pk(session, protocol_id))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


@journal_group.command("import")
@click.argument("file")
@click.option("--protocol", "protocol_id", help="Attach entries that name no protocol to this one.")
@json_option
@pass_env
def journal_import(env: Env, file: str, protocol_id: str | None, as_json: bool) -> None:
    """Append the entries of a markdown journal, oldest first; entries already in the ledger
    (same canonical content) are skipped, so importing twice adds nothing."""
    text = _read_text(file)
    with env.ledger().session() as session:
        pk = _protocol_pk(session, protocol_id)
        try:
            result = store.import_markdown(session, text, protocol_pk=pk)
        except JournalParseError as exc:
            raise UserError(f"{file}:{exc.line}: {exc.message}") from None
    data = result.as_dict()

    def human(c: Any) -> None:
        c.print(
            f"{file}: {data['parsed']} entries, imported {data['imported']}, skipped "
            f"{data['skipped']} already in the ledger"
        )
        for d in data["dangling_corrections"]:
            c.print(f"note: {d}, which is not in the ledger (kept as written)")

    emit(data, as_json, human)
