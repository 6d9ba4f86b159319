"""The outbox of the live Work stream: what the writer's next message
carries. Credits (slots freed since the last message), completions,
failures and releases wait here until the writer takes them, batched: up
to 10,000 reports (the master's limit) and about 4 MiB of results per
message, releases first, then completions, failures, and due heartbeats
in the room left. `sent` remembers what kind of report went out for each
lease until its ack comes back.

Thread-safety: guarded by the worker's one lock (callers hold it); fill()
works on the writer's own request message and needs no lock.
"""

from __future__ import annotations
import socket

from typing import Any, Dict, List, Optional, Sequence, Tuple

from taskq._handler_call import FAIL, OK, RELEASE

MAX_BATCH_BYTES = 4 << 20   # results per message; the rest go in the next
MAX_REPORTS = 10000         # reports per message (the master's limit)

# What the writer takes for one message: credits, releases, completions,
# failures, heartbeat lease ids.
Batch = Tuple[int, list, list, list, List[int]]


class Outbox:
    """Reports and credits waiting for the writer."""

    def __init__(self) -> None:
        self.credits = 0
        self.completions: List[Tuple[int, int, bytes]] = []      # task, lease, result
        self.failures: List[Tuple[int, int, str, bool]] = []     # task, lease, error, permanent
        self.releases: List[Tuple[int, int, int]] = []           # task, lease, delay_ms
        self.sent: Dict[int, int] = {}   # lease -> OK/FAIL/RELEASE, until its ack

    def reset(self) -> None:
        """Drops the reports and what was sent (a stream began or ended)."""
        self.completions, self.failures, self.releases = [], [], []
        self.sent.clear()

    def unsent(self) -> int:
        """Reports not taken by the writer yet."""
        return len(self.completions) + len(self.failures) + len(self.releases)

    def take(self, first: bool, stopping: bool, leases: Any, now: float) -> Optional[Batch]:
        """What the next message carries (due heartbeats from `leases`), or
        None if it would carry nothing (the first one always goes)."""
        credits = 0 if stopping else self.credits
        self.credits = 0
        room = MAX_REPORTS
        sent = self.sent
        releases = self.releases
        if releases:
            if len(releases) > room:
                releases, self.releases = releases[:room], releases[room:]
            else:
                self.releases = []
            room -= len(releases)
            for r in releases:
                sent[r[1]] = RELEASE
        completions = self.completions
        if completions and room > 0:
            n, size = 0, 0
            for c in completions:
                if n >= room or size >= MAX_BATCH_BYTES:
                    break
                size += len(c[2])
                sent[c[1]] = OK
                n += 1
            if n == len(completions):
                self.completions = []
            else:
                completions, self.completions = completions[:n], completions[n:]
            room -= n
        else:
            completions = []
        failures = self.failures
        if failures and room > 0:
            n = min(room, len(failures))
            failures, self.failures = failures[:n], failures[n:]
            room -= n
            for f in failures:
                sent[f[1]] = FAIL
        else:
            failures = []
        extend = leases.take_heartbeats(now, room)
        if first or credits or releases or completions or failures or extend:
            return credits, releases, completions, failures, extend
        return None

    @staticmethod
    def fill(request: Any, first: bool, queues: Sequence[str], worker_id: str,
             taken: Batch) -> None:
        """Writes a taken batch into `request` (a reused WorkRequest); the
        first message of a stream also carries Start."""
        credits, releases, completions, failures, extend = taken
        request.Clear()
        if first:
            request.start.queues.extend(queues)
            request.start.worker_id = worker_id
            request.start.host = socket.gethostname()  # `taskq workers`
        if credits:
            request.credits = credits
        if completions:
            add = request.completions.add
            for task_id, lease_id, result in completions:
                add(task_id=task_id, lease_id=lease_id, result=result)
        if failures:
            add = request.failures.add
            for task_id, lease_id, error, permanent in failures:
                add(task_id=task_id, lease_id=lease_id, error=error, permanent=permanent)
        if releases:
            add = request.releases.add
            for task_id, lease_id, delay_ms in releases:
                add(task_id=task_id, lease_id=lease_id, delay_ms=delay_ms)
        if extend:
            request.extend_lease_ids.extend(extend)
