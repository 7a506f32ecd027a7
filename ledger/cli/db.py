"""``docket init`` and ``docket db upgrade|current``."""

from __future__ import annotations

from typing import Any

import click

from ..store.db import current_revision, head_revision, init_ledger, make_engine, upgrade
from .common import Env, emit, json_option, pass_env


@click.command("init")
@click.option(
    "--no-key",
    is_flag=True,
    help="Do not create the signing key for tree heads (docs/transparency.md).",
)
@json_option
@pass_env
def init_cmd(env: Env, no_key: bool, as_json: bool) -> None:
    """Create the ledger (or upgrade it to the current schema).

    Also creates the Ed25519 key that signs the log's tree heads, if there is none
    ($DOCKET_SIGNING_KEY, else ~/.config/docket/signing_key.pem, mode 0600), and prints its
    public key; an existing key is kept.
    """
    from ..integrity.sth import ensure_signing_key  # cryptography only when a key is made

    ledger = init_ledger(env.db_url)
    data: dict[str, object] = {"ledger": ledger.url, "revision": head_revision()}
    if not no_key:
        data["signing_key"] = ensure_signing_key()

    def human(c: Any) -> None:
        c.print(f"ledger ready at {data['ledger']} (schema {data['revision']})")
        key = data.get("signing_key")
        if isinstance(key, dict):
            state = "created" if key["created"] else "kept"
            c.print(f"signing key {state}: {key['path']} (key id {key['key_id'][:16]}...)")
            c.print(f"public key (give it to readers): {key['public_key_path']}")

    emit(data, as_json, human)


@click.group("db")
def db_group() -> None:
    """Ledger schema management."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
@json_option
@pass_env
def db_upgrade(env: Env, revision: str, as_json: bool) -> None:
    """Migrate the ledger's schema (back it up first)."""
    engine = make_engine(env.db_url, create=True)
    before = current_revision(engine)
    upgrade(engine, revision)
    after = current_revision(engine)
    data = {"before": before, "after": after}
    emit(data, as_json, lambda c: c.print(f"ledger schema {before or '(empty)'} -> {after}"))


@db_group.command("current")
@json_option
@pass_env
def db_current(env: Env, as_json: bool) -> None:
    """Show the ledger's schema revision and the one this docket needs."""
    engine = make_engine(env.db_url)
    data = {"current": current_revision(engine), "head": head_revision()}
    emit(data, as_json, lambda c: c.print(f"current {data['current']}, head {data['head']}"))


@db_group.command("roles")
@click.option(
    "--create", is_flag=True, required=True, help="Create or refresh the three roles (required)."
)
@click.option("--prefix", default="docket", show_default=True, help="Role name prefix.")
@json_option
@pass_env
def db_roles(env: Env, create: bool, prefix: str, as_json: bool) -> None:
    """Create least-privilege PostgreSQL roles.

    An owner (NOLOGIN) owns the tables and trigger functions; a writer can select, insert and
    update but cannot disable, drop or replace a trigger; a reader can only select. See
    docs/roles.md.
    """
    from ..store.roles import create_roles

    data = create_roles(make_engine(env.db_url), prefix)
    emit(
        data,
        as_json,
        lambda c: c.print(
            f"schema {data['schema']}: {data['tables']} tables and {data['sequences']} sequences "
            f"owned by {data['owner']} (NOLOGIN); writer {data['writer']} (select, insert, "
            f"update); reader {data['reader']} (select)"
        ),
    )
