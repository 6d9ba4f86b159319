"""taskq.Worker: Python functions as taskq handlers, served over the master's
streaming Work protocol exactly as the C++ taskq-worker serves its own
(docs/WORKER.md, "How a session works"; docs/PYTHON-worker.md).

    import taskq
    worker = taskq.Worker(taskq.connect(), queues=["tasks"], concurrency=4)

    @worker.handler("square")
    def square(payload):                  # bytes, str, JSON value, ... as put
        n = int(payload)
        return f"{n} * {n} = {n * n}"

    @worker.handler("fetch")
    async def fetch(url, task):           # `task`: id, headers, attempt, stop
        ...

    worker.run()                          # blocks; SIGTERM/SIGINT drain it

One Work stream carries everything: the Start message, credits (never more
tasks in flight than concurrency + prefetch), deliveries, completions with
the handler's result and failures with the exception's text (batched per
message), releases, and heartbeats that extend the leases of the tasks the
worker holds. The worker stops a task whose heartbeat the master refused
(cancelled, lease lost) or whose lease may have run out on its own clock,
drains on stop(), and reconnects with backoff when the stream ends.

Threads: run() reads the stream (and is where signals are handled); gRPC's
request thread runs the writer (the request generator: outbox, heartbeats,
drain deadline); `concurrency` pool threads run plain functions; one
asyncio loop thread (only if an async handler is registered) runs async
handlers. A worker's state is guarded by one lock.

Thread-safety: register handlers before run(); run() once per Worker, from
any thread (signals are handled only when it runs in the main thread);
stop(), stop_now() and the read-only properties are safe from any thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import queue as _queue
import random
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc

from taskq._handler_api import PermanentError, ReleaseTask, TaskInfo
from taskq._handler_call import FAIL, OK, RELEASE, HandlerCall, clean_error
from taskq._handlers import NAME_RE, Handler as _Handler, describe_handler
from taskq._stubs import pb
from taskq.serializers import Serializer, get_serializer

__all__ = ["PermanentError", "ReleaseTask", "TaskInfo", "Worker", "default_worker_id"]

log = logging.getLogger("taskq.worker")

# The C++ worker's constants (worker/worker.cc, common/limits.h).
MIN_EXTEND_EVERY = 0.2      # heartbeat period bounds, seconds
MAX_EXTEND_EVERY = 10.0
EXTEND_SLACK = 0.05         # heartbeats due this soon ride along
FENCE_MARGIN = 1.0          # of a lease's time left, not counted on (<= 1/4)
HALF_CLOSE_WAIT = 5.0       # after our half-close, the master ends the stream
CONFIRM_CONNECTED = 0.25    # a stream still open this long after Start is up
HEALTHY_SESSION = 1.0       # a session this long resets the backoff
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0
MAX_BATCH_BYTES = 4 << 20   # results per message; the rest go in the next
MAX_REPORTS = 10000         # reports per message (the master's limit)
MAX_ERROR_BYTES = 4096
MAX_CREDITS = 100000
MAX_QUEUES = 64
MAX_WORKER_ID_BYTES = 256
MAX_DELAY_MS = 365 * 24 * 3600 * 1000
DEFAULT_STOP_GRACE = 5.0
_NAME_RE = NAME_RE

# Why a task's result will not be reported (its outcome is decided).
_RELEASED = "released to the master"
_LEASE_LOST = "its lease was lost"
_LEASE_LAPSED = "its lease may have run out"
_CANCELLED = "it was cancelled"
_STREAM_ENDED = "its stream ended, so the master took its lease back"
_STOPPED = "no stream can take its result"

# Outcomes of a handler: (_OK, payload) | (_FAIL, text, permanent) | (_RELEASE, delay_ms)
_OK, _FAIL, _RELEASE = OK, FAIL, RELEASE
_INF = float("inf")


class _Run:
    """One delivery, from acceptance until its handler returned. Fields are
    guarded by the worker's lock."""

    __slots__ = ("task", "task_id", "lease_id", "session", "handler", "started", "settled",
                 "extend_every", "next_extend", "fence_at", "info", "async_task")

    def __init__(self, task: Any, lease_id: int, session: int, handler: Optional[_Handler]):
        self.task = task
        self.task_id: int = task.id
        self.lease_id = lease_id
        self.session = session
        self.handler = handler
        self.started = False          # holds a slot (or runs inline)
        self.settled: Optional[str] = None   # why its result is not reported
        self.extend_every = MAX_EXTEND_EVERY
        self.next_extend = _INF
        self.fence_at = _INF          # when the lease may run out, our clock
        self.info: Optional[TaskInfo] = None
        self.async_task: Optional[asyncio.Task] = None


