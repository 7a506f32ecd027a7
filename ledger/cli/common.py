"""Shared CLI plumbing: the error-to-exit-code mapping, the ledger handle, JSON/table output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError, OperationalError

from docketml.protocols.errors import ProtocolErrors

from ..errors import CheckFailed, EnvironmentRefused, IntegrityViolation, UserError
from ..store.db import (
    Ledger,
    LedgerError,
    describe_url,
    environment_problem,
    open_ledger,
    resolve_url,
)


def _fail(messages: Sequence[str], code: int) -> None:
    for message in messages:
        click.echo(message, err=True)
    raise click.exceptions.Exit(code)


class DocketGroup(click.Group):
    """Maps docket's exceptions to one clear message and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ProtocolErrors as exc:
            _fail([str(e) for e in exc.errors], 2)
        except (UserError, LedgerError) as exc:
            _fail([f"docket: {exc}"], 2)
        except CheckFailed as exc:
            _fail([f"docket: {exc}"] if str(exc) else [], 1)
        except IntegrityViolation as exc:
            _fail([f"docket: {exc}"] if str(exc) else [], 3)
        except EnvironmentRefused as exc:
            _fail([f"docket: {exc}"], EnvironmentRefused.exit_code)
        except (OperationalError, DBAPIError) as exc:
            env = ctx.find_object(Env)
            where = describe_url(resolve_url(env.db_url if env else None))
            orig = getattr(exc, "orig", exc)
            first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
            what = environment_problem(exc)
            if what is not None:
                _fail([f"docket: {what}: cannot write to {where} ({first})"], 4)
            _fail([f"docket: database error at {where}: {first}"], 2)


class Env:
    """Per-invocation state: the ledger URL and a lazily opened ledger."""

    def __init__(self, db_url: str | None) -> None:
        self.db_url = db_url
        self._ledger: Ledger | None = None

    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = open_ledger(self.db_url)
        return self._ledger


pass_env = click.make_pass_decorator(Env)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def out_option(
    dest: str,
    help: str,
    *,
    directory: bool = False,
    required: bool = False,
    short: str | None = None,
    aliases: Sequence[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--out PATH``: the one name of every option that says where output is written.

    The command receives the path as ``dest`` (a :class:`~pathlib.Path`, or None). Each name in
    ``aliases`` (an option's name before the convention, e.g. ``--plot``) still works but is hidden
    from ``--help``; giving ``--out`` and an alias with different paths is a usage error (exit 2).
    """
    kind = click.Path(file_okay=not directory, dir_okay=directory, path_type=Path)
    hidden = [(alias, f"_out_alias_{i}") for i, alias in enumerate(aliases)]

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(dest)
            for alias, name in hidden:
                given = kwargs.pop(name)
                if given is not None and value is not None and given != value:
                    raise click.UsageError(f"give --out or {alias}, not both")
                value = value if value is not None else given
            if required and value is None:
                raise click.MissingParameter(
                    ctx=click.get_current_context(), param_hint="'--out'", param_type="option"
                )
            return f(*args, **{dest: value}, **kwargs)

        for alias, name in reversed(hidden):
            command = click.option(alias, name, type=kind, hidden=True)(command)
        names = [short, "--out"] if short else ["--out"]
        return click.option(*names, dest, type=kind, metavar="PATH", help=help)(command)

    return decorate


def console() -> Console:
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str, ensure_ascii=False))


def emit(data: Any, as_json: bool, human: Callable[[Console], None]) -> None:
    """Print ``data`` as JSON, or call ``human`` with a rich console."""
    if as_json:
        print_json(data)
    else:
        human(console())


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    t = Table(title=title, show_lines=False, title_justify="left")
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t
