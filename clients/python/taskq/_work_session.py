"""The Work-stream session: one bidirectional Work call to the master at a
time, as the C++ taskq-worker runs it (docs/WORKER.md, "How a session
works"). run_session() opens a stream and reads it until it ends: acks
(refused heartbeats stop their tasks, refused results are logged or
turned into permanent failures), heartbeat confirmations (they move the
lease fence) and deliveries (accepted as TaskRuns and handed to the
runners). The writer is the request generator, run by gRPC's request
thread: the Start message, then one message whenever the outbox has
something or a heartbeat is due; it also enforces the fence and the drain
deadline, and half-closes the stream once a drain is done. Sessions are
numbered; a run remembers the number of the stream it came on, so a
result is reported only on that stream.

Thread-safety: every field is guarded by the worker's one lock. The
reader (run_session) and the writer run on their own threads; drain(),
drain_now() and handler_done() are called from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator, List, Optional, Tuple

import grpc

from taskq._handler_call import FAIL, OK, RELEASE, clean_error
from taskq._handler_runners import HandlerRunners
from taskq._handlers import HandlerRegistry
from taskq._leases import Leases
from taskq._outbox import Outbox
from taskq._stubs import pb
from taskq._task_runs import (CANCELLED, LEASE_LAPSED, LEASE_LOST, RELEASED, STREAM_ENDED,
                              TaskRun, TaskRuns)

log = logging.getLogger("taskq.worker")

HALF_CLOSE_WAIT = 5.0       # after our half-close, the master ends the stream
CONFIRM_CONNECTED = 0.25    # a stream still open this long after Start is up
HEALTHY_SESSION = 1.0       # a session this long resets the backoff
_INF = float("inf")

# google.rpc.Code numbers -> grpc.StatusCode names.
_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}

Status = Tuple[Optional[grpc.StatusCode], str]


class WorkSession:
    """The worker's side of the Work protocol, one stream after another.
    `settings` is the Worker (queues, worker_id, concurrency, prefetch and
    conn are read when used)."""

    def __init__(self, lock: threading.Lock, settings: Any, handlers: HandlerRegistry,
                 runs: TaskRuns, runners: Optional[HandlerRunners], leases: Leases,
                 outbox: Outbox):
        self._lock = lock
        self._settings = settings
        self._handlers = handlers
        self._runs = runs
        self.runners = runners      # set by the Worker if None here
        self._leases = leases
        self._outbox = outbox
        self._writer_cond = threading.Condition(lock)
        # All guarded by the lock:
        self.stopping = False
        self.drain_deadline = _INF
        self._drain_expired = False
        self.number = 0                # of the current (or last) stream
        self.live = False              # may still send on it
        self._over = False             # its reader saw the end
        self.half_closed = False       # the request generator returned
        self._connected = False
        self._call: Any = None
        self._close_timer: Optional[threading.Timer] = None
        self._writer_waiting = False
        self._writer_wake = _INF       # when the waiting writer wakes by itself

    # -- stopping (any thread) ---------------------------------------------
    def drain(self, drain_timeout: float) -> None:
        """Takes no more tasks, releases the ones not started, and gives the
        running ones `drain_timeout` s; then the writer half-closes."""
        with self._lock:
            if not self.stopping:
                self.stopping = True
                self.drain_deadline = time.monotonic() + drain_timeout
                self._outbox.credits = 0
                released = self._release_live(only_waiting=True)
                running = sum(1 for r in self._runs.all if r.started)
                log.info("taskq worker %s stopping: finishing %d running task(s), waiting up to "
                         "%.0f s%s", self._settings.worker_id, running, drain_timeout,
                         f"; releasing {released} task(s) not started" if released else "")
            if self._call is not None and not self._connected:
                # Still connecting: nothing was delivered, nothing to drain.
                self._call.cancel()
            self._writer_cond.notify()

    def drain_now(self) -> None:
        """The drain time is up now (after drain())."""
        with self._lock:
            self.drain_deadline = min(self.drain_deadline, time.monotonic())
            self._writer_cond.notify()

    def handler_done(self, run: TaskRun, outcome: Optional[tuple]) -> None:
        """A handler returned (lock held): the run ends, the writer looks."""
        self._runs.finish(run, outcome)
        if self._writer_waiting:
            self._writer_cond.notify()

    # -- one stream (the caller of Worker.run()) -----------------------------
    def run_session(self) -> Tuple[Status, bool, bool]:
        """Opens a stream and serves it until it ends: its status, whether
        it was connected, whether it was healthy (resets the backoff)."""
        settings = self._settings
        with self._lock:
            if self.stopping:
                return (grpc.StatusCode.CANCELLED, "stopping"), False, False
            self.number += 1
            session = self.number
            self.live, self._over = True, False
            self.half_closed = self._connected = False
            self._leases.reset()
            self._outbox.reset()
            # Slots still held by tasks of a dead stream are offered again
            # only when those tasks finish.
            self._outbox.credits = max(0, settings.concurrency + settings.prefetch
                                       - len(self._runs.all))
        started = time.monotonic()
        received = False
        conn = settings.conn
        call = conn.stub.Work(self._requests(session), metadata=conn.metadata)
        with self._lock:
            self._call = call
            if self.stopping and not self._connected:
                call.cancel()
        try:
            for response in call:
                received = True
                self._handle_response(session, response)
        except grpc.RpcError:
            pass  # the status is read below
        except Exception:  # a bug of ours: end this stream, reconnect
            log.exception("taskq worker %s: error while reading the stream", settings.worker_id)
            call.cancel()
        except BaseException:
            # KeyboardInterrupt (handle_signals=False) or SystemExit: abort.
            # Ending the stream gives every lease back to the master.
            with self._lock:
                self.stopping = True
            call.cancel()
            self._end_session(session)
            raise
        self._end_session(session)
        code, details = call.code(), call.details() or ""
        with self._lock:
            self._call = None
            connected = self._connected
            self._connected = False
        healthy = connected and (received or time.monotonic() - started >= HEALTHY_SESSION)
        return (code, details), connected, healthy

    def _end_session(self, session: int) -> None:
        with self._lock:
            unsent = self._outbox.unsent()
            if unsent:
                log.warning("%d report(s) were not sent before the stream ended; the master will "
                            "hand those tasks out again", unsent)
            self.live = False
            self._over = True
            running = 0
            for run in list(self._runs.all):
                if run.session != session or run.settled:
                    continue
                running += run.started
                self._runs.settle(run, STREAM_ENDED)
            if running:
                log.warning("the stream to %s ended: stopping %d running task(s); the master hands "
                            "them out again", self._settings.conn.address, running)
            self._leases.clear()
            self._outbox.reset()
            self._outbox.credits = 0
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
            self._writer_cond.notify_all()

    def _mark_connected(self) -> None:
        if self._connected:
            return
        self._connected = True
        settings = self._settings
        log.info("taskq worker %s connected to %s, queues: %s", settings.worker_id,
                 settings.conn.address, ", ".join(settings.queues))

    def _release_live(self, only_waiting: bool) -> int:
        """Releases the live stream's unsettled runs (only those not started
        yet if only_waiting); how many (lock held)."""
        if not self.live or self.half_closed:
            return 0
        released = 0
        releases = self._outbox.releases
        for run in list(self._runs.all):
            if run.session != self.number or run.settled:
                continue
            if only_waiting and run.started:
                continue
            releases.append((run.task_id, run.lease_id, 0))
            self._runs.settle(run, RELEASED)
            released += 1
        return released

    def _live_unsettled(self) -> int:
        return sum(1 for r in self._runs.all if r.session == self.number and not r.settled)

    # -- the reader ----------------------------------------------------------
    def _handle_response(self, session: int, response: Any) -> None:
        inline: List[TaskRun] = []
        wake_writer = False
        with self._lock:
            for ack in response.acks:
                wake_writer |= self._handle_ack(ack)
            now = time.monotonic()
            live = self.live and self.number == session
            if live:
                self._leases.confirmed(response.extended, now)
            deliveries = response.deliveries
            if deliveries:
                wake_writer |= self._accept(session, live, deliveries, now, inline)
            if not self._connected:
                self._mark_connected()
            if wake_writer and self._writer_waiting:
                self._writer_cond.notify()
        if inline:
            self.runners.run_inline(inline)

    def _accept(self, session: int, live: bool, deliveries: Any, now: float,
                inline: List[TaskRun]) -> bool:
        """Takes a message's deliveries (lock held); True if the writer must
        look at its plans again."""
        get_handler = self._handlers.get
        track = self._leases.track
        add_run = self._runs.all.add
        runners = self.runners
        wait = runners.waiting.append
        wake = False
        for d in deliveries:
            task = d.task
            if not live or self.half_closed:
                log.debug("not running task %d: the stream is closing", task.id)
                continue
            if self.stopping:
                log.debug("releasing task %d at once: the worker is stopping", task.id)
                self._outbox.releases.append((task.id, d.lease_id, 0))
                wake = True
                continue
            h = get_handler(task.handler)
            run = TaskRun(task, d.lease_id, session, h)
            track(run, d, now)
            add_run(run)
            if h is None or h.inline:
                run.started = True   # runs on this thread, holds no slot
                inline.append(run)
            else:
                wait(run)
        leases = self._leases
        if leases.heartbeat_due < self._writer_wake or leases.fence_due < self._writer_wake:
            wake = True
        if runners.waiting:
            runners.dispatch(wake_pool=True)
        return wake

    def _handle_ack(self, ack: Any) -> bool:
        """One ack (lock held); True if the writer has something new."""
        kind = self._outbox.sent.pop(ack.lease_id, None)
        code = ack.code
        if code == 0:
            return False
        try:
            status = grpc.StatusCode[_CODE_NAMES[code]]
        except (KeyError, IndexError):
            status = grpc.StatusCode.UNKNOWN
        why = f"{status.name}: {ack.message}"
        if ack.task_id == 0:
            # A refused heartbeat: stop the task, its result would be refused.
            run = self._leases.by_id.get(ack.lease_id)
            if run is None:
                log.debug("heartbeat for lease %d refused after its task finished: %s",
                          ack.lease_id, why)
                return False
            if status == grpc.StatusCode.CANCELLED:
                log.info("task %d was cancelled: stopping it (%s)", run.task_id, ack.message)
                self._runs.settle(run, CANCELLED)
            else:
                log.warning("task %d lost its lease %d: %s; stopping it", run.task_id,
                            ack.lease_id, why)
                self._runs.settle(run, LEASE_LOST)
            return False
        what = {FAIL: "failure report", RELEASE: "release"}.get(kind, "result")
        if status == grpc.StatusCode.UNAVAILABLE:
            log.warning("%s for task %d is unsettled: %s", what, ack.task_id, why)
        elif kind is not None and kind != OK:
            log.warning("%s for task %d not accepted: %s", what, ack.task_id, why)
        elif status == grpc.StatusCode.FAILED_PRECONDITION:
            log.warning("result for task %d discarded: %s", ack.task_id, ack.message)
        elif status == grpc.StatusCode.INVALID_ARGUMENT:
            # E.g. a result larger than the master accepts: the same result
            # would come again, so the task fails for good.
            log.warning("result for task %d refused by the master: %s; reporting the task failed",
                        ack.task_id, why)
            self._outbox.failures.append((ack.task_id, ack.lease_id,
                                          clean_error(f"result refused by the master: "
                                                      f"{ack.message}"),
                                          True))
            return True
        else:
            log.warning("result for task %d not accepted: %s", ack.task_id, why)
        return False

    # -- the writer (gRPC's request thread runs this generator) ---------------
    def _requests(self, session: int) -> Iterator[Any]:
        request = pb.WorkRequest()   # reused: gRPC serializes it before asking for the next
        first = True
        confirm_at = _INF
        leases = self._leases
        outbox = self._outbox
        settings = self._settings
        while True:
            with self._lock:
                while True:
                    if self.number != session or self._over:
                        return
                    now = time.monotonic()
                    if not self._connected and now >= confirm_at:
                        self._mark_connected()
                    if now >= leases.fence_due:
                        for run in leases.lapsed(now):
                            self._runs.settle(run, LEASE_LAPSED)
                    if self.stopping and not self._drain_expired and now >= self.drain_deadline:
                        self._drain_expired = True
                        released = self._release_live(only_waiting=False)
                        if released:
                            log.warning("drain time is up: releasing %d running task(s) to the "
                                        "master and telling them to stop", released)
                    taken = outbox.take(first, self.stopping, leases, now)
                    if taken is not None:
                        break
                    if self.stopping and not first and self._live_unsettled() == 0:
                        # Drained: everything is reported or released. Our
                        # half-close lets the master end the stream.
                        self.half_closed = True
                        self._close_timer = threading.Timer(HALF_CLOSE_WAIT, self._close_late,
                                                            args=(session,))
                        self._close_timer.daemon = True
                        self._close_timer.start()
                        return
                    wake = leases.next_wake()
                    if not self._connected:
                        wake = min(wake, confirm_at)
                    if self.stopping and not self._drain_expired:
                        wake = min(wake, self.drain_deadline)
                    self._writer_wake = wake
                    self._writer_waiting = True
                    self._writer_cond.wait(None if wake == _INF else max(0.0, wake - now))
                    self._writer_waiting = False
                    self._writer_wake = _INF
            Outbox.fill(request, first, settings.queues, settings.worker_id, taken)
            yield request
            if first:
                first = False
                confirm_at = time.monotonic() + CONFIRM_CONNECTED

    def _close_late(self, session: int) -> None:
        with self._lock:
            if self.number != session or self._over or self._call is None:
                return
            call = self._call
        log.warning("the master did not end the stream after it was closed; cancelling it")
        call.cancel()
