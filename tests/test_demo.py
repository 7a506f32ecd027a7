"""The main job end to end: ``docket demo`` in a fresh directory, as ``make demo`` runs it.

Slow (a couple of minutes on 2 cores: it trains both model families) but it is what a newcomer
runs first, so it runs in CI too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


def test_demo_runs_every_step_with_its_expected_exit_code(tmp_path: Path) -> None:
    directory = tmp_path / "demo"  # given relative to the cwd, as `make demo` does
    env = dict(os.environ)
    env.pop("DOCKET_DB", None)
    env.pop("DOCKET_ARTIFACTS", None)
    env["COLUMNS"] = "160"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "docket"), "demo", "--dir", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1200,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "Traceback" not in out
    # the inverted protocol was refused, both studies got a verdict, the audit was clean
    assert "refused to freeze inverted-forgetting" in out
    assert (
        "verdict: " in out and "(primary hypothesis H1)" in out and "(primary hypothesis H3)" in out
    )
    assert "clean:" in out
    # the reader's offline check of the freeze receipt, and the kept head still consistent
    assert (directory / "receipt.json").exists() and (directory / "sth.json").exists()
    assert "VERIFIED" in out and "UNTRUSTED" not in out
    assert "consistent" in out
    assert "GPU $0.78" in out
    for protocol in ("router-entropy-metacog", "poe-self-speculative"):
        page = directory / "report" / protocol / "index.html"
        assert page.exists() and page.stat().st_size > 10_000


def test_demo_directory_is_recreated_only_when_it_is_a_demo_directory(tmp_path: Path) -> None:
    from click import UsageError

    from docketml.ledger.cli.demo_steps import MARKER, prepare_directory

    demo = tmp_path / "demo"
    prepare_directory(demo)
    (demo / "old.txt").write_text("from a previous demo")
    prepare_directory(demo)
    assert (demo / MARKER).exists() and not (demo / "old.txt").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("not docket's")
    with pytest.raises(UsageError, match="not a docket demo directory"):
        prepare_directory(other)
    assert (other / "precious.txt").exists()
