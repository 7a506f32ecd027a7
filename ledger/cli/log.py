"""``docket log``: the ledger's Merkle log (signed tree heads, receipts, consistency) and its
signing key; ``docket verify``: a receipt checked offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import IntegrityViolation
from .common import LEDGER_ID, Env, emit, json_option, out_option, pass_env


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


public_key_option = click.option(
    "--public-key",
    "public_key",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PEM",
    help="The Ed25519 public key you trust (PEM; `docket log key` prints it).",
)


@log_group.command("receipt")
@click.argument("protocol_id")
@click.option("--version", "version", type=LEDGER_ID, help="This frozen version (default: latest).")
@out_option("out", "Write the receipt to PATH instead of printing it.")
@pass_env
def receipt_cmd(env: Env, protocol_id: str, version: int | None, out: Path | None) -> None:
    """Print (or --out) the receipt of PROTOCOL_ID's freeze: the current head signed now, the
    freeze leaf, its inclusion proof and the public key, for `docket verify`. Writes nothing to
    the ledger."""
    from ..integrity.receipt import build_receipt
    from ..integrity.sth import load_private_key

    key = load_private_key()
    with env.ledger().read_session() as session:
        receipt = build_receipt(session, protocol_id, version, key=key)
    text = json.dumps(receipt, indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    sth = receipt["sth"]
    click.echo(
        f"wrote {out}: leaf {receipt['leaf_index']} in a tree of {sth['tree_size']} leaves, "
        f"root {sth['root_hash'][:16]}..., key id {sth['key_id'][:16]}..."
    )


@log_group.command("consistency")
@click.argument("old_sth", type=click.Path(dir_okay=False, path_type=Path), metavar="OLD_STH")
@public_key_option
@json_option
@pass_env
def consistency_cmd(env: Env, old_sth: Path, public_key: Path | None, as_json: bool) -> None:
    """Check that today's log extends the one OLD_STH (a kept `docket log head --out` file)
    signed: the head's signature, then no truncation and a verifying RFC 9162 consistency
    proof; exit 3 naming where the log stopped matching. Writes nothing."""
    from ..integrity.consistency import check_heads, read_sth_file, trusted_key

    sth = read_sth_file(old_sth)
    key, key_from = trusted_key(public_key)
    with env.ledger().read_session() as session:
        (check,) = check_heads(session, [(str(old_sth), sth)], key)
    data = check.as_dict() | {"trusted_key": key_from}

    def human(c: Any) -> None:
        c.print(f"checked with {key_from}")
        if check.ok:
            c.print(
                f"consistent: the log ({check.current_size} leaves, root "
                f"{check.current_root[:16]}...) extends head {old_sth} (size {check.tree_size}, "
                f"{check.timestamp})"
            )
        else:
            c.print(f"[bold red]NOT CONSISTENT[/bold red] ({check.status})")

    emit(data, as_json, human)
    if not check.ok:
        raise IntegrityViolation(str(check.problem))


@click.command("verify")
@click.argument("receipt", type=click.Path(dir_okay=False, path_type=Path), metavar="RECEIPT")
@click.option(
    "--protocol",
    "protocol_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The protocol YAML the receipt is said to prove.",
)
@public_key_option
@json_option
def verify_cmd(receipt: Path, protocol_file: Path, public_key: Path | None, as_json: bool) -> None:
    """Offline: check that RECEIPT (`docket log receipt`) proves this exact protocol FILE was
    frozen in a log whose head the trusted key signed. Opens no ledger; exit 3 naming each
    check that failed."""
    from rich.markup import escape

    from ..integrity.receipt import read_public_key_file, read_receipt_file, verify_receipt

    data = read_receipt_file(receipt)
    key = read_public_key_file(public_key) if public_key is not None else None
    result = verify_receipt(data, protocol_file, key, source=str(receipt))
    out = result.as_dict()

    def human(c: Any) -> None:
        for w in result.warnings:
            c.print(f"[bold red]WARNING[/bold red]: {escape(w)}")
        for check in result.checks:
            mark = "[green]PASS[/green]" if check.ok else "[bold red]FAIL[/bold red]"
            c.print(f"{mark} {check.name:<9} {escape(check.detail)}")
        if result.ok:
            leaf = result.leaf or {}
            how = "VERIFIED" if result.key_source == "given" else "VERIFIED, UNTRUSTED KEY"
            c.print(
                f"{how}: {escape(str(protocol_file))} is {leaf.get('protocol_id')} "
                f"v{leaf.get('version')}, frozen {leaf.get('frozen_at')}, leaf "
                f"{data['leaf_index']} of a log of {result.sth['tree_size']} leaves signed "
                f"{result.sth['timestamp']}"
            )

    emit(out, as_json, human)
    if as_json:
        for w in result.warnings:
            click.echo(f"docket: WARNING: {w}", err=True)
    if not result.ok:
        raise IntegrityViolation(
            f"{receipt}: "
            + "; ".join(f"{c.name} check failed: {c.detail}" for c in result.failures)
        )
