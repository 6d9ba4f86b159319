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

This module is the Worker itself: its settings, the handler registration,
run() (threads, signals, the reconnect loop), stop() and stop_now(). It
composes the parts, each in its own module:
  _handler_api.py      PermanentError, ReleaseTask, TaskInfo (exported here)
  _handlers.py         the handler registry
  _handler_call.py     calling one handler: decode, call, encode, failures
  _handler_runners.py  the thread pool, the asyncio loop, inline runs
  _task_runs.py        the tasks held: settle, finish, stop at the end
  _leases.py           heartbeat timing and the fence for lapsed leases
  _outbox.py           credits and reports batched for the writer
  _work_session.py     one Work stream: its reader, writer and acks

Threads: run() reads the stream; gRPC's request thread runs the writer
(the request generator: outbox, heartbeats, drain deadline); `concurrency`
pool threads run plain functions; one asyncio loop thread (only if an
async handler is registered) runs async handlers; a watcher thread turns
signals into stop()/stop_now(). A worker's state is guarded by one lock,
shared by all its parts.

Thread-safety: register handlers before run(); run() once per Worker, from
any thread (signals are handled only when it runs in the main thread);
stop(), stop_now() and the read-only properties are safe from any thread.
"""

from __future__ import annotations

import logging
import os
import queue as _queue
import random
import signal
import socket
import threading
from typing import Any, Callable, List, Mapping, Optional, Sequence

import grpc

from taskq._handler_api import PermanentError, ReleaseTask, TaskInfo
from taskq._handler_call import HandlerCall
from taskq._handler_runners import HandlerRunners
from taskq._handlers import NAME_RE, HandlerRegistry, describe_handler
from taskq._leases import Leases
from taskq._outbox import Outbox
from taskq._task_runs import TaskRuns
from taskq._work_session import WorkSession
from taskq.serializers import Serializer, get_serializer

__all__ = ["PermanentError", "ReleaseTask", "TaskInfo", "Worker", "default_worker_id"]

log = logging.getLogger("taskq.worker")

BACKOFF_INITIAL = 0.1       # reconnect delays, seconds (as the C++ worker)
BACKOFF_MAX = 5.0
MAX_CREDITS = 100000
MAX_QUEUES = 64
MAX_WORKER_ID_BYTES = 256
DEFAULT_STOP_GRACE = 5.0


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

        self._lock = threading.Lock()          # guards the state of every part
        self._stop_event = threading.Event()   # ends the reconnect backoff
        self._signals: "_queue.SimpleQueue[Optional[int]]" = _queue.SimpleQueue()
        self._running = False                  # guarded by _lock
        # The parts read the settings above from this Worker when they use
        # them, so attributes changed before run() count.
        self._handlers = HandlerRegistry()
        leases, outbox = Leases(), Outbox()
        self._runs = TaskRuns(self._lock, self, leases, outbox)
        self._session = WorkSession(self._lock, self, self._handlers, self._runs, None,
                                    leases, outbox)
        self._runners = HandlerRunners(self._lock, HandlerCall(self, self._runs.task_info),
                                       self._session.handler_done)
        self._session.runners = self._runners
        self._runs.stream = self._session

    # -- configuration -----------------------------------------------------
    def validate(self) -> None:
        """Checks the settings (ValueError naming the bad one); run() calls
        it again, so attributes may be changed before run()."""
        if not self.queues:
            raise ValueError("a worker needs at least one queue")
        if len(self.queues) > MAX_QUEUES:
            raise ValueError(f"{len(self.queues)} queues given; a worker serves at most {MAX_QUEUES}")
        for q in self.queues:
            if not isinstance(q, str) or not NAME_RE.fullmatch(q) or q.startswith("."):
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
            self._handlers.add(handler)

    @property
    def handlers(self) -> Mapping[str, Callable]:
        """The registered functions by handler name."""
        return self._handlers.functions()

    @property
    def tasks_in_flight(self) -> int:
        """Deliveries accepted and not finished (running or waiting)."""
        with self._lock:
            return len(self._runs.all)

    @property
    def has_stuck_handlers(self) -> bool:
        """True if run() returned while a handler still ran after being told
        to stop (a thread cannot be killed; its result was dropped)."""
        with self._lock:
            return self._runs.stuck

    # -- stopping ----------------------------------------------------------
    def stop(self) -> None:
        """Graceful drain: take no more tasks, release the ones not started,
        let running ones finish for up to drain_timeout (then release them),
        close the stream; run() then returns. Idempotent; any thread."""
        self._session.drain(self.drain_timeout)
        self._stop_event.set()

    def stop_now(self) -> None:
        """Like stop() with the drain time already up: running tasks are
        released and told to stop at once."""
        self.stop()
        self._session.drain_now()

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
            self._runners.free_slots = self.concurrency
        self._runners.start(self._handlers, self.concurrency)
        watcher = self._start_signal_watcher()
        old_handlers = self._install_signals()
        try:
            self._serve()
        finally:
            self._restore_signals(old_handlers)
            self._signals.put(None)
            self._runners.stop(self._runs.stuck)
            if watcher is not None:
                watcher.join(timeout=0 if self._runs.stuck else 1.0)
            if owned is not None:
                owned.close()
                self.conn = None
            log.info("taskq worker %s stopped", self.worker_id)

    def _serve(self) -> None:
        """Streams one after another, with backoff between them, until
        stopped; then stops what still runs."""
        attempt_delay = BACKOFF_INITIAL
        while True:
            status, connected, healthy = self._session.run_session()
            if self._stopping():
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
            if self._stopping():
                break
        self._runs.stop_all(self.stop_grace)

    def _stopping(self) -> bool:
        with self._lock:
            return self._session.stopping

    # -- signals -----------------------------------------------------------
    def _start_signal_watcher(self) -> Optional[threading.Thread]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return None
        t = threading.Thread(target=self._watch_signals, name="taskq-worker-signals", daemon=True)
        t.start()
        return t

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