def default_worker_id() -> str:
    """"hostname:pid", as the C++ worker."""
    return f"{socket.gethostname() or 'localhost'}:{os.getpid()}"


class Worker:
    """Serves handlers for the tasks of `queues` on a taskq master.

    conn:          a taskq.Connection; None = made by run() with
                   taskq.connect() (environment variables, as the CLI), or
                   given to run(conn). `python3 -m taskq worker` makes it
                   from its flags.
    queues:        queues to take tasks from (1-64; default ["tasks"]).
    concurrency:   handlers running at once (plain functions on a pool of
                   that many threads, async ones on the loop), default 4.
    prefetch:      deliveries taken beyond `concurrency`, waiting for a
                   free slot (default 0): at most concurrency + prefetch
                   tasks are in the worker at once.
    serializer:    "pickle" lets handlers receive pickled items (unpickling
                   runs code chosen by the producer: docs/PYTHON.md); None,
                   "raw" or "json" decode bytes, str and JSON items only.
    drain_timeout: on stop(): how long running tasks may take to finish
                   before they are released back to the master (seconds).
    worker_id:     shown in the master's stats and logs ("hostname:pid").
    handle_signals: run() in the main thread drains on SIGTERM/SIGINT
                   (a second one stops at once).
    """

    def __init__(self, conn: Any = None, queues: Sequence[str] = ("tasks",), concurrency: int = 4,
                 prefetch: int = 0, serializer: Optional[str] = None,
                 drain_timeout: float = 30.0, worker_id: Optional[str] = None, *,
                 handle_signals: bool = True, stop_grace: float = DEFAULT_STOP_GRACE):
        if isinstance(queues, str):
            queues = [queues]
        self.conn = conn
        self.queues: List[str] = list(queues)
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.serializer: Serializer = get_serializer(serializer)
        self.drain_timeout = drain_timeout
        self.worker_id = worker_id or default_worker_id()
        self.handle_signals = handle_signals
        self.stop_grace = stop_grace
        self.validate()
        self._handlers: Dict[str, _Handler] = {}

        self._lock = threading.Lock()
        self._writer_cond = threading.Condition(self._lock)
        self._pool_cond = threading.Condition(self._lock)
        self._idle_cond = threading.Condition(self._lock)
        self._stop_event = threading.Event()   # ends the reconnect backoff
        self._signals: "_queue.SimpleQueue[Optional[int]]" = _queue.SimpleQueue()
        self._running = False
        # All guarded by _lock:
        self._stopping = False
        self._drain_deadline = _INF
        self._drain_expired = False
        self._stuck = False
        self._session = 0
        self._session_live = False     # may still send on it
        self._session_over = False     # its reader saw the end
        self._half_closed = False      # the request generator returned
        self._connected = False
        self._call: Any = None
        self._close_timer: Optional[threading.Timer] = None
        self._runs: set = set()        # every accepted delivery of every session
        self._leases: Dict[int, _Run] = {}   # live stream's unsettled runs
        self._credits = 0
        self._completions: List[Tuple[int, int, bytes]] = []
        self._failures: List[Tuple[int, int, str, bool]] = []
        self._releases: List[Tuple[int, int, int]] = []
        self._reports_sent: Dict[int, int] = {}   # lease -> _OK/_FAIL/_RELEASE
        self._waiting: collections.deque = collections.deque()   # runs waiting for a slot
        self._sync_ready: collections.deque = collections.deque()  # runs for the pool
        self._free_slots = 0
        self._idle_pool = 0
        self._pool_exit = False
        self._writer_waiting = False
        self._writer_wake = _INF       # when the waiting writer wakes by itself
        self._hb_due = _INF            # earliest heartbeat due (may be early)
        self._fence_due = _INF         # earliest fence (may be early)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._handler_call = HandlerCall(self, self._task_info)

    # -- configuration -----------------------------------------------------
    def validate(self) -> None:
        """Checks the settings (ValueError naming the bad one); run() calls
        it again, so attributes may be changed before run()."""
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        if len(self.queues) > MAX_QUEUES:
            raise ValueError(f"{len(self.queues)} queues given; a worker serves at most {MAX_QUEUES}")
        for q in self.queues:
            if not isinstance(q, str) or not _NAME_RE.fullmatch(q) or q.startswith("."):
                raise ValueError(f"bad queue name {q!r}: 1-128 characters from [A-Za-z0-9_.:-], "
                                 "not starting with '.'")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError("concurrency must be an integer of at least 1")
        if not isinstance(self.prefetch, int) or self.prefetch < 0:
            raise ValueError("prefetch must be a non-negative integer")
        if self.concurrency + self.prefetch > MAX_CREDITS:
            raise ValueError(f"concurrency + prefetch must be at most {MAX_CREDITS}")
        if self.drain_timeout < 0 or self.stop_grace < 0:
            raise ValueError("drain_timeout must not be negative")
        if len(self.worker_id.encode()) > MAX_WORKER_ID_BYTES:
            raise ValueError(f"worker id is longer than {MAX_WORKER_ID_BYTES} bytes")

    def handler(self, name: str, *, inline: bool = False) -> Callable[[Callable], Callable]:
        """Decorator: registers the function as handler `name` (see
        register()); returns the function unchanged."""
        def register(fn: Callable) -> Callable:
            self.register(name, fn, inline=inline)
            return fn
        return register

    def register(self, name: str, fn: Callable, *, inline: bool = False) -> None:
        """Registers `fn` for the tasks whose handler is `name`.

        `fn(item)` gets the task's decoded item; one that also takes a
        parameter named `task` gets a TaskInfo as `task=`. Its return value
        is the result (encoded like the task's item; None = empty). An
        `async def` runs on the worker's asyncio loop, anything else on the
        thread pool. inline=True runs a plain function on the thread that
        reads the stream, with no thread hand-off: only for functions that
        take microseconds and never block (everything else waits for it).
        """
        handler = describe_handler(name, fn, inline)
        with self._lock:
            if self._running:
                raise RuntimeError("register handlers before run()")
            self._handlers[name] = handler

    @property
    def handlers(self) -> Mapping[str, Callable]:
        """The registered functions by handler name."""
        return {n: h.fn for n, h in self._handlers.items()}

    @property
    def tasks_in_flight(self) -> int:
        """Deliveries accepted and not finished (running or waiting)."""
        with self._lock:
            return len(self._runs)

    @property
    def has_stuck_handlers(self) -> bool:
        """True if run() returned while a handler still ran after being told
        to stop (a thread cannot be killed; its result was dropped)."""
        with self._lock:
            return self._stuck

    # -- stopping ----------------------------------------------------------
    def stop(self) -> None:
        """Graceful drain: take no more tasks, release the ones not started,
        let running ones finish for up to drain_timeout (then release them),
        close the stream; run() then returns. Idempotent; any thread."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._drain_deadline = time.monotonic() + self.drain_timeout
                self._credits = 0
                released = self._release_live(only_waiting=True)
                running = sum(1 for r in self._runs if r.started)
                log.info("taskq worker %s stopping: finishing %d running task(s), waiting up to "
                         "%.0f s%s", self.worker_id, running, self.drain_timeout,
                         f"; releasing {released} task(s) not started" if released else "")
            if self._call is not None and not self._connected:
                # Still connecting: nothing was delivered, nothing to drain.
                self._call.cancel()
            self._writer_cond.notify()
        self._stop_event.set()

    def stop_now(self) -> None:
        """Like stop() with the drain time already up: running tasks are
        released and told to stop at once."""
        self.stop()
        with self._lock:
            self._drain_deadline = min(self._drain_deadline, time.monotonic())
            self._writer_cond.notify()

    # -- running -----------------------------------------------------------
    def run(self, conn: Any = None) -> None:
        """Serves until stop() (or SIGTERM/SIGINT, see handle_signals);
        returns after the drain. A master that is down or refuses the
        stream is retried with backoff, not an error. Raises TaskqError if
        no connection can be made (bad token file, ...), ValueError for bad
        settings."""
        self.validate()
        if conn is not None:
            self.conn = conn
        owned = None
        if self.conn is None:
            from taskq.connection import connect
            self.conn = owned = connect(keepalive=2.0)
        with self._lock:
            if self._running:
                raise RuntimeError("this Worker is running already")
            self._running = True
            self._free_slots = self.concurrency
        threads = self._start_threads()
        old_handlers = self._install_signals()
        try:
            self._serve()
        finally:
            self._restore_signals(old_handlers)
            self._stop_threads(threads)
            if owned is not None:
                owned.close()
                self.conn = None
            log.info("taskq worker %s stopped", self.worker_id)

    def _serve(self) -> None:
        attempt_delay = BACKOFF_INITIAL
        while True:
            status, connected, healthy = self._run_session()
            with self._lock:
                if self._stopping:
                    break
            if healthy:
                attempt_delay = BACKOFF_INITIAL
            delay = attempt_delay * random.uniform(0.8, 1.2)
            attempt_delay = min(attempt_delay * 2, BACKOFF_MAX)
            code, details = status
            why = f"{code.name if code else 'OK'}: {details}"
            if connected:
                log.info("taskq worker %s disconnected from %s: %s; reconnecting in %d ms",
                         self.worker_id, self.conn.address, why, delay * 1000)
            elif code == grpc.StatusCode.UNAVAILABLE:
                log.info("taskq worker %s cannot reach %s: %s; reconnecting in %d ms",
                         self.worker_id, self.conn.address, why, delay * 1000)
            else:
                log.warning("taskq worker %s: %s refused the stream: %s; reconnecting in %d ms",
                            self.worker_id, self.conn.address, why, delay * 1000)
            self._stop_event.wait(delay)
            with self._lock:
                if self._stopping:
                    break
        self._wait_for_handlers()

    def _run_session(self) -> Tuple[Tuple[Optional[grpc.StatusCode], str], bool, bool]:
        with self._lock:
            if self._stopping:
                return (grpc.StatusCode.CANCELLED, "stopping"), False, False
            self._session += 1
            session = self._session
            self._session_live, self._session_over = True, False
            self._half_closed = self._connected = False
            self._leases.clear()
            self._completions, self._failures, self._releases = [], [], []
            self._reports_sent.clear()
            self._hb_due = self._fence_due = _INF
            # Slots still held by tasks of a dead stream are offered again
            # only when those tasks finish.
            self._credits = max(0, self.concurrency + self.prefetch - len(self._runs))
        started = time.monotonic()
        received = False
        call = self.conn.stub.Work(self._requests(session), metadata=self.conn.metadata)
        with self._lock:
            self._call = call
            if self._stopping and not self._connected:
                call.cancel()
        try:
            for response in call:
                received = True
                self._handle_response(session, response)
        except grpc.RpcError:
            pass  # the status is read below
        except Exception:  # a bug of ours: end this stream, reconnect
            log.exception("taskq worker %s: error while reading the stream", self.worker_id)
            call.cancel()
        except BaseException:
            # KeyboardInterrupt (handle_signals=False) or SystemExit: abort.
            # Ending the stream gives every lease back to the master.
            with self._lock:
                self._stopping = True
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

    # -- the reader --------------------------------------------------------
    def _handle_response(self, session: int, response: Any) -> None:
        inline: List[_Run] = []
        wake_writer = False
        with self._lock:
            for ack in response.acks:
                wake_writer |= self._handle_ack(ack)
            now = time.monotonic()
            live = self._session_live and self._session == session
            if live:
                for ext in response.extended:
                    run = self._leases.get(ext.lease_id)
                    if run is not None and ext.lease_ms_left > 0:
                        left = ext.lease_ms_left / 1000.0
                        run.fence_at = now + left - min(FENCE_MARGIN, left / 4)
            deliveries = response.deliveries
            if deliveries:
                wake_writer |= self._accept(session, live, deliveries, now, inline)
            if not self._connected:
                self._mark_connected()
            if wake_writer and self._writer_waiting:
                self._writer_cond.notify()
        if inline:
            self._run_inline(inline)

    def _accept(self, session: int, live: bool, deliveries: Any, now: float,
                inline: List[_Run]) -> bool:
        """Takes a message's deliveries (lock held); True if the writer must
        look at its plans again."""
        handlers = self._handlers
        leases = self._leases
        wake = False
        hb_due = self._hb_due
        fence_due = self._fence_due
        for d in deliveries:
            task = d.task
            if not live or self._half_closed:
                log.debug("not running task %d: the stream is closing", task.id)
                continue
            if self._stopping:
                log.debug("releasing task %d at once: the worker is stopping", task.id)
                self._releases.append((task.id, d.lease_id, 0))
                wake = True
                continue
            h = handlers.get(task.handler)
            run = _Run(task, d.lease_id, session, h)
            left_ms = d.lease_ms_left
            if left_ms > 0:
                left = left_ms / 1000.0
                every = left / 3
                run.fence_at = now + left - min(FENCE_MARGIN, left / 4)
                if run.fence_at < fence_due:
                    fence_due = run.fence_at
            else:  # an older master: from the deadline, by the wall clock
                left = d.lease_deadline_unix_ms / 1000.0 - time.time()
                every = left / 3 if d.lease_deadline_unix_ms > 0 else MAX_EXTEND_EVERY
            every = MIN_EXTEND_EVERY if every < MIN_EXTEND_EVERY else (
                MAX_EXTEND_EVERY if every > MAX_EXTEND_EVERY else every)
            run.extend_every = every
            run.next_extend = now + every
            if run.next_extend < hb_due:
                hb_due = run.next_extend
            leases[run.lease_id] = run
            self._runs.add(run)
            if h is None or h.inline:
                run.started = True   # runs on this thread, holds no slot
                inline.append(run)
            else:
                self._waiting.append(run)
        if hb_due < self._writer_wake or fence_due < self._writer_wake:
            wake = True
        self._hb_due, self._fence_due = hb_due, fence_due
        if self._waiting:
            self._dispatch(wake_pool=True)
        return wake

    def _run_inline(self, runs: List[_Run]) -> None:
        outcomes = []
        for run in runs:
            outcomes.append(None if run.settled else self._handler_call.execute(run))
        with self._lock:
            for run, outcome in zip(runs, outcomes):
                self._finish(run, outcome, slot=False)
            if self._writer_waiting:
                self._writer_cond.notify()

    def _handle_ack(self, ack: Any) -> bool:
        """One ack (lock held); True if the writer has something new."""
        kind = self._reports_sent.pop(ack.lease_id, None)
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
            run = self._leases.get(ack.lease_id)
            if run is None:
                log.debug("heartbeat for lease %d refused after its task finished: %s",
                          ack.lease_id, why)
                return False
            if status == grpc.StatusCode.CANCELLED:
                log.info("task %d was cancelled: stopping it (%s)", run.task_id, ack.message)
                self._settle(run, _CANCELLED)
            else:
                log.warning("task %d lost its lease %d: %s; stopping it", run.task_id,
                            ack.lease_id, why)
                self._settle(run, _LEASE_LOST)
            return False
        what = {_FAIL: "failure report", _RELEASE: "release"}.get(kind, "result")
        if status == grpc.StatusCode.UNAVAILABLE:
            log.warning("%s for task %d is unsettled: %s", what, ack.task_id, why)
        elif kind is not None and kind != _OK:
            log.warning("%s for task %d not accepted: %s", what, ack.task_id, why)
        elif status == grpc.StatusCode.FAILED_PRECONDITION:
            log.warning("result for task %d discarded: %s", ack.task_id, ack.message)
        elif status == grpc.StatusCode.INVALID_ARGUMENT:
            # E.g. a result larger than the master accepts: the same result
            # would come again, so the task fails for good.
            log.warning("result for task %d refused by the master: %s; reporting the task failed",
                        ack.task_id, why)
            self._failures.append((ack.task_id, ack.lease_id,
                                   clean_error(f"result refused by the master: {ack.message}"),
                                   True))
            return True
        else:
            log.warning("result for task %d not accepted: %s", ack.task_id, why)
        return False

    def _mark_connected(self) -> None:
        if self._connected:
            return
        self._connected = True
        log.info("taskq worker %s connected to %s, queues: %s", self.worker_id,
                 self.conn.address, ", ".join(self.queues))

    def _end_session(self, session: int) -> None:
        with self._lock:
            unsent = len(self._completions) + len(self._failures) + len(self._releases)
            if unsent:
                log.warning("%d report(s) were not sent before the stream ended; the master will "
                            "hand those tasks out again", unsent)
            self._session_live = False
            self._session_over = True
            running = 0
            for run in list(self._runs):
                if run.session != session or run.settled:
                    continue
                running += run.started
                self._settle(run, _STREAM_ENDED)
            if running:
                log.warning("the stream to %s ended: stopping %d running task(s); the master hands "
                            "them out again", self.conn.address, running)
            self._leases.clear()
            self._completions, self._failures, self._releases = [], [], []
            self._reports_sent.clear()
            self._credits = 0
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
            self._writer_cond.notify_all()

    # -- the writer (gRPC's request thread runs this generator) -------------
    def _requests(self, session: int):
        request = pb.WorkRequest()   # reused: gRPC serializes it before asking for the next
        first = True
        confirm_at = _INF
        while True:
            with self._lock:
                while True:
                    if self._session != session or self._session_over:
                        return
                    now = time.monotonic()
                    if not self._connected and now >= confirm_at:
                        self._mark_connected()
                    if now >= self._fence_due:
                        self._fence_lapsed(now)
                    if self._stopping and not self._drain_expired and now >= self._drain_deadline:
                        self._drain_expired = True
                        released = self._release_live(only_waiting=False)
                        if released:
                            log.warning("drain time is up: releasing %d running task(s) to the "
                                        "master and telling them to stop", released)
                    taken = self._take_outbox(first, now)
                    if taken is not None:
                        break
                    if self._stopping and not first and self._live_unsettled() == 0:
                        # Drained: everything is reported or released. Our
                        # half-close lets the master end the stream.
                        self._half_closed = True
                        self._close_timer = threading.Timer(HALF_CLOSE_WAIT, self._close_late,
                                                            args=(session,))
                        self._close_timer.daemon = True
                        self._close_timer.start()
                        return
                    wake = min(self._hb_due - EXTEND_SLACK, self._fence_due)
                    if not self._connected:
                        wake = min(wake, confirm_at)
                    if self._stopping and not self._drain_expired:
                        wake = min(wake, self._drain_deadline)
                    self._writer_wake = wake
                    self._writer_waiting = True
                    self._writer_cond.wait(None if wake == _INF else max(0.0, wake - now))
                    self._writer_waiting = False
                    self._writer_wake = _INF
            self._fill(request, first, taken)
            yield request
            if first:
                first = False
                confirm_at = time.monotonic() + CONFIRM_CONNECTED

    def _take_outbox(self, first: bool, now: float):
        """What the next message carries (lock held), or None."""
        credits = 0 if self._stopping else self._credits
        self._credits = 0
        room = MAX_REPORTS
        sent = self._reports_sent
        releases = self._releases
        if releases:
            if len(releases) > room:
                releases, self._releases = releases[:room], releases[room:]
            else:
                self._releases = []
            room -= len(releases)
            for r in releases:
                sent[r[1]] = _RELEASE
        completions = self._completions
        if completions and room > 0:
            n, size = 0, 0
            for c in completions:
                if n >= room or size >= MAX_BATCH_BYTES:
                    break
                size += len(c[2])
                sent[c[1]] = _OK
                n += 1
            if n == len(completions):
                self._completions = []
            else:
                completions, self._completions = completions[:n], completions[n:]
            room -= n
        else:
            completions = []
        failures = self._failures
        if failures and room > 0:
            n = min(room, len(failures))
            failures, self._failures = failures[:n], failures[n:]
            room -= n
            for f in failures:
                sent[f[1]] = _FAIL
        else:
            failures = []
        extend: List[int] = []
        if now + EXTEND_SLACK >= self._hb_due:
            due = _INF
            limit = now + EXTEND_SLACK
            for lease_id, run in self._leases.items():
                if run.next_extend <= limit and room > 0:
                    room -= 1
                    extend.append(lease_id)
                    run.next_extend = now + run.extend_every
                if run.next_extend < due:
                    due = run.next_extend
            self._hb_due = due
        if first or credits or releases or completions or failures or extend:
            return credits, releases, completions, failures, extend
        return None

    def _fill(self, request: Any, first: bool, taken: tuple) -> None:
        credits, releases, completions, failures, extend = taken
        request.Clear()
        if first:
            request.start.queues.extend(self.queues)
            request.start.worker_id = self.worker_id
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

    def _close_late(self, session: int) -> None:
        with self._lock:
            if self._session != session or self._session_over or self._call is None:
                return
            call = self._call
        log.warning("the master did not end the stream after it was closed; cancelling it")
        call.cancel()

    # -- task lifecycle (lock held unless noted) -----------------------------
    def _dispatch(self, wake_pool: bool, on_loop: bool = False) -> None:
        """Starts waiting runs while slots are free. on_loop: called on the
        loop thread, which starts async runs itself (no self-pipe wake-up)."""
        to_loop = None
        to_pool = False
        while self._free_slots > 0 and self._waiting:
            run = self._waiting.popleft()
            if run.settled:
                continue
            run.started = True
            self._free_slots -= 1
            if run.handler.is_async:
                if on_loop:
                    run.async_task = self._loop.create_task(self._async_main(run))
                    continue
                if to_loop is None:
                    to_loop = []
                to_loop.append(run)
            else:
                self._sync_ready.append(run)
                to_pool = True
        if to_pool and wake_pool and self._idle_pool:
            # One thread; it wakes the next if more are ready (no herd).
            self._pool_cond.notify()
        if to_loop:
            self._loop.call_soon_threadsafe(self._start_async, to_loop)

    def _settle(self, run: _Run, why: str) -> None:
        """Decides a run's outcome: no heartbeats any more, its handler is
        told to stop, its result will not be reported."""
        if run.settled:
            return
        run.settled = why
        if self._leases.get(run.lease_id) is run:
            del self._leases[run.lease_id]
        if run.info is not None:
            run.info._stop.set()
        if run.async_task is not None:
            self._loop.call_soon_threadsafe(run.async_task.cancel)
        if not run.started:
            self._finish(run, None, slot=False)

    def _finish(self, run: _Run, outcome: Optional[tuple], slot: bool) -> None:
        """A run is over (its handler returned, or it never started)."""
        self._runs.discard(run)
        if self._leases.get(run.lease_id) is run:
            del self._leases[run.lease_id]
        if slot:
            self._free_slots += 1
        live = self._session_live and self._session == run.session and not self._half_closed
        if self._session_live and not self._stopping:
            self._credits += 1   # offered on whatever stream is live now
        if run.settled:
            if run.started and run.settled != _RELEASED and run.settled != _STOPPED:
                log.info("task %d stopped: %s, so its result is not reported", run.task_id,
                         run.settled)
        elif not live:
            log.info("result for task %d dropped: the stream it came on has ended, so the master "
                     "already took the task back", run.task_id)
        elif outcome is None:
            pass
        elif outcome[0] == _OK:
            self._completions.append((run.task_id, run.lease_id, outcome[1]))
        elif outcome[0] == _FAIL:
            self._failures.append((run.task_id, run.lease_id, outcome[1], outcome[2]))
        else:
            self._releases.append((run.task_id, run.lease_id, outcome[1]))
        if not self._runs:
            self._idle_cond.notify_all()

    def _release_live(self, only_waiting: bool) -> int:
        if not self._session_live or self._half_closed:
            return 0
        released = 0
        for run in list(self._runs):
            if run.session != self._session or run.settled:
                continue
            if only_waiting and run.started:
                continue
            self._releases.append((run.task_id, run.lease_id, 0))
            self._settle(run, _RELEASED)
            released += 1
        return released

    def _fence_lapsed(self, now: float) -> None:
        due = _INF
        for run in list(self._leases.values()):
            if run.fence_at <= now:
                log.warning("task %d: no heartbeat of lease %d was confirmed in time; the lease "
                            "may run out on the master, which then hands the task to another "
                            "worker: stopping it", run.task_id, run.lease_id)
                self._settle(run, _LEASE_LAPSED)
            elif run.fence_at < due:
                due = run.fence_at
        self._fence_due = due

    def _live_unsettled(self) -> int:
        return sum(1 for r in self._runs if r.session == self._session and not r.settled)

    # -- running handlers (no lock held) ------------------------------------
    def _task_info(self, run: _Run) -> TaskInfo:
        with self._lock:
            if run.info is None:
                run.info = TaskInfo(run.task, run.lease_id, self.worker_id)
                if run.settled:
                    run.info._stop.set()
            return run.info

    def _pool_main(self) -> None:
        run: Optional[_Run] = None
        outcome: Optional[tuple] = None
        lock = self._lock
        with lock:
            while True:
                if run is not None:
                    self._finish(run, outcome, slot=True)
                    if self._waiting:
                        self._dispatch(wake_pool=False)   # this thread takes it next
                    if self._writer_waiting:
                        self._writer_cond.notify()
                    run = None
                while not self._sync_ready:
                    if self._pool_exit:
                        return
                    self._idle_pool += 1
                    self._pool_cond.wait()
                    self._idle_pool -= 1
                run = self._sync_ready.popleft()
                if self._sync_ready and self._idle_pool:
                    self._pool_cond.notify()
                if run.settled:
                    outcome = None
                    continue
                lock.release()
                try:
                    outcome = self._handler_call.execute(run)
                finally:
                    lock.acquire()

    def _start_async(self, runs: List[_Run]) -> None:
        # On the loop thread: the tasks cannot run before this returns. A
        # run settled meanwhile is not cancelled here (a task cancelled
        # before its first step never runs its body, so it would never
        # finish): _async_main sees `settled` and ends at once.
        create = self._loop.create_task
        tasks = [create(self._async_main(run)) for run in runs]
        with self._lock:
            for run, t in zip(runs, tasks):
                run.async_task = t

    async def _async_main(self, run: _Run) -> None:
        outcome = None
        if not run.settled:
            try:
                outcome = await self._handler_call.execute_async(run)
            except asyncio.CancelledError:
                outcome = None  # cancelled before the handler started
        with self._lock:
            run.async_task = None
            self._finish(run, outcome, slot=True)
            if self._waiting:
                self._dispatch(wake_pool=True, on_loop=True)
            if self._writer_waiting:
                self._writer_cond.notify()

    def _wait_for_handlers(self) -> None:
        """No stream can take results any more: stop what still runs and
        wait up to stop_grace for it."""
        with self._lock:
            if not self._runs:
                return
            log.info("stopping %d task(s) whose results can no longer be reported",
                     len(self._runs))
            for run in list(self._runs):
                self._settle(run, _STOPPED)
            deadline = time.monotonic() + self.stop_grace
            while self._runs:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._idle_cond.wait(left)
            if self._runs:
                self._stuck = True
                log.error("%d handler(s) ignored the stop request (a thread cannot be killed); "
                          "their results are dropped", len(self._runs))

    # -- threads and signals -------------------------------------------------
    def _start_threads(self) -> List[threading.Thread]:
        threads = []
        self._pool_exit = False
        if any(not h.is_async and not h.inline for h in self._handlers.values()):
            for i in range(self.concurrency):
                t = threading.Thread(target=self._pool_main, name=f"taskq-worker-{i}", daemon=True)
                t.start()
                threads.append(t)
        if any(h.is_async for h in self._handlers.values()):
            self._loop = asyncio.new_event_loop()
            ready = threading.Event()

            def loop_main() -> None:
                asyncio.set_event_loop(self._loop)
                self._loop.call_soon(ready.set)
                self._loop.run_forever()

            t = threading.Thread(target=loop_main, name="taskq-worker-asyncio", daemon=True)
            t.start()
            ready.wait()
            threads.append(t)
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            t = threading.Thread(target=self._watch_signals, name="taskq-worker-signals",
                                 daemon=True)
            t.start()
            threads.append(t)
        return threads

    def _stop_threads(self, threads: List[threading.Thread]) -> None:
        with self._lock:
            self._pool_exit = True
            self._pool_cond.notify_all()
        self._signals.put(None)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in threads:
            # A stuck handler's thread is a daemon: left behind, not waited for.
            t.join(timeout=0 if self._stuck else 1.0)
        if self._loop is not None and not self._stuck:
            self._loop.close()

    def _install_signals(self) -> Optional[dict]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return None
        old = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            # SimpleQueue.put is safe in a signal handler (reentrant); the
            # watcher thread does the work.
            old[sig] = signal.signal(sig, lambda signum, frame: self._signals.put(signum))
        return old

    def _restore_signals(self, old: Optional[dict]) -> None:
        if old:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _watch_signals(self) -> None:
        seen = 0
        while True:
            signum = self._signals.get()
            if signum is None:
                return
            seen += 1
            name = signal.Signals(signum).name
            if seen == 1:
                log.info("got %s: draining (send it again to stop at once)", name)
                self.stop()
            else:
                log.info("got %s again: stopping now", name)
                self.stop_now()


# google.rpc.Code numbers -> grpc.StatusCode names.
_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}
