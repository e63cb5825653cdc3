"""A rich progress bar behind the executor's Events hooks."""

from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tierctl.executor import ActionResult


class ProgressBar:
    """Objects and bytes done, throughput and ETA. Thread-safe ``advanced``."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]apply[/] {task.fields[objects]}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._lock = threading.Lock()
        self._objects_total = 0
        self._objects_done = 0

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def started(self, objects: int, total_bytes: int) -> None:
        self._objects_total = objects
        self._task = self._progress.add_task(
            "apply", total=total_bytes or None, objects=f"0/{objects} objects"
        )

    def advanced(self, nbytes: int) -> None:
        if self._task is not None:
            with self._lock:
                self._progress.advance(self._task, nbytes)

    def finished_object(self, results: list[ActionResult]) -> None:
        self._objects_done += 1
        if self._task is not None:
            self._progress.update(self._task, objects=f"{self._objects_done}/{self._objects_total} objects")
