"""The one-line summary and the ``Example:`` block of every ``docket`` command.

Contract of :func:`apply_help`: for each command of the tree (the root included), looked up by its
path (``""`` for the root, ``"protocol freeze"`` for a sub-command) in :data:`HELP`:

* ``short_help`` (shown in the parent's command list) is set to the summary, which is at most
  :data:`SUMMARY_MAX` characters so ``docket --help`` never truncates it at 80 columns;
* an ``Example:`` block (click's ``\\b`` marker keeps the lines as written) is appended to the
  command's help unless its docstring already has one.

``tests/test_cli_help.py`` walks the tree and fails when a command has no example, a summary is
too long, or a line of any group's ``--help`` ends in ``...``. A new command adds an entry here
(or writes ``Example:`` in its own docstring and passes ``short_help=``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import click

SUMMARY_MAX = 45

# path -> (summary, example command lines)
HELP: dict[str, tuple[str, tuple[str, ...]]] = {
    "": (
        "Pre-register, freeze, run, get verdicts.",
        (
            "docket init",
            "docket protocol register study.yaml && docket protocol freeze my-study",
            "docket run my-study && docket verdict my-study",
        ),
    ),
    "audit": (
        "Re-derive every hash; exit 3 on a finding.",
        (
            "docket audit",
            "docket audit --json",
            "docket audit --against sth-2026-06-01.json --against sth-2026-07-01.json",
        ),
    ),
    "log": (
        "Merkle log: heads, receipts, consistency.",
        ("docket log key --create", "docket log head --out sth-2026-06-01.json"),
    ),
    "log receipt": (
        "A protocol freeze's receipt (for verify).",
        (
            "docket log receipt router-entropy-metacog > receipt.json",
            "docket log receipt router-entropy-metacog --version 2 --out receipt-v2.json",
        ),
    ),
    "log consistency": (
        "Prove the log extends a kept head (STH).",
        (
            "docket log consistency sth-2026-06-01.json",
            "docket log consistency sth-2026-06-01.json --public-key signing_key.pub.pem --json",
        ),
    ),
    "verify": (
        "Check a receipt offline, no ledger needed.",
        (
            "docket verify receipt.json --protocol router_entropy_metacog.yaml "
            "--public-key signing_key.pub.pem",
            "docket verify receipt.json --protocol study.yaml --public-key key.pem --json",
        ),
    ),
    "log head": (
        "Sign the log's current head (STH).",
        ("docket log head", "docket log head --json --out sth.json"),
    ),
    "log key": (
        "Show or create the signing key.",
        ("docket log key --create", "docket log key --json"),
    ),
    "cost": ("Record spend outside docket run.", ("docket cost add --hardware a40 --usd 0.18",)),
    "cost add": (
        "Record a manual cost entry.",
        (
            "docket cost add --hardware a40 --seconds 3600 --label v8a",
            'docket cost add --hardware rtx4090 --usd 0.18 --note "spot instance"',
            "docket cost add --run 12 --hardware a40 --seconds 5400",
        ),
    ),
    "cost import-receipts": (
        "Import the receipts' bill (idempotent).",
        ("docket cost import-receipts --protocol router-entropy-metacog",),
    ),
    "costs": (
        "The bill: costs, totals, GPU vs CPU.",
        ("docket costs", "docket costs --by protocol --json"),
    ),
    "db": ("Ledger schema management.", ("docket db current", "docket db upgrade")),
    "db current": ("Show the ledger's schema revision.", ("docket db current --json",)),
    "db roles": (
        "Create least-privilege PostgreSQL roles.",
        ("docket --db postgresql+psycopg://admin@db/lab db roles --create --prefix lab",),
    ),
    "db upgrade": (
        "Migrate the ledger's schema.",
        ("cp .docket/ledger.db ledger.backup.db && docket db upgrade",),
    ),
    "demo": ("Run the whole promise end to end.", ("docket demo --dir /tmp/docket-demo",)),
    "hardware": ("The hardware catalog and its rates.", ("docket hardware list",)),
    "hardware list": ("List hardware with hourly rates.", ("docket hardware list --json",)),
    "ingest": (
        "Record results produced elsewhere as a run.",
        (
            "docket ingest my-study results.jsonl",
            "docket ingest my-study scores.csv --job probe_base --json",
            "docket ingest my-study res.jsonl --metrics m.jsonl --texts t.jsonl \\",
            "    --hardware a40 --seconds 5400",
            "docket ingest my-study seed1.jsonl --job probe_v7 --seed 1",
        ),
    ),
    "init": ("Create or upgrade the ledger.", ("docket init", "docket --db sqlite:///l.db init")),
    "journal": (
        "The append-only research journal.",
        ('docket journal add --title "v8a probe" --obs "AUROC 0.79"', "docket journal list"),
    ),
    "journal add": (
        "Append a journal entry.",
        (
            'docket journal add --protocol my-study --title "probe v8a" \\',
            '    --obs "AUROC 0.79 on held-out" --inf "entropy tracks errors:0.6" --run 12',
            "docket journal add --file entry.md",
        ),
    ),
    "journal export": (
        "Write the journal as markdown.",
        ("docket journal export --out journal.md", "docket journal export --protocol my-study"),
    ),
    "journal import": (
        "Append the entries of a markdown journal.",
        ("docket journal import journal.md --protocol my-study",),
    ),
    "journal list": ("List journal entries, oldest first.", ("docket journal list --json",)),
    "journal show": ("Show one journal entry in full.", ("docket journal show 3",)),
    "protocol": (
        "Validate, register, sign-check, freeze.",
        ("docket protocol validate study.yaml", "docket protocol freeze my-study"),
    ),
    "protocol amend": (
        "Register FILE as a new version.",
        ('docket protocol amend my-study study.yaml --reason "n per class 30 -> 60"',),
    ),
    "protocol diff": (
        "What changed between two versions.",
        ("docket protocol diff my-study 1 2", "docket protocol diff my-study 1 2 --json"),
    ),
    "protocol freeze": (
        "Sign-check, then freeze the latest.",
        ("docket protocol freeze my-study",),
    ),
    "protocol list": ("List registered protocols.", ("docket protocol list --json",)),
    "protocol register": (
        "Register FILE as a new protocol.",
        ("docket protocol register study.yaml",),
    ),
    "protocol schema": (
        "Print the protocol JSON Schema.",
        ("docket protocol schema > protocol.schema.json",),
    ),
    "protocol show": (
        "Show a protocol, its sha256 and chain.",
        ("docket protocol show my-study", "docket protocol show my-study --version 1 --yaml"),
    ),
    "protocol signcheck": (
        "Exercise every metric and rule.",
        ("docket protocol signcheck my-study",),
    ),
    "protocol simulate": (
        "Power curve of the protocol's rules.",
        ("docket protocol simulate my-study --runs 500 --n 60 --out power.png",),
    ),
    "protocol validate": (
        "Check FILE against the protocol schema.",
        ("docket protocol validate study.yaml",),
    ),
    "report": (
        "Write a static HTML report.",
        ("docket report my-study --out report/", "docket report my-study --out r/ --embed"),
    ),
    "reproduce": (
        "Re-run a claim's job and compare.",
        ("docket reproduce my-study:headline-auroc", "docket reproduce --all --json"),
    ),
    "run": (
        "Run a frozen protocol's jobs.",
        (
            "docket run my-study",
            "docket run my-study --job probe_base --force",
            "docket run my-study --executor ray --address auto",
        ),
    ),
    "runs": ("Inspect recorded runs.", ("docket runs list --status failed",)),
    "runs list": (
        "List recorded runs.",
        (
            "docket runs list my-study --job probe_v7",
            "docket runs list --status abandoned --json",
        ),
    ),
    "runs reap": ("Mark runs whose lease expired abandoned.", ("docket runs reap --json",)),
    "runs show": ("One run: config, metrics, signals, texts.", ("docket runs show 12 --texts",)),
    "runs compare": ("Runs side by side.", ("docket runs compare 12 15 --json",)),
    "export": (
        "Tables as CSV or Parquet for pandas/R.",
        ("docket export my-study --format parquet --out export/",),
    ),
    "trajectory": (
        "Recorded metrics against checkpoint step.",
        (
            "docket trajectory my-study --metric bpb --out bpb.png",
            "docket trajectory my-study --job train_v2 --json",
        ),
    ),
    "verdict": (
        "Compute and record a protocol's verdict.",
        ("docket verdict my-study", "docket verdict my-study --history --json"),
    ),
}


def example_block(lines: tuple[str, ...]) -> str:
    """``Example:`` followed by ``lines`` indented, kept verbatim by click (the ``\\b`` marker)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


def walk_commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from walk_commands(command.commands[name], (*path, name))


def apply_help(root: click.Command, path: tuple[str, ...] = (), *, recurse: bool = True) -> None:
    """Set the summary of ``root`` (at ``path`` in the tree) and of every command under it
    (only ``root`` itself with ``recurse=False``) and append its example (module docstring)."""
    tree = walk_commands(root, path) if recurse else iter([(path, root)])
    for path, command in tree:
        entry = HELP.get(" ".join(path))
        if entry is None:
            continue
        summary, lines = entry
        command.short_help = summary
        help_text = inspect.cleandoc(command.help or "")
        if "Example:" not in help_text:
            command.help = f"{help_text.rstrip()}\n\n{example_block(lines)}"
