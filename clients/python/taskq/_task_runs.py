"""The tasks a worker holds: one TaskRun per accepted delivery, from its
acceptance until its handler returned, and what happens to it: settle()
decides that its result will not be reported (and tells its handler to
stop), finish() ends it and queues its report on the stream it came on if
that stream can still send it. stop_all() is the last word when no stream
can take results any more.

Thread-safety: everything here is guarded by the worker's one lock; the
methods expect it held, except task_info() and stop_all(), which take it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Optional

from taskq._handler_api import TaskInfo
from taskq._handler_call import FAIL, OK
from taskq._handlers import Handler
from taskq._leases import MAX_EXTEND_EVERY

log = logging.getLogger("taskq.worker")

_INF = float("inf")

# Why a task's result will not be reported (its outcome is decided).
RELEASED = "released to the master"
LEASE_LOST = "its lease was lost"
LEASE_LAPSED = "its lease may have run out"
CANCELLED = "it was cancelled"
STREAM_ENDED = "its stream ended, so the master took its lease back"
STOPPED = "no stream can take its result"


class TaskRun:
    """One delivery, from acceptance until its handler returned. Fields are
    guarded by the worker's lock."""

    __slots__ = ("task", "task_id", "lease_id", "session", "handler", "started", "settled",
                 "extend_every", "next_extend", "fence_at", "info", "async_task")

    def __init__(self, task: Any, lease_id: int, session: int, handler: Optional[Handler]):
        self.task = task
        self.task_id: int = task.id
        self.lease_id = lease_id
        self.session = session        # the number of the stream it came on
        self.handler = handler
        self.started = False          # holds a slot (or runs inline)
        self.settled: Optional[str] = None   # why its result is not reported
        self.extend_every = MAX_EXTEND_EVERY   # heartbeat period, seconds
        self.next_extend = _INF
        self.fence_at = _INF          # when the lease may run out, our clock
        self.info: Optional[TaskInfo] = None
        self.async_task: Optional[asyncio.Task] = None


class TaskRuns:
    """Every accepted delivery of every stream (`all`), with the lease
    table and the outbox their reports go to. `stream` (the WorkSession,
    set by the Worker) says whether a run's stream can still send."""

    def __init__(self, lock: threading.Lock, settings: Any, leases: Any, outbox: Any):
        self._lock = lock
        self._settings = settings          # the Worker: worker_id
        self.leases = leases
        self.outbox = outbox
        self.stream: Any = None
        self.all: set = set()
        self.idle = threading.Condition(lock)   # notified when `all` empties
        self.stuck = False                 # a handler ignored stop_all()

    def task_info(self, run: TaskRun) -> TaskInfo:
        """The run's TaskInfo, made on first use (takes the lock)."""
        with self._lock:
            if run.info is None:
                run.info = TaskInfo(run.task, run.lease_id, self._settings.worker_id)
                if run.settled:
                    run.info._stop.set()
            return run.info

    def settle(self, run: TaskRun, why: str) -> None:
        """Decides a run's outcome: no heartbeats any more, its handler is
        told to stop, its result will not be reported."""
        if run.settled:
            return
        run.settled = why
        self.leases.forget(run)
        if run.info is not None:
            run.info._stop.set()
        if run.async_task is not None:
            run.async_task.get_loop().call_soon_threadsafe(run.async_task.cancel)
        if not run.started:
            self.finish(run, None)

    def finish(self, run: TaskRun, outcome: Optional[tuple]) -> None:
        """A run is over (its handler returned, or it never started): its
        report goes to the outbox if its stream can still send it, and its
        slot is offered again as a credit (its runner frees the slot)."""
        self.all.discard(run)
        self.leases.forget(run)
        stream = self.stream
        outbox = self.outbox
        live = stream.live and stream.number == run.session and not stream.half_closed
        if stream.live and not stream.stopping:
            outbox.credits += 1   # offered on whatever stream is live now
        if run.settled:
            if run.started and run.settled != RELEASED and run.settled != STOPPED:
                log.info("task %d stopped: %s, so its result is not reported", run.task_id,
                         run.settled)
        elif not live:
            log.info("result for task %d dropped: the stream it came on has ended, so the master "
                     "already took the task back", run.task_id)
        elif outcome is None:
            pass
        elif outcome[0] == OK:
            outbox.completions.append((run.task_id, run.lease_id, outcome[1]))
        elif outcome[0] == FAIL:
            outbox.failures.append((run.task_id, run.lease_id, outcome[1], outcome[2]))
        else:
            outbox.releases.append((run.task_id, run.lease_id, outcome[1]))
        if not self.all:
            self.idle.notify_all()

    def stop_all(self, grace: float) -> None:
        """No stream can take results any more: stop what still runs and
        wait up to `grace` seconds for it (takes the lock)."""
        with self._lock:
            if not self.all:
                return
            log.info("stopping %d task(s) whose results can no longer be reported",
                     len(self.all))
            for run in list(self.all):
                self.settle(run, STOPPED)
            deadline = time.monotonic() + grace
            while self.all:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.idle.wait(left)
            if self.all:
                self.stuck = True
                log.error("%d handler(s) ignored the stop request (a thread cannot be killed); "
                          "their results are dropped", len(self.all))
