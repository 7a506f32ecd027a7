"""Engine, sessions and schema revision checks for the ledger.

URL: ``DOCKET_DB`` or ``sqlite:///<cwd>/.docket/ledger.db``. SQLite runs in WAL mode with foreign
keys on, a busy timeout of :func:`lock_timeout_seconds` (``DOCKET_LOCK_TIMEOUT_S``, default 60 s),
and every writing transaction opened with ``BEGIN IMMEDIATE`` so that two writers queue on the
lock instead of failing with "database is locked" when a reader upgrades to a writer; read-only
transactions (:meth:`Ledger.read_session`, the revision check) open a deferred ``BEGIN`` and never
wait for a writer (WAL). A writer that waited the whole timeout fails with "database is locked",
which :func:`is_lock_timeout` recognises (the CLI: exit 75). PostgreSQL goes through psycopg 3
with pre-ping and the same timeout as its ``lock_timeout``, so a writer waiting on a row or an
advisory lock fails the same way (55P03, exit 75).

The schema comes only from Alembic migrations (``upgrade``); :func:`open_ledger` refuses a
database that is not at the head revision and names the command that fixes it.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

import docketml.migrations as migrations

from ..errors import DocketError, LedgerBusy, UserError


class LedgerError(DocketError):
    """A user-facing ledger problem (bad URL, unreachable server, wrong revision): exit 2."""


def default_url() -> str:
    return f"sqlite:///{Path.cwd() / '.docket' / 'ledger.db'}"


def resolve_url(url: str | None = None) -> str:
    """The ledger URL: explicit argument, else ``DOCKET_DB``, else the SQLite default."""
    return url or os.environ.get("DOCKET_DB") or default_url()


def describe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


READ_ONLY_OPTION = "docket_read_only"
DEFAULT_LOCK_TIMEOUT_S = 60.0
MIN_LOCK_TIMEOUT_S, MAX_LOCK_TIMEOUT_S = 0.0, 86_400.0


def lock_timeout_seconds() -> float:
    """How long a writer waits for a lock before failing (SQLite: "database is locked";
    PostgreSQL: ``lock_timeout``, 55P03): ``DOCKET_LOCK_TIMEOUT_S`` if set, else
    :data:`DEFAULT_LOCK_TIMEOUT_S`. Read when an engine is made. Non-numbers, NaN, infinities
    and values outside ``[MIN_LOCK_TIMEOUT_S, MAX_LOCK_TIMEOUT_S]`` are refused
    (:class:`UserError`, exit 2)."""
    return env_seconds(
        "DOCKET_LOCK_TIMEOUT_S", DEFAULT_LOCK_TIMEOUT_S, MIN_LOCK_TIMEOUT_S, MAX_LOCK_TIMEOUT_S
    )


def env_seconds(name: str, default: float, low: float, high: float) -> float:
    """A duration setting from the environment: ``$name`` as a float in ``[low, high]``, else
    ``default`` when unset or blank. Non-numbers, NaN, infinities and values outside the range
    raise :class:`UserError` (exit 2) naming the variable and the range."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high):  # False for NaN
        raise UserError(
            f"{name}={raw!r}: expected a number of seconds between {low:g} and {high:g}"
        )
    return value


