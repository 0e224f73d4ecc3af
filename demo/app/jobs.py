"""The web editor's generation queue: one generation runs at a time, on one worker thread; the others wait in order
and know their position; any job can be cancelled (a waiting one leaves the queue, a running one stops at the
model's next evaluation)."""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from lutils.errors import CageError

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a running job once it is cancelled."""


@dataclass
class Job:
    """A generation: `work(progress)` does it, calling progress(done, total) as it goes; its result is a dict."""

    id: str
    owner: str  # the session that asked for it
    work: Callable
    status: str = "queued"  # queued, running, done, failed, cancelled
    done: int = 0
    total: int = 1
    result: dict = field(default_factory=dict)
    error: Optional[str] = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.time)
    seconds: Optional[float] = None

    def progress(self, done: int, total: int) -> None:
        """Called by the work; raises Cancelled once the job is cancelled."""
        self.done, self.total = done, max(total, 1)
        if self.cancel_requested.is_set():
            raise Cancelled()

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


class JobQueue:
    """First come, first served, one at a time (see the module docstring)."""

    def __init__(self):
        self.jobs: dict = {}
        self._waiting: list = []
        self._condition = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="cage-app-generation", daemon=True)
        self._worker.start()

    def submit(self, owner: str, work: Callable) -> Job:
        job = Job(secrets.token_hex(8), owner, work)
        with self._condition:
            self.jobs[job.id] = job
            self._waiting.append(job)
            self._condition.notify()
        return job

    def get(self, job_id: str) -> Optional[Job]:
        return self.jobs.get(job_id)

    def position(self, job: Job) -> int:
        """How many jobs run or wait before this one (0 when it runs or has finished)."""
        with self._condition:
            if job not in self._waiting:
                return 0
            running = any(j.status == "running" for j in self.jobs.values())
            return self._waiting.index(job) + int(running)

    def cancel(self, job: Job) -> None:
        with self._condition:
            if job in self._waiting:
                self._waiting.remove(job)
                job.status, job.work = "cancelled", None
        job.cancel_requested.set()

    def info(self, job: Job) -> dict:
        return {"job": job.id, "status": job.status, "position": self.position(job), "done": job.done,
                "total": job.total, "error": job.error, "seconds": job.seconds, **job.result}

    def close(self) -> None:
        """Cancel every job and stop the worker (waiting for it, so no generation outlives the server)."""
        with self._condition:
            self._closed = True
            for job in list(self._waiting):
                job.status = "cancelled"
            self._waiting.clear()
            for job in self.jobs.values():
                job.cancel_requested.set()
            self._condition.notify_all()
        self._worker.join(timeout=60)  # a running job stops at its next model evaluation

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                job = self._waiting.pop(0)
                job.status = "running"
            start = time.perf_counter()
            try:
                job.result = job.work(job.progress) or {}
                job.status = "done"
            except Cancelled:
                job.status = "cancelled"
                log.info("generation %s cancelled", job.id)
            except Exception as error:  # noqa: BLE001 - the page shows it; the worker goes on
                job.error = str(error) if isinstance(error, CageError) else f"{type(error).__name__}: {error}"
                job.status = "failed"
                log.exception("generation %s failed", job.id)
            job.seconds = round(time.perf_counter() - start, 3)
            job.work = None  # it holds the model and the session's frames
            self._forget_old()

    def _forget_old(self, keep: int = 100) -> None:
        """Drop the records of all but the last `keep` finished jobs."""
        with self._condition:
            finished = [job for job in self.jobs.values() if job.finished]
            for job in finished[:-keep]:
                del self.jobs[job.id]
