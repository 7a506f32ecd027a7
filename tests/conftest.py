"""Shared fixtures: ledgers on SQLite (temp dir) and on a real PostgreSQL server.

PostgreSQL tests run when ``DOCKET_TEST_POSTGRES`` is a URL, and always under ``CI=true`` (where
the URL defaults to the local server). Each test gets its own schema, dropped afterwards, so tests
can run in parallel against one database. Outside CI, without the variable, they skip and say why;
under CI a missing server is a failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from docketml.ledger.store.db import Ledger, init_ledger

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOCKET_SHARED", REPO.parent / "shared"))
LIBRARY = REPO / "protocols" / "library"


def postgres_base_url() -> str | None:
    url = os.environ.get("DOCKET_TEST_POSTGRES")
    if url:
        return url
    return DEFAULT_PG if CI else None


def require_postgres() -> str:
    url = postgres_base_url()
    if url is None:
        pytest.skip(
            "PostgreSQL tests need DOCKET_TEST_POSTGRES=<url> (they always run under CI=true)"
        )
    return url


@contextmanager
def fresh_pg_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema on the test PostgreSQL server; the
    schema is dropped afterwards."""
    base = require_postgres()
    schema = "dk_" + uuid.uuid4().hex[:12]
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema on the test PostgreSQL server."""
    with fresh_pg_schema_url() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty (un-migrated) ledger URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """A migrated ledger on each backend."""
    led = init_ledger(ledger_url)
    yield led
    led.engine.dispose()


@pytest.fixture
def sqlite_ledger(sqlite_url: str) -> Iterator[Ledger]:
    led = init_ledger(sqlite_url)
    yield led
    led.engine.dispose()


@pytest.fixture(autouse=True, scope="session")
def _private_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``docket init`` creates a signing key under the config dir: the tests use their own,
    never the user's ~/.config (subprocesses inherit it)."""
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "DOCKET_SIGNING_KEY")}
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    os.environ.pop("DOCKET_SIGNING_KEY", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class DocketCli:
    """Runs ``docket`` in-process against one ledger URL; returns click's Result."""

    def __init__(self, url: str, cwd: Path) -> None:
        self.url = url
        self.cwd = cwd
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None):  # noqa: A002
        from docketml.ledger.cli.main import cli

        old = Path.cwd()
        os.chdir(self.cwd)
        try:
            return self.runner.invoke(
                cli, ["--db", self.url, *args], input=input, catch_exceptions=False
            )
        finally:
            os.chdir(old)


@pytest.fixture
def docket(ledger_url: str, tmp_path: Path) -> DocketCli:
    """The CLI bound to a fresh ledger on each backend (``docket init`` already run)."""
    cli = DocketCli(ledger_url, tmp_path)
    result = cli("init")
    assert result.exit_code == 0, result.output
    return cli


@pytest.fixture
def docket_sqlite(sqlite_url: str, tmp_path: Path) -> DocketCli:
    cli = DocketCli(sqlite_url, tmp_path)
    result = cli("init")
    assert result.exit_code == 0, result.output
    return cli


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch single-threaded for a module's tests, restored afterwards: tiny models gain nothing
    from intra-op threads, and on a shared 2-core machine 2 threads ran many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
