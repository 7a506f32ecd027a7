"""Where runs write files, and the content-addressed checkpoint store.

Root: ``DOCKET_ARTIFACTS``, else ``<dir of the SQLite ledger>/artifacts``, else
``<cwd>/.docket/artifacts`` (PostgreSQL ledgers: set DOCKET_ARTIFACTS to storage every worker
sees). Layout: ``runs/<run id>/`` is a run's scratch directory; ``sha256/<hex>.pt`` holds every
checkpoint by the sha256 of its bytes (hard-linked when possible, else copied).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy.engine import make_url

from ..context import sha256_file


def artifacts_root(db_url: str | None) -> Path:
    env = os.environ.get("DOCKET_ARTIFACTS")
    if env:
        return Path(env)
    if db_url:
        url = make_url(db_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            return Path(url.database).expanduser().resolve().parent / "artifacts"
    return Path.cwd() / ".docket" / "artifacts"


def run_dir(root: Path, run_id: int) -> Path:
    path = root / "runs" / str(run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_checkpoint(root: Path, path: Path) -> tuple[str, Path]:
    """Put ``path`` into the content-addressed store; return (sha256, stored path)."""
    digest = sha256_file(path)
    target = root / "sha256" / f"{digest}{path.suffix or '.bin'}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    return digest, target
