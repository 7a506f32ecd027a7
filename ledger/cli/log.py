"""``docket log``: the ledger's Merkle log (signed tree heads) and its signing key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import Env, emit, json_option, out_option, pass_env


@click.group("log")
def log_group() -> None:
    """The ledger's Merkle transparency log (RFC 9162): signed tree heads."""


@log_group.command("head")
@json_option
@out_option("out", "Also write the signed tree head as JSON to PATH (keep it outside the ledger).")
@pass_env
def head_cmd(env: Env, as_json: bool, out: Path | None) -> None:
    """Read the head of the ledger's Merkle log (every frozen protocol, sign-check, completed
    run, verdict, cost and journal entry is a leaf) and sign it with the Ed25519 key
    (DOCKET_SIGNING_KEY or ~/.config/docket/signing_key.pem). Writes nothing to the ledger."""
    from ..integrity.log import log_head
    from ..integrity.sth import load_private_key, sign_tree_head

    key = load_private_key()
    head = log_head(env.ledger())
    sth = sign_tree_head(head.tree_size, head.root_hash, key)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(sth, indent=2) + "\n", encoding="utf-8")

    def human(c: Any) -> None:
        c.print(f"tree size  {sth['tree_size']}")
        c.print(f"root hash  {sth['root_hash']}")
        c.print(f"timestamp  {sth['timestamp']}")
        c.print(f"key id     {sth['key_id']}")
        c.print(f"signature  {sth['signature']}")
        if out is not None:
            c.print(f"wrote {out}")

    emit(sth, as_json, human)


@log_group.command("key")
@click.option("--create", is_flag=True, help="Create the key (0600) if none exists yet.")
@json_option
def key_cmd(create: bool, as_json: bool) -> None:
    """Print the signing key's path, key id and public key (PEM); --create makes a new key
    (never replacing one)."""
    from ..integrity.sth import (
        create_key,
        key_id,
        load_private_key,
        public_key_pem,
        signing_key_path,
    )

    path = signing_key_path()
    key = create_key(path) if create else load_private_key(path)
    data = {"path": str(path), "key_id": key_id(key), "public_key_pem": public_key_pem(key)}

    def human(c: Any) -> None:
        c.print(f"{'created' if create else 'key'}  {path}")
        c.print(f"key id   {data['key_id']}")
        c.print(data["public_key_pem"].rstrip())

    emit(data, as_json, human)
