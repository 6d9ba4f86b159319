"""The types a handler author sees: PermanentError and ReleaseTask (raised
by a handler to decide its task's outcome) and TaskInfo (the task as
delivered, with its stop signal). taskq and taskq.worker export them.

Thread-safety: the exceptions are plain values. A TaskInfo's fields are
set once, before its handler sees it; stop_requested and wait_stop() are
safe from any thread (a threading.Event).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional


class PermanentError(Exception):
    """Raise it from a handler to fail the task for good: the master gives it
    up at once (dead-letter set, FAILED result) instead of retrying it. Any
    other exception is a retryable failure. The text is the failure's."""


class ReleaseTask(Exception):
    """Raise it from a handler to give the task back without a failure
    ("not now"): it is ready again after `delay` seconds (0 = at once) and no
    attempt is counted."""

    def __init__(self, delay: float = 0.0):
        super().__init__(f"release the task for {delay} s")
        if delay < 0:
            raise ValueError("delay must not be negative")
        self.delay = delay


class TaskInfo:
    """What a handler that takes a `task` parameter gets besides its item:
    the task as delivered and its stop signal.

    id, queue, handler, attempt (1 on the first delivery), priority,
    reply_to, headers (dict), args (list), payload (the raw bytes),
    lease_id, worker_id; `stop_requested` / `wait_stop(timeout)` tell a
    plain function that its result will not be used any more (cancelled,
    lease lost, drain time up, stream ended): it should return soon.
    """

    __slots__ = ("id", "queue", "handler", "attempt", "priority", "reply_to", "headers",
                 "args", "payload", "lease_id", "worker_id", "_stop")

    def __init__(self, task: Any, lease_id: int, worker_id: str):
        self.id: int = task.id
        self.queue: str = task.queue
        self.handler: str = task.handler
        self.attempt: int = task.attempt
        self.priority: int = task.priority
        self.reply_to: str = task.reply_to
        self.headers: Dict[str, str] = dict(task.headers)
        self.args: List[str] = list(task.args)
        self.payload: bytes = task.payload
        self.lease_id = lease_id
        self.worker_id = worker_id
        self._stop = threading.Event()   # set by the worker (_task_runs.py)

    @property
    def stop_requested(self) -> bool:
        """True once the task must stop (its result would not be used)."""
        return self._stop.is_set()

    def wait_stop(self, timeout: Optional[float] = None) -> bool:
        """Sleeps until the task must stop or `timeout` s pass; True if it
        must stop. A plain function's interruptible sleep."""
        return self._stop.wait(timeout)

    def __repr__(self) -> str:
        return (f"TaskInfo(id={self.id}, queue={self.queue!r}, handler={self.handler!r}, "
                f"attempt={self.attempt})")
