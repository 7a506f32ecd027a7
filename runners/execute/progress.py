"""Progress bars for job execution (rich): one bar for the jobs, one for the current job."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class JobProgress:
    """Context manager; a no-op when disabled."""

    def __init__(self, enabled: bool, total_jobs: int) -> None:
        self.enabled = enabled
        self.total_jobs = total_jobs
        self.progress: Progress | None = None
        self.jobs_task: Any = None
        self.job_task: Any = None

    def __enter__(self) -> JobProgress:
        if self.enabled:
            console = Console(file=sys.stderr)
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self.progress.start()
            self.jobs_task = self.progress.add_task("jobs", total=self.total_jobs)
        return self

    def start_job(self, name: str) -> None:
        if self.progress is None:
            return
        if self.job_task is not None:
            self.progress.remove_task(self.job_task)
        self.job_task = self.progress.add_task(f"  {name}", total=None)

    def update(self, done: int, total: int, description: str) -> None:
        if self.progress is None or self.job_task is None:
            return
        self.progress.update(
            self.job_task, completed=done, total=total, description=f"  {description}"[:60]
        )

    def finish_job(self, name: str, status: str) -> None:
        if self.progress is None:
            return
        if self.job_task is not None:
            self.progress.remove_task(self.job_task)
            self.job_task = None
        self.progress.advance(self.jobs_task)
        self.progress.console.print(f"  {name}: {status}")

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
