"""Where a run really ran: the user's code version and the software and device under it.

``provenance(device)`` returns a JSON-able dict stored with every run (``config.provenance``):

- ``git_commit``: ``git rev-parse HEAD`` of the current working directory (the user's project,
  not docket's install), None outside a git work tree; ``git_dirty``: whether tracked files differ
  from HEAD; ``git_diff_sha256``: sha256 of ``git diff HEAD`` (binary, full index) when dirty;
- ``python``, ``torch``, ``cuda`` (torch's CUDA build, None for CPU builds) versions, read without
  importing torch when it is not imported yet (``importlib.metadata``);
- ``host`` and ``device`` (the device the job was given, e.g. ``cpu`` or ``cuda``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def _git(*args: str, cwd: str) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(cwd: str | None = None) -> dict[str, Any]:
    """``git_commit``, ``git_dirty``, ``git_diff_sha256`` of ``cwd`` (default: current dir)."""
    cwd = cwd or os.getcwd()
    head = _git("rev-parse", "HEAD", cwd=cwd)
    if head is None or head.returncode != 0:
        return {"git_commit": None, "git_dirty": None, "git_diff_sha256": None}
    diff = _git("diff", "HEAD", "--binary", "--full-index", cwd=cwd)
    body = diff.stdout if diff is not None and diff.returncode == 0 else b""
    return {
        "git_commit": head.stdout.decode().strip() or None,
        "git_dirty": bool(body),
        "git_diff_sha256": hashlib.sha256(body).hexdigest() if body else None,
    }


def _torch_versions() -> tuple[str | None, str | None]:
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__), getattr(torch.version, "cuda", None)
    try:
        return version("torch"), None  # CUDA build unknown without importing torch
    except PackageNotFoundError:
        return None, None


def provenance(device: str | None = "cpu", cwd: str | None = None) -> dict[str, Any]:
    """The provenance record of a run (see module docstring); ``device`` None: not known (an
    ingested run whose device was not stated)."""
    torch_version, cuda = _torch_versions()
    return {
        **git_state(cwd),
        "python": platform.python_version(),
        "torch": torch_version,
        "cuda": cuda,
        "host": socket.gethostname(),
        "device": device,
    }
