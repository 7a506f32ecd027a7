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

from docketml.ledger.errors import UserError

from ..context import sha256_file


def artifacts_root(db_url: str | None) -> Path:
    """The artifacts root for the ledger at ``db_url`` (see module docstring); a path only,
    nothing is checked or created (:func:`ensure_artifacts_root` does that)."""
    env = os.environ.get("DOCKET_ARTIFACTS")
    if env:
        return Path(env)
    if db_url:
        url = make_url(db_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            return Path(url.database).expanduser().resolve().parent / "artifacts"
    return Path.cwd() / ".docket" / "artifacts"


def ensure_artifacts_root(db_url: str | None) -> Path:
    """The artifacts root, created if missing and checked to be a writable directory.

    Called before any run is recorded, so a root that is a file, cannot be created or cannot be
    written is refused with :class:`UserError` (exit 2) naming it, instead of orphaning a run."""
    root = artifacts_root(db_url)
    source = "DOCKET_ARTIFACTS" if os.environ.get("DOCKET_ARTIFACTS") else "artifacts directory"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{source} {root} is not a directory; expected a directory") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"{source} {root}: cannot create the directory: {reason}") from None
    if not root.is_dir():
        raise UserError(f"{source} {root} is not a directory; expected a directory")
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"{source} {root} is not writable; expected a writable directory")
    return root


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
