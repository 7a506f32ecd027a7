"""Job kinds that run the user's own code: ``python`` and ``command``.

- ``python``: ``entry: "package.module:function"``; the function is called with a
  :class:`docketml.api.Run` over this run (knobs = the job's params). What it records through the
  Run becomes the run's results; its return value is ignored. An exception fails the run.
- ``command``: ``command: [argv...]``; each ``{name}`` in an element is replaced by the job's
  param ``name`` (such a param counts as fired: it reached the program). The process runs in the
  current working directory with ``DOCKET_DB``, ``DOCKET_RUN_ID``, ``DOCKET_PROTOCOL``,
  ``DOCKET_JOB``, ``DOCKET_SPOOL`` (and ``DOCKET_ARTIFACTS``) set, so ``docketml.start_run()``
  inside it attaches to this run. Its stdout and stderr are kept as ``stdout.txt`` /
  ``stderr.txt`` in the run's artifacts directory; a non-zero exit fails the run with the tail of
  its stderr; a child that never called ``start_run()`` records nothing but the run itself.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..context import JobContext, JobResult

STDERR_TAIL = 2000
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _run_for(ctx: JobContext) -> Any:
    from docketml.api import Run
    from docketml.runners.execute.artifacts import artifacts_root

    return Run(
        run_id=int(ctx.run_id or 0),
        protocol=ctx.protocol,
        job=ctx.spec,
        knobs=ctx.knobs,
        artifacts_root=artifacts_root(ctx.db_url),
        artifacts_dir=ctx.artifacts_dir,
        seed=ctx.seed,
        inputs=ctx.inputs,
    )


def workdir() -> str:
    """Where the user's code runs: ``DOCKET_WORKDIR`` (set for Ray workers), else the cwd."""
    return os.environ.get("DOCKET_WORKDIR") or os.getcwd()


def resolve_entry(entry: str) -> Any:
    """The callable ``module:function`` names; ``ImportError`` saying why if there is none (the
    run fails with that message)."""
    module_name, _, attr = entry.partition(":")
    if workdir() not in sys.path:  # a study's own modules next to its protocol
        sys.path.insert(0, workdir())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"entry {entry!r}: cannot import {module_name!r}: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ImportError(f"entry {entry!r}: {module_name} has no callable {attr!r}")
    return fn


def python_job(ctx: JobContext) -> JobResult:
    from docketml.api import attach

    fn = resolve_entry(ctx.spec.entry)
    run = _run_for(ctx)
    try:
        with attach(run):
            fn(run)
    finally:
        run._ended = True
    return run._result()


def substitute(argv: list[str], params: dict[str, Any]) -> tuple[list[str], set[str]]:
    """argv with ``{name}`` replaced by ``params[name]``, and the names used."""
    used: set[str] = set()

    def one(match: re.Match[str]) -> str:
        used.add(match.group(1))
        return str(params[match.group(1)])

    return [_PLACEHOLDER.sub(one, arg) for arg in argv], used


def command_job(ctx: JobContext) -> JobResult:
    from docketml.api import (
        ENV_DB,
        ENV_JOB,
        ENV_PROTOCOL,
        ENV_RUN_ID,
        ENV_SPOOL,
        SPOOL_NAME,
        read_spool,
    )
    from docketml.runners.execute.artifacts import artifacts_root

    argv, used = substitute(list(ctx.spec.command), ctx.params)
    for name in used:
        ctx.knobs.fire(name)
    spool = Path(ctx.artifacts_dir) / SPOOL_NAME
    spool.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        {
            ENV_DB: str(ctx.db_url),
            ENV_RUN_ID: str(ctx.run_id),
            ENV_PROTOCOL: str(ctx.protocol_id),
            ENV_JOB: ctx.job,
            ENV_SPOOL: str(spool),
            "DOCKET_ARTIFACTS": str(artifacts_root(ctx.db_url)),
        }
    )
    out_path = Path(ctx.artifacts_dir) / "stdout.txt"
    err_path = Path(ctx.artifacts_dir) / "stderr.txt"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            proc = subprocess.run(argv, stdout=out, stderr=err, env=env, cwd=workdir(), check=False)
        except OSError as exc:
            raise RuntimeError(f"command {argv[0]!r} could not start: {exc}") from None
    if proc.returncode != 0:
        tail = err_path.read_bytes()[-STDERR_TAIL:].decode("utf-8", "replace").strip()
        raise RuntimeError(f"command exited with status {proc.returncode}; stderr tail:\n{tail}")
    result = read_spool(spool, ctx.knobs) if spool.exists() else JobResult()
    result.extra["stdout"] = str(out_path)
    result.extra["stderr"] = str(err_path)
    result.extra["argv"] = argv
    return result


JOBS = {"python": python_job, "command": command_job}
