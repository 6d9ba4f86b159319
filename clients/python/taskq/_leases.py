"""Lease bookkeeping of the live stream: which leases the worker holds,
when each one's next heartbeat is due (a third of the lease, 0.2-10 s, as
the C++ worker), and the fence: a lease whose extension the master has not
confirmed in time may run out on the master, which then gives the task to
another worker, so the task is stopped here first (our clock, with a
margin of up to 1 s).

Thread-safety: guarded by the worker's one lock (callers hold it).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List

if TYPE_CHECKING:
    from taskq._task_runs import TaskRun

log = logging.getLogger("taskq.worker")

# The C++ worker's constants (worker/worker.cc, common/limits.h).
MIN_EXTEND_EVERY = 0.2      # heartbeat period bounds, seconds
MAX_EXTEND_EVERY = 10.0
EXTEND_SLACK = 0.05         # heartbeats due this soon ride along
FENCE_MARGIN = 1.0          # of a lease's time left, not counted on (<= 1/4)
_INF = float("inf")


class Leases:
    """The live stream's unsettled runs by lease id, with the earliest
    heartbeat and fence times (`heartbeat_due`, `fence_due`: never later
    than the real ones, maybe earlier)."""

    def __init__(self) -> None:
        self.by_id: Dict[int, "TaskRun"] = {}
        self.heartbeat_due = _INF
        self.fence_due = _INF

    def reset(self) -> None:
        """A new stream: no leases, nothing due."""
        self.by_id.clear()
        self.heartbeat_due = self.fence_due = _INF

    def clear(self) -> None:
        """The stream ended: its leases are the master's again."""
        self.by_id.clear()

    def forget(self, run: "TaskRun") -> None:
        """The run's lease needs no more heartbeats."""
        if self.by_id.get(run.lease_id) is run:
            del self.by_id[run.lease_id]

    def track(self, run: "TaskRun", delivery: Any, now: float) -> None:
        """Holds a delivered run's lease: its heartbeat period and fence."""
        left_ms = delivery.lease_ms_left
        if left_ms > 0:
            left = left_ms / 1000.0
            every = left / 3
            run.fence_at = now + left - min(FENCE_MARGIN, left / 4)
            if run.fence_at < self.fence_due:
                self.fence_due = run.fence_at
        else:  # an older master: from the deadline, by the wall clock
            left = delivery.lease_deadline_unix_ms / 1000.0 - time.time()
            every = left / 3 if delivery.lease_deadline_unix_ms > 0 else MAX_EXTEND_EVERY
        every = MIN_EXTEND_EVERY if every < MIN_EXTEND_EVERY else (
            MAX_EXTEND_EVERY if every > MAX_EXTEND_EVERY else every)
        run.extend_every = every
        run.next_extend = now + every
        if run.next_extend < self.heartbeat_due:
            self.heartbeat_due = run.next_extend
        self.by_id[run.lease_id] = run

    def confirmed(self, extended: Any, now: float) -> None:
        """The master extended these leases: their fences move."""
        by_id = self.by_id
        for ext in extended:
            run = by_id.get(ext.lease_id)
            if run is not None and ext.lease_ms_left > 0:
                left = ext.lease_ms_left / 1000.0
                run.fence_at = now + left - min(FENCE_MARGIN, left / 4)

    def take_heartbeats(self, now: float, room: int) -> List[int]:
        """Lease ids whose heartbeat is due (at most `room`), now counted
        as sent."""
        extend: List[int] = []
        if now + EXTEND_SLACK >= self.heartbeat_due:
            due = _INF
            limit = now + EXTEND_SLACK
            for lease_id, run in self.by_id.items():
                if run.next_extend <= limit and room > 0:
                    room -= 1
                    extend.append(lease_id)
                    run.next_extend = now + run.extend_every
                if run.next_extend < due:
                    due = run.next_extend
            self.heartbeat_due = due
        return extend

    def lapsed(self, now: float) -> List["TaskRun"]:
        """The runs whose lease may have run out by now (to be stopped)."""
        due = _INF
        lapsed = []
        for run in self.by_id.values():
            if run.fence_at <= now:
                log.warning("task %d: no heartbeat of lease %d was confirmed in time; the lease "
                            "may run out on the master, which then hands the task to another "
                            "worker: stopping it", run.task_id, run.lease_id)
                lapsed.append(run)
            elif run.fence_at < due:
                due = run.fence_at
        self.fence_due = due
        return lapsed

    def next_wake(self) -> float:
        """When the writer must look again (a heartbeat or a fence)."""
        return min(self.heartbeat_due - EXTEND_SLACK, self.fence_due)
