"""``docket demo``: the whole promise end to end, in a fresh ledger of its own.

Steps (each is a real ``docket`` command, run in-process against the demo ledger):
register both shipped protocols and the inverted example; show the sign-check refusing the
inverted example; freeze both protocols; run every job of the routed study and of the PoE study
with progress bars; print both verdicts; import the receipts' bill and print the bill; write a
journal entry; run the audit; keep a signed tree head, make a receipt of the routed study's
freeze and verify it as a reader would (offline), check the log against the kept head; write the
HTML report of both protocols.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.rule import Rule

from docketml.protocols import LIBRARY

from ..integrity.sth import signing_key_path

MARKER = ".docket-demo"


@dataclass(frozen=True)
class Step:
    title: str
    argv: Sequence[str]
    expect: int = 0  # the exit code this step must give


def demo_steps(journal_file: Path) -> list[Step]:
    routed = str(LIBRARY / "router_entropy_metacog.yaml")
    poe = str(LIBRARY / "poe_self_speculative.yaml")
    inverted = str(LIBRARY / "examples" / "inverted_forgetting.yaml")
    key = signing_key_path()  # `docket init` (the first step) creates it if there is none
    public_key = key.with_name(key.stem + ".pub.pem")
    return [
        Step("Create the demo ledger", ["init"]),
        Step("Register the paper's pre-registration", ["protocol", "register", routed]),
        Step("Register the PoE self-speculative protocol", ["protocol", "register", poe]),
        Step(
            "Register a protocol whose metric rewards forgetting",
            ["protocol", "register", inverted],
        ),
        Step(
            "The sign-check refuses to freeze it (exit 1 is the point)",
            ["protocol", "freeze", "inverted-forgetting"],
            expect=1,
        ),
        Step(
            "Sign-check and freeze the routed study",
            ["protocol", "freeze", "router-entropy-metacog"],
        ),
        Step("Sign-check and freeze the PoE study", ["protocol", "freeze", "poe-self-speculative"]),
        Step(
            "Run every job of the routed study (train, finetune, splice, probe)",
            ["run", "router-entropy-metacog"],
        ),
        Step("Verdict of the routed study", ["verdict", "router-entropy-metacog"]),
        Step(
            "Run every job of the PoE study (train, probes, speculative decoding)",
            ["run", "poe-self-speculative"],
        ),
        Step("Verdict of the PoE study", ["verdict", "poe-self-speculative"]),
        Step("PoE metrics per checkpoint", ["trajectory", "poe-self-speculative"]),
        Step(
            "Import the receipts' bill (the paper's GPU spend)",
            ["cost", "import-receipts", "--protocol", "router-entropy-metacog"],
        ),
        Step("The bill", ["costs", "--by", "hardware"]),
        Step(
            "Write a journal entry",
            ["journal", "add", "--protocol", "router-entropy-metacog", "--file", str(journal_file)],
        ),
        Step("Audit every hash, chain, trigger and log leaf", ["audit"]),
        Step(
            "Keep a signed tree head outside the ledger (commit it, put it in the paper)",
            ["log", "head", "--out", "sth.json"],
        ),
        Step(
            "A receipt of the routed study's freeze, for readers",
            ["log", "receipt", "router-entropy-metacog", "--out", "receipt.json"],
        ),
        Step(
            "A reader checks it offline: no ledger, only the YAML, the receipt and the public key",
            ["verify", "receipt.json", "--protocol", routed, "--public-key", str(public_key)],
        ),
        Step("Today's log still extends the kept head", ["log", "consistency", "sth.json"]),
        Step(
            "HTML report of the routed study",
            ["report", "router-entropy-metacog", "--out", "report/router-entropy-metacog"],
        ),
        Step(
            "HTML report of the PoE study",
            ["report", "poe-self-speculative", "--out", "report/poe-self-speculative"],
        ),
    ]


JOURNAL_ENTRY = """## {date} (demo) — miniature replication of the router-entropy study

**Context:** `docket demo` on a 2-core CPU: tiny routed LM, the paper's pre-registered rule.

### Observations
- [obs] The verdict table above is the pre-registered rule applied to this machine's probe run.

### Inferences
- [inf] A tiny model trained for a minute is not the paper's 10.2M model; the verdict says
  what this miniature shows, no more. {{reason: "scale differs by orders of magnitude",
  credence: 0.9}}

### Failure modes considered
- **Likely:** the probe set is too easy or too hard for a model this small. Prior 0.5.
  Check: read the coherence metric and the generated texts in the report.

### Next action
Run the same frozen protocol with `model: tilelli-10m` on a GPU (amend it: the change is recorded).
"""


def prepare_directory(directory: Path) -> None:
    """Empty ``directory`` if it is a previous demo's (it has the marker file); refuse otherwise."""
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise click.UsageError(
                f"{directory} exists and is not a docket demo directory; choose --dir"
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("created by docket demo; safe to delete\n")


def run_demo(directory: Path) -> int:
    """Run every step; return 0 if each gave its expected exit code."""
    from ..store.models import utcnow
    from .main import cli

    console = Console(highlight=False)
    directory = directory.resolve()  # the steps run with the demo directory as cwd
    prepare_directory(directory)
    journal_file = directory / "entry.md"
    journal_file.write_text(JOURNAL_ENTRY.format(date=utcnow().date().isoformat()))
    db_url = f"sqlite:///{(directory / 'ledger.db').resolve()}"
    old_cwd = Path.cwd()
    os.chdir(directory)
    started = time.perf_counter()
    failures: list[str] = []
    try:
        for i, step in enumerate(demo_steps(journal_file), 1):
            console.print(Rule(f"[bold]{i}. {step.title}[/bold]"))
            console.print(f"$ docket {' '.join(step.argv)}", style="dim")
            try:
                # without standalone mode click returns a command's exit code instead of exiting
                returned = cli.main(
                    args=["--db", db_url, *step.argv], prog_name="docket", standalone_mode=False
                )
                code = returned if isinstance(returned, int) else 0
            except click.exceptions.Exit as exc:
                code = exc.exit_code
            except click.ClickException as exc:
                exc.show()
                code = exc.exit_code
            if code != step.expect:
                failures.append(f"step {i} ({step.title}) exited {code}, expected {step.expect}")
                console.print(f"[red]unexpected exit code {code}[/red]")
    finally:
        os.chdir(old_cwd)
    elapsed = time.perf_counter() - started
    console.print(Rule("[bold]done[/bold]"))
    console.print(f"demo ledger: {directory / 'ledger.db'}")
    console.print(f"report:      {directory / 'report' / 'router-entropy-metacog' / 'index.html'}")
    console.print(f"             {directory / 'report' / 'poe-self-speculative' / 'index.html'}")
    console.print(f"wall time:   {elapsed:.0f} s")
    for failure in failures:
        console.print(f"[red]{failure}[/red]")
    return 1 if failures else 0