def is_lock_timeout(exc: BaseException) -> bool:
    """True when ``exc`` is a database error saying the write lock was not obtained in time:
    SQLite's "database is locked" / "database table is locked" (``SQLITE_BUSY``/``LOCKED``),
    PostgreSQL's ``lock_not_available`` (55P03)."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "55P03":
        return True
    return isinstance(orig, sqlite3.OperationalError) and "is locked" in str(orig)


def lock_timeout_error(url: str) -> LedgerBusy:
    """The :class:`LedgerBusy` (one line) for a lock timeout of the ledger at ``url``."""
    return LedgerBusy(
        f"the ledger at {describe_url(url)} is locked by another writer: waited "
        f"{_timeout_text()} for the write lock (DOCKET_LOCK_TIMEOUT_S); nothing was written, "
        "try again"
    )


def _timeout_text() -> str:
    try:
        return f"{lock_timeout_seconds():g} s"
    except UserError:  # pragma: no cover - an invalid value fails before any lock is taken
        return "the lock timeout"


SORTER_THREADS = min(4, os.cpu_count() or 1)


def _configure_sqlite(engine: Engine, timeout_s: float) -> None:
    busy_ms = int(round(timeout_s * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # REPLACE conflict resolution deletes rows without firing DELETE triggers unless this is on:
        # without it `INSERT OR REPLACE` could overwrite a frozen protocol or a verdict.
        cursor.execute("PRAGMA recursive_triggers=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # helper threads for SQLite's sorter: a verdict's ORDER BY over 10^7 observations
        # merges its sorted runs in parallel (about 30 % of the read, benchmarks/verdict_scale.py)
        cursor.execute(f"PRAGMA threads={SORTER_THREADS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _configure_postgresql(engine: Engine, timeout_s: float) -> None:
    """Every connection waits at most ``timeout_s`` for a lock (row, table or advisory:
    PostgreSQL's ``lock_timeout``), then fails with ``lock_not_available`` (55P03) — the same
    contract as SQLite's busy timeout; 0 would mean "wait forever" to PostgreSQL, so it is sent as
    1 ms."""
    timeout_ms = max(1, int(round(timeout_s * 1000)))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {timeout_ms}")
        dbapi_conn.commit()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite ledger URL (None: not SQLite, or in memory).

    ``sqlite:///path`` and the URI form ``sqlite:///file:path?mode=ro&uri=true`` both name a
    file; in the URI form the ``file:`` prefix is not part of the path."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if str(parsed.query.get("uri", "")).lower() in ("true", "1") and database.startswith("file:"):
        database = database.removeprefix("file:")
        if database.startswith("//"):  # file://host/path: only an empty host is local
            database = database[2:].partition("/")[2]
            database = "/" + database
        if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
            return None
    return Path(database).expanduser()


def _make_parent(path: Path) -> None:
    """Create the directory a new SQLite ledger goes in, or raise :class:`LedgerError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise LedgerError(
            f"cannot create the ledger directory {path.parent}: {reason} "
            "(a part of the path is a file, or it is not writable)"
        ) from None
    if not path.parent.is_dir():
        raise LedgerError(f"cannot create the ledger directory {path.parent}: it is a file")


def make_engine(url: str | None = None, *, create: bool = False) -> Engine:
    """Create an engine for ``url`` (see module docstring); raise :class:`LedgerError` on a bad URL.

    A SQLite file that does not exist is refused unless ``create`` (``docket init``): read
    commands never create files or directories."""
    url = resolve_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise LedgerError(
            f"DOCKET_DB / --db is not a database URL: {url!r}; expected e.g. "
            "sqlite:///path/ledger.db or postgresql+psycopg://user@host:5432/db"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"unsupported database {backend!r} in {describe_url(url)}; use sqlite or postgresql"
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if backend == "sqlite":
            path = sqlite_path(url)
            if path is not None:
                if create:
                    _make_parent(path)
                elif not path.exists():
                    raise LedgerError(f"no docket ledger at {path}: run `docket init` first")
                elif not path.is_file():
                    raise LedgerError(f"{path} is not a file: expected a SQLite ledger file")
            timeout_s = lock_timeout_seconds()
            engine = create_engine(
                parsed, connect_args={"timeout": timeout_s, "check_same_thread": False}
            )
            _configure_sqlite(engine, timeout_s)
        else:
            engine = create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
            _configure_postgresql(engine, lock_timeout_seconds())
    except (NoSuchModuleError, ArgumentError) as exc:
        raise LedgerError(f"cannot use {describe_url(url)}: {exc}") from None
    return engine


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head() or ""


def all_revisions() -> list[str]:
    """Every revision from the first to head, in upgrade order."""
    script = ScriptDirectory.from_config(_alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def current_revision(engine: Engine) -> str | None:
    try:  # a deferred (read-only) transaction: a revision check never waits for a writer
        with engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise LedgerError(
            f"cannot connect to the ledger at {describe_url(str(engine.url))}: {_first_line(exc)}"
        ) from None


#: SQLite error names and PostgreSQL SQLSTATEs that mean the environment refused a valid
#: operation (read-only file, mount, replica or transaction; disk full), with what to say.
_ENVIRONMENT_ERRORS = {
    "SQLITE_READONLY": "the ledger is read-only",
    "SQLITE_FULL": "the disk is full",
    "25006": "the ledger is read-only",  # read_only_sql_transaction (replica, read-only role)
    "53100": "the disk is full",  # disk_full
}


def environment_problem(exc: BaseException) -> str | None:
    """What the environment refused, when the database error ``exc`` is not the input's fault
    (the ledger is read-only, the disk is full); None for any other error. The one
    classification the CLI uses to pick exit code 4 over 2."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlite_errorname", None) or getattr(orig, "sqlstate", None)
    if code is not None:
        code = str(code)
        for name, what in _ENVIRONMENT_ERRORS.items():
            if code == name or code.startswith(name + "_"):  # SQLITE_READONLY_DBMOVED etc.
                return what
    return None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def _unversioned_tables(engine: Engine) -> bool:
    """True when the database has tables but no ``alembic_version`` table."""
    try:
        names = set(inspect(engine).get_table_names())
    except OperationalError:
        return False
    return bool(names) and "alembic_version" not in names


def _unversioned(engine: Engine) -> LedgerError:
    return LedgerError(
        f"the database at {describe_url(str(engine.url))} has tables but no alembic_version "
        "table, so its schema revision is unknown: it is not a docket ledger docket can open "
        "or migrate (restore a backup, or point DOCKET_DB / --db at a ledger)"
    )


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` on ``engine``'s database.

    Refused with :class:`LedgerError` (nothing changed): a ``revision`` that is neither
    ``head`` nor a known revision; a ledger at a revision unknown to this docket; a target
    older than the ledger's revision (migrations never run downwards); a database with tables
    but no ``alembic_version`` table. Upgrading to the current revision is a no-op. An upgrade
    across revision 0006 also stores the columns of the runs already finished
    (:func:`_backfill_columns`), in the same transaction."""
    known = all_revisions()
    if revision != "head" and revision not in known:
        raise LedgerError(
            f"--revision {revision!r} is not a revision of this docket; expected head or one "
            f"of {', '.join(known)}"
        )
    current = current_revision(engine)
    where = describe_url(str(engine.url))
    if current is None and _unversioned_tables(engine):
        raise _unversioned(engine)
    if current is not None and current not in known:
        raise LedgerError(
            f"the ledger at {where} is at revision {current!r}, unknown to this docket "
            f"(head {head_revision()}): upgrade docket"
        )
    target = head_revision() if revision == "head" else revision
    if current is not None and known.index(target) < known.index(current):
        raise LedgerError(
            f"the ledger at {where} is at revision {current}, newer than --revision {target}: "
            "`docket db upgrade` never downgrades (restore a backup taken at that revision)"
        )
    cfg = _alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            if current is not None and _crosses(current, target, COLUMNS_REVISION):
                _backfill_columns(conn)
    except OperationalError as exc:
        if is_lock_timeout(exc):
            raise lock_timeout_error(str(engine.url)) from None
        raise LedgerError(f"cannot upgrade the ledger at {where}: {_first_line(exc)}") from None
    except CommandError as exc:
        raise LedgerError(f"cannot upgrade the ledger at {where}: {_first_line(exc)}") from None


COLUMNS_REVISION = "0006"  # run_columns: finished runs' observations stored as columns


def _crosses(current: str, target: str, revision: str) -> bool:
    known = all_revisions()
    return known.index(current) < known.index(revision) <= known.index(target)


def _backfill_columns(conn: Connection) -> None:
    """Runs finished before :data:`COLUMNS_REVISION` get their stored columns, in the upgrade's
    transaction (live code, so not in the migration: ``ledger.store.run_columns.backfill``)."""
    from .run_columns import backfill

    with Session(bind=conn) as session:
        backfill(session)
        session.flush()


def check_revision(engine: Engine) -> None:
    """Refuse a ledger that is missing or not at the head revision."""
    current = current_revision(engine)
    head = head_revision()
    if current is None:
        if _unversioned_tables(engine):
            raise _unversioned(engine)
        raise LedgerError(
            f"no docket ledger at {describe_url(str(engine.url))}: run `docket init` first"
        )
    if current != head:
        known = all_revisions()
        if current in known:
            raise LedgerError(
                f"the ledger at {describe_url(str(engine.url))} is at revision {current}, this "
                f"docket needs {head}: run `docket db upgrade` (back it up first)"
            )
        raise LedgerError(
            f"the ledger at {describe_url(str(engine.url))} is at revision {current}, unknown to "
            f"this docket (head {head}): upgrade docket"
        )


@dataclass
class Ledger:
    """An open, revision-checked ledger."""

    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on any error."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for a query: one read-only transaction, always rolled back.

        The database enforces it, so a query that tried to write fails instead of writing:
        PostgreSQL runs ``SET TRANSACTION READ ONLY``; SQLite opens a deferred ``BEGIN`` (no
        write lock, so a read works beside a writer) with ``PRAGMA query_only=ON``. Works on a
        read-only replica or role."""
        sqlite = self.dialect == "sqlite"
        with self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY_OPTION: True})
            trans = conn.begin()
            conn.exec_driver_sql("PRAGMA query_only=ON" if sqlite else "SET TRANSACTION READ ONLY")
            try:
                with Session(bind=conn, expire_on_commit=False) as session:
                    yield session
            finally:
                trans.rollback()
                if sqlite:  # the connection goes back to the pool: writers need it writable
                    conn.exec_driver_sql("PRAGMA query_only=OFF")
                    conn.rollback()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        return describe_url(str(self.engine.url))


def open_ledger(url: str | None = None, *, check: bool = True) -> Ledger:
    """Open the ledger at ``url`` (default: :func:`resolve_url`) and check its revision."""
    engine = make_engine(url)
    if check:
        check_revision(engine)
    return Ledger(engine, sessionmaker(engine, expire_on_commit=False))


def init_ledger(url: str | None = None) -> Ledger:
    """Create or upgrade the ledger to head and open it."""
    engine = make_engine(url, create=True)
    current_revision(engine)  # connection check with a clear message
    upgrade(engine)
    return Ledger(engine, sessionmaker(engine, expire_on_commit=False))
