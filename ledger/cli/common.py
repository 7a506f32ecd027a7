"""Shared CLI plumbing: the error-to-exit-code mapping, the ledger handle, JSON/table output."""

from __future__ import annotations

import errno
import functools
import json
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from docketml.protocols.errors import ProtocolErrors

from ..errors import (
    CheckFailed,
    DocketError,
    EnvironmentRefused,
    IntegrityViolation,
    LedgerBusy,
    UserError,
)
from ..store.limits import MAX_ID

if TYPE_CHECKING:
    from ..store.db import Ledger

# The store (SQLAlchemy, Alembic: about a second to import) is imported when a command opens a
# ledger, not here: ``docket --help``, ``docket verify`` and ``docket protocol validate`` never
# need it.


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
        except UserError as exc:
            _fail([f"docket: {exc}"], 2)
        except CheckFailed as exc:
            _fail([f"docket: {exc}"] if str(exc) else [], 1)
        except IntegrityViolation as exc:
            _fail([f"docket: {exc}"] if str(exc) else [], 3)
        except LedgerBusy as exc:
            _fail([f"docket: {exc}"], LedgerBusy.exit_code)
        except EnvironmentRefused as exc:
            _fail([f"docket: {exc}"], EnvironmentRefused.exit_code)
        except DocketError as exc:  # the store's LedgerError (bad URL, unreachable, revision)
            if not _is_ledger_error(exc):
                raise
            _fail([f"docket: {exc}"], 2)
        except Exception as exc:
            if not is_database_error(exc):
                raise
            from ..store.db import (
                describe_url,
                environment_problem,
                is_lock_timeout,
                lock_timeout_error,
                resolve_url,
            )

            env = ctx.find_object(Env)
            url = resolve_url(env.db_url if env else None)
            if is_lock_timeout(exc):
                _fail([f"docket: {lock_timeout_error(url)}"], LedgerBusy.exit_code)
            where = describe_url(url)
            orig = getattr(exc, "orig", exc)
            first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
            what = environment_problem(exc)
            if what is not None:
                _fail([f"docket: {what}: cannot write to {where} ({first})"], 4)
            _fail([f"docket: database error at {where}: {first}"], 2)


def _is_ledger_error(exc: BaseException) -> bool:
    """True for the store's :class:`~ledger.store.db.LedgerError` (exit 2). If the store was
    never imported, nothing can have raised one."""
    db = sys.modules.get("docketml.ledger.store.db")
    return db is not None and isinstance(exc, db.LedgerError)


def is_database_error(exc: BaseException) -> bool:
    """True for SQLAlchemy's ``OperationalError`` / ``DBAPIError`` (the driver's own failure,
    mapped to exit 2, 4 or 75 below). Without SQLAlchemy imported there is none."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(exc, (sa_exc.OperationalError, sa_exc.DBAPIError))


class Env:
    """Per-invocation state: the ledger URL and a lazily opened ledger."""

    def __init__(self, db_url: str | None) -> None:
        self.db_url = db_url
        self._ledger: Ledger | None = None

    def ledger(self) -> Ledger:
        if self._ledger is None:
            from ..store.db import open_ledger

            self._ledger = open_ledger(self.db_url)
        return self._ledger


pass_env = click.make_pass_decorator(Env)


class LedgerIdType(click.ParamType):
    """A row id, seq or version given on the command line: an integer in ``1..MAX_ID``
    (:data:`ledger.store.limits.MAX_ID`, what both backends can store). Anything else is a
    usage error (exit 2) naming the bound, before the database is asked."""

    name = "integer"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            if not text.isascii() or not text.isdigit() or len(text) > 20:
                self.fail(f"{value!r} is not an id: expected an integer 1..{MAX_ID}", param, ctx)
            number = int(text)
        if not 1 <= number <= MAX_ID:
            self.fail(f"{value} is out of range: ids are integers 1..{MAX_ID}", param, ctx)
        return number


#: The one click type of every id / seq / version argument and option.
LEDGER_ID = LedgerIdType()

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


#: errnos of a write the environment refused (not the path's fault): exit 4, not 2.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


def _creatable(path: Path, option: str, shown: Path) -> None:
    """Refuse (:class:`UserError`) a directory ``path`` that neither exists nor can be made."""
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{option} {shown}: cannot create it, {ancestor} is not a directory")
    if ancestor != path and not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{option} {shown}: cannot create it, {ancestor} is not writable")


def check_output_path(path: Path, *, directory: bool, option: str = "--out") -> None:
    """Refuse an output path that cannot be written, before any work or side effect.

    Missing directories (the output directory, or a file's parents) are created by the writer,
    so they must be creatable: the nearest existing ancestor a writable directory. A file output
    must be a regular file, a character device (``/dev/null``, ``/dev/stdout``) or not exist
    yet; a FIFO, socket, block device or directory is refused. A directory output that exists
    must be a directory. Raises :class:`UserError` (exit 2) naming the option, the path and what
    was expected; creates nothing."""
    try:
        mode: int | None = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # missing, or under a file: see _creatable
        mode = None
    except OSError as exc:
        raise UserError(f"{option} {path}: {exc.strerror}") from None
    if directory:
        if mode is None:
            _creatable(path.absolute(), option, path)
        elif not stat.S_ISDIR(mode):
            raise UserError(f"{option} {path}: exists and is not a directory")
        return
    if mode is None:
        _creatable(path.absolute().parent, option, path)
    elif stat.S_ISDIR(mode):
        raise UserError(f"{option} {path}: is a directory; expected a file path")
    elif not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        raise UserError(f"{option} {path}: is not a regular file (a FIFO, socket or device)")
    elif not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: is not writable")


def _output_failure(exc: OSError, path: Path, option: str) -> DocketError | None:
    """The one-line error for an ``OSError`` raised while writing under ``path`` (None: the
    error is about another file, so it is not the output's)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in _ENVIRONMENT_ERRNOS:
        return EnvironmentRefused(f"{option} {path}: cannot write: {reason}")
    if exc.filename is not None:
        target = Path(os.fsdecode(exc.filename)).absolute()
        root = path.absolute()
        if target == root or root in target.parents:
            return UserError(f"{option} {path}: cannot write {exc.filename}: {reason}")
    return None


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
    The path is checked with :func:`check_output_path` before the command runs, and an
    ``OSError`` while writing under it becomes one line: exit 4 for a full disk or read-only
    file system, 2 otherwise.
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
            if value is None:
                return f(*args, **{dest: value}, **kwargs)
            option = f"{short}/--out" if short else "--out"
            check_output_path(value, directory=directory, option=option)
            try:
                return f(*args, **{dest: value}, **kwargs)
            except OSError as exc:
                failure = _output_failure(exc, value, option)
                if failure is None:
                    raise
                raise failure from None

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
        t.add_row(*["" if v is None else escape(str(v)) for v in row])
    return t
