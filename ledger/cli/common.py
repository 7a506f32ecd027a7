"""Shared CLI plumbing: the error-to-exit-code mapping, the ledger handle, JSON/table output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError, OperationalError

from docketml.protocols.errors import ProtocolErrors

from ..errors import CheckFailed, IntegrityViolation, UserError
from ..store.db import Ledger, LedgerError, describe_url, open_ledger, resolve_url


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
        except (OperationalError, DBAPIError) as exc:
            env = ctx.find_object(Env)
            where = describe_url(resolve_url(env.db_url if env else None))
            orig = getattr(exc, "orig", exc)
            first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
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
