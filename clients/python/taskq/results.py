"""Reading a job's results into futures: one background reader thread per
reply queue, each task's future resolved exactly once.

What `taskq submit --wait` does (common/result_reader.h), for Python
futures. The reader takes result messages with a short lease (Get in LEASE
mode) and acknowledges each one only after it has been handed to its
future; the acknowledgement rides on the next Get (`GetRequest.acks`). A
reply lost on the way (network cut, master restart) leaves its results
leased on the master; the lease lapses and they come again. A result that
comes again after its future was resolved (its acknowledgement was lost) is
recognised by its task id (`result_of`): the future is no longer pending,
so the copy is acknowledged and dropped. Each future resolves once.

The thread of a reply queue starts with the first submission to it and
ends when every future it serves is resolved (or cancelled) and nobody is
submitting to it any more; a private queue (`_results.<random>`) is then
deleted. It also ends when the connection is closed: futures still pending
get a TaskqError (CANCELLED).

Thread-safety: everything here may be used from any thread. Futures'
done-callbacks run on the reader thread (or the submitting thread, for a
result that came before its Put returned): a callback that blocks holds up
every result of its reply queue.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import secrets
import threading
import weakref
from typing import Any, Dict, List, Optional, Tuple

import grpc

from taskq._stubs import pb
from taskq.connection import RETRY_ALWAYS, Connection
from taskq.errors import TaskqError
from taskq.serializers import Serializer

log = logging.getLogger("taskq")

# How long one Get long-polls for results. A reader notices that it has
# nothing left to wait for (a future cancelled by another thread) within
# this time.
POLL_S = 1.0
# Results per Get, and acknowledgements per Get or Ack (kMaxTasksPerGet).
MAX_PER_GET = 1000
# The default lease on a result taken by the reader: a reply lost on the
# way is delivered again this long after it was sent (as the CLI).
DEFAULT_RESULT_LEASE_S = 10.0
# A pause after a failed poll, so a master that answers every call at once
# with an error we wait out (e.g. CANCELLED while it shuts down) is not
# polled in a busy loop.
ERROR_PAUSE_S = 0.2
# Cleanup calls (final acks, deleting the private queue) must not hold the
# thread for long.
CLEANUP_TIMEOUT_S = 5.0


class TaskFailed(Exception):
    """The task was given up: its handler failed permanently, or it failed
    or its lease expired on every one of the queue's `max_attempts`.

    `task_id` is the task's id, `error` the last error text (the handler's
    message, e.g. `"abc" is not an integer`).
    """

    def __init__(self, task_id: int, error: str):
        super().__init__(f"task {task_id} failed: {error}")
        self.task_id = task_id
        self.error = error

    def __reduce__(self):  # picklable with its fields
        return (TaskFailed, (self.task_id, self.error))


class TaskFuture(concurrent.futures.Future):
    """The future of one task (a real concurrent.futures.Future, so
    `as_completed`, `wait` and done-callbacks work).

    `task_id` is the task's id on the master, `queue` the queue it was put
    on, `reply_to` the queue its result comes to. A CANCELLED result (the
    task was cancelled, purged, or dropped by a queue shutdown) puts the
    future in the cancelled state: `cancelled()` is True, `result()` raises
    concurrent.futures.CancelledError, and `cancel_reason` holds the
    master's text.
    """

    def __init__(self, task_id: int, queue: str, reply_to: str, reader: "ResultReader"):
        super().__init__()
        self.task_id = task_id
        self.queue = queue
        self.reply_to = reply_to
        self.cancel_reason: Optional[str] = None
        self._reader = reader

    def __repr__(self) -> str:
        return f"<TaskFuture task {self.task_id} on {self.queue!r}: {super().__repr__()}>"

    def cancel(self) -> bool:
        """Cancels the task on the master (CancelTask), then this future.

        True if the future is cancelled: the task had not finished, and is
        removed (ready, delayed) or told to stop (running: its lease is
        revoked, so a result it still produces is refused). False if it had
        finished already: its result is on the way and resolves this
        future. Never raises: a master out of reach means False.
        """
        if self.done():
            return self.cancelled()
        try:
            self._reader.conn.call("CancelTask", pb.CancelTaskRequest(task_id=self.task_id),
                                   timeout=10.0, retry=RETRY_ALWAYS)
        except (TaskqError, ValueError) as e:
            # FAILED_PRECONDITION: finished (or cancelled by a first attempt
            # whose reply was lost: then the CANCELLED result resolves this
            # future). NOT_FOUND: long gone. ValueError: connection closed.
            log.debug("taskq: cancelling task %d: %s", self.task_id, e)
            return self.cancelled()
        self.cancel_reason = "cancelled by this client"
        if super().cancel():
            self._reader.forget(self)
        return self.cancelled()

    # Used by the reader: the local state change only.
    def _cancel_local(self, reason: str) -> None:
        self.cancel_reason = reason
        super().cancel()


def cancel_all(futures: List[TaskFuture], timeout: float = 10.0) -> int:
    """Cancels many tasks at once (CancelTask calls in parallel, not one
    round trip after another), then their futures; returns how many were
    cancelled. A task that finished meanwhile keeps its future, which its
    result resolves; so does one whose cancel did not reach the master
    within `timeout` (no retries: this is a best effort at cleanup)."""
    calls = []
    for future in futures:
        if future.done():
            continue
        try:
            request = pb.CancelTaskRequest(task_id=future.task_id)
            conn = future._reader.conn
            call = conn.stub_for("CancelTask", request).CancelTask.future(
                request, timeout=timeout, metadata=conn.metadata)
        except ValueError:  # the connection is closed
            break
        calls.append((future, call))
    cancelled = 0
    for future, call in calls:
        try:
            call.result()
        except grpc.RpcError:
            continue
        future.cancel_reason = "cancelled by this client"
        if concurrent.futures.Future.cancel(future):
            future._reader.forget(future)
            cancelled += 1
    return cancelled


# One pending task: its future and the serializer its result is decoded with.
_Entry = Tuple[TaskFuture, Serializer]


def drop_traceback(error: BaseException) -> None:
    """Unlinks a caught error (and its context) from its traceback.

    An error that is kept (or caught by code that keeps it) holds every
    frame of its traceback, and their locals (a map's iterator, a request
    full of payloads); errors we catch and handle do not need it. (It once
    also broke a cycle through Connection.call, which no longer keeps the
    error it raises: test_connection.py checks that.)"""
    seen = 0
    while error is not None and seen < 8:
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
        seen += 1


def random_result_queue_name() -> str:
    """`_results.<16 hex digits>`, as the CLI's RandomResultQueueName."""
    return f"_results.{secrets.token_hex(8)}"


class ResultReader:
    """Reads one reply queue and resolves the futures registered with it.

    Use `acquire_reader()` (it shares one reader per reply queue and
    connection), then per Put: `begin_put()` before sending it and
    `end_put()` with its ids, and `release()` once done submitting.
    """

    def __init__(self, conn: Connection, queue: str, *, private: bool,
                 lease_s: float = DEFAULT_RESULT_LEASE_S):
        self.conn = conn
        self.queue = queue
        self.private = private
        self.lease_ms = max(100, int(lease_s * 1000))
        # Submitters using this reader; changed under _registry_lock only,
        # so that a reader that decided to stop is never handed out again.
        self._holds = 0
        self.stopping = False
        self._lock = threading.Lock()
        self._pending: Dict[int, _Entry] = {}  # task id -> its future
        # Results whose task id is not known yet: their Put may be on its
        # way back (a fast worker finishes before the put's reply arrives).
        # Kept, unacknowledged, while a Put is in flight.
        self._early: Dict[int, Tuple[Any, Any]] = {}  # result_of -> (message, lease)
        self._puts_in_flight = 0
        self._acks: List[Any] = []  # LeaseRefs of results handed out or dropped
        # Submissions dropped without closing (garbage collected): their
        # futures to cancel and their hold to release, done by the reader
        # thread, since a finalizer may run anywhere (even where a lock of
        # ours is held) and must take none.
        self._abandoned: "collections.deque[List[TaskFuture]]" = collections.deque()
        # Set when the reader stopped on an error: futures registered later
        # get it at once.
        self._failure: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=f"taskq-results-{queue}",
                                        daemon=True)
        # Counters (for tests and the curious): results handed to futures,
        # and results dropped (copies of ones handed out, or not ours).
        self.resolved = 0
        self.dropped = 0

    # -- submitters -------------------------------------------------------
    def begin_put(self) -> None:
        """A Put of tasks for this reply queue is about to be sent."""
        with self._lock:
            self._puts_in_flight += 1

    def end_put(self, entries: List[Tuple[int, TaskFuture, Serializer]]) -> None:
        """The Put returned these (task id, future, serializer), or failed
        (empty list). Results that came before it are matched now."""
        matched = []
        with self._lock:
            self._puts_in_flight -= 1
            failure = self._failure
            if failure is None:
                for task_id, future, serializer in entries:
                    self._pending[task_id] = (future, serializer)
            for task_id, _, _ in entries:
                early = self._early.pop(task_id, None)
                if early is not None:
                    matched.append((self._pending.pop(task_id), early[0], early[1]))
            if self._puts_in_flight == 0 and self._early:
                # Nothing on its way can claim them: copies of results
                # handed out already, or results of someone else's tasks.
                self.dropped += len(self._early)
                self._acks.extend(lease for _, lease in self._early.values())
                self._early.clear()
        if failure is not None:
            for _, future, _ in entries:
                _set(future, exception=failure)
        self._hand_out(matched)

    def release(self) -> None:
        """This submitter is done submitting."""
        with _registry_lock:
            self._holds -= 1

    def abandon(self, futures: List[TaskFuture]) -> None:
        """A submitter dropped without release(): the reader thread
        cancels `futures` and releases its hold. Takes no lock."""
        self._abandoned.append(futures)

    def forget(self, future: TaskFuture) -> None:
        """A future cancelled by its owner: no longer waited for."""
        with self._lock:
            entry = self._pending.get(future.task_id)
            if entry is not None and entry[0] is future:
                del self._pending[future.task_id]

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- the thread -------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _closed(self) -> bool:
        return bool(getattr(self.conn, "_closed", False))

    def _maybe_stop(self) -> bool:
        with _registry_lock:
            with self._lock:
                if self._holds or self._pending or self._puts_in_flight:
                    return False
                self.stopping = True
            _unregister(self)
            return True

    def _run(self) -> None:
        failure: Optional[BaseException] = None
        try:
            failure = self._poll_until_done()
        except BaseException as e:  # a bug: do not leave futures hanging
            log.exception("taskq: result reader of %s failed", self.queue)
            failure = e
        if failure is not None:
            with _registry_lock:
                self.stopping = True
                _unregister(self)
            with self._lock:
                self._failure = failure
            self._fail_pending(failure)
            return
        self._cleanup()

    def _poll_until_done(self) -> Optional[BaseException]:
        """Polls until nothing is left to wait for (None), or returns the
        error the pending futures get."""
        pause = threading.Event()  # never set: an interruptible sleep
        while True:
            while self._abandoned:
                cancel_all(self._abandoned.popleft())
                self.release()
            if self._maybe_stop():
                return None
            if self._closed():
                return TaskqError(grpc.StatusCode.CANCELLED,
                                  "the connection was closed before the task's result came")
            with self._lock:
                sending = self._acks[:MAX_PER_GET]
            request = pb.GetRequest(queue=self.queue, max_tasks=MAX_PER_GET,
                                    timeout_ms=int(POLL_S * 1000), mode=pb.GET_MODE_LEASE,
                                    lease_ms=self.lease_ms, acks=sending)
            try:
                response = self.conn.call("Get", request, timeout=POLL_S + 10.0,
                                          retry=RETRY_ALWAYS)
            except ValueError:  # grpc: "Cannot invoke RPC on closed channel!"
                continue  # the top of the loop sees the connection closed
            except TaskqError as e:
                drop_traceback(e)
                if e.code == grpc.StatusCode.DEADLINE_EXCEEDED and e.details != "Deadline Exceeded":
                    # The master's "empty": it applied the acks.
                    self._drop_sent_acks(len(sending))
                    continue
                if e.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                              grpc.StatusCode.CANCELLED):
                    # Master out of reach (the call retried for its window),
                    # restarting, or the channel closing: the acks may not
                    # have arrived (sent again: a lease no longer held is
                    # skipped), and what was in flight comes again.
                    pause.wait(ERROR_PAUSE_S)
                    continue
                return TaskqError(e.code, f"reading results from {self.queue}: {e.details}")
            self._drop_sent_acks(len(sending))
            self._take(response.deliveries)

    def _drop_sent_acks(self, n: int) -> None:
        with self._lock:
            del self._acks[:n]

    def _take(self, deliveries) -> None:
        matched = []
        with self._lock:
            for d in deliveries:
                message = d.task
                lease = pb.LeaseRef(task_id=message.id, lease_id=d.lease_id)
                entry = self._pending.pop(message.result_of, None)
                if entry is not None:
                    matched.append((entry, message, lease))
                elif self._puts_in_flight:
                    old = self._early.get(message.result_of)
                    if old is not None:
                        self._acks.append(old[1])
                    self._early[message.result_of] = (message, lease)
                else:
                    self.dropped += 1
                    self._acks.append(lease)
        self._hand_out(matched)

    def _hand_out(self, matched) -> None:
        """Resolves the futures, then queues the acknowledgements: a result
        is acknowledged only once its future has it."""
        if not matched:
            return
        for (future, serializer), message, _ in matched:
            _resolve(future, serializer, message)
        with self._lock:
            self.resolved += len(matched)
            self._acks.extend(lease for _, _, lease in matched)

    def _fail_pending(self, error: BaseException) -> None:
        with self._lock:
            entries = list(self._pending.values())
            self._pending.clear()
            self._early.clear()
        for future, _ in entries:
            _set(future, exception=error)

    def _cleanup(self) -> None:
        """Every future is resolved: the last acks, and the private queue
        goes (with whatever copies are left in it)."""
        if self._closed():
            return
        try:
            if self.private:
                self.conn.call("DeleteQueue", pb.DeleteQueueRequest(queue=self.queue),
                               timeout=CLEANUP_TIMEOUT_S, retry=RETRY_ALWAYS,
                               retry_for=CLEANUP_TIMEOUT_S)
                return
            with self._lock:
                acks, self._acks = self._acks, []
            for i in range(0, len(acks), MAX_PER_GET):
                self.conn.call("Ack", pb.AckRequest(leases=acks[i:i + MAX_PER_GET]),
                               timeout=CLEANUP_TIMEOUT_S, retry=RETRY_ALWAYS,
                               retry_for=CLEANUP_TIMEOUT_S)
        except (TaskqError, ValueError) as e:
            # Nothing is lost: unacknowledged copies come again to a later
            # reader of this queue (and are dropped there if it is ours); a
            # private queue left behind expires after the master's
            # --results-ttl.
            log.info("taskq: cleaning up result queue %s: %s", self.queue, e)

    def join(self, timeout: Optional[float] = None) -> None:
        """Waits for the reader thread to end (tests)."""
        if self._thread.is_alive():
            self._thread.join(timeout)


def _set(future: TaskFuture, *, result: Any = None,
         exception: Optional[BaseException] = None) -> None:
    """Resolves `future` unless it is done already (cancelled meanwhile by
    its owner)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def _resolve(future: TaskFuture, serializer: Serializer, message: Any) -> None:
    """Resolves `future` from its task's result message."""
    if message.outcome == pb.OUTCOME_FAILED:
        _set(future, exception=TaskFailed(message.result_of, message.error))
    elif message.outcome == pb.OUTCOME_CANCELLED:
        future._cancel_local(message.error or "cancelled")
    else:
        try:
            value = serializer.decode(message.payload, Serializer.tag_of(message.headers))
        except ValueError as e:  # a pickled result without opting in; bad JSON
            _set(future, exception=e)
        else:
            _set(future, result=value)


# Readers by connection, then by reply queue (None: the connection's
# private queue). A connection that is garbage collected takes its entry
# with it.
_registry_lock = threading.Lock()
_readers: "weakref.WeakKeyDictionary[Connection, Dict[Optional[str], ResultReader]]" = \
    weakref.WeakKeyDictionary()


def _unregister(reader: ResultReader) -> None:
    # Called with _registry_lock held.
    by_queue = _readers.get(reader.conn)
    if by_queue is None:
        return
    for key, r in list(by_queue.items()):
        if r is reader:
            del by_queue[key]


def _hold_existing(conn: Connection, key: Optional[str]) -> Optional[ResultReader]:
    # Called with _registry_lock held.
    reader = _readers.get(conn, {}).get(key)
    if reader is None or reader.stopping:
        return None
    reader._holds += 1
    return reader


def acquire_reader(conn: Connection, reply_to: Optional[str],
                   lease_s: float = DEFAULT_RESULT_LEASE_S,
                   for_queue: Optional[str] = None) -> ResultReader:
    """The reader of `reply_to` on `conn` (None: the connection's private
    `_results.<random>` queue, created here), started and held for a
    submission: call `release()` when done submitting."""
    # Cluster mode: a task's results stay on its queue's master
    # (docs/CLUSTER.md), so the private queue is one per master, made on
    # the master of `for_queue`.
    on = conn.master_of(for_queue, place=True) if reply_to is None and for_queue else ""
    key: Any = ("@", on) if on else reply_to
    with _registry_lock:
        reader = _hold_existing(conn, key)
        if reader is not None:
            return reader
    queue = reply_to
    if queue is None:
        queue = random_result_queue_name()
        # exist_ok: sent again after a lost reply, the create must not fail
        # on the queue it made (the name is random: nobody else's). Made
        # before any task names it, so a producer credential owns it.
        conn.call("CreateQueue", pb.CreateQueueRequest(config=pb.QueueConfig(name=queue),
                                                       exist_ok=True, on=on),
                  timeout=30.0, retry=RETRY_ALWAYS)
    with _registry_lock:
        reader = _hold_existing(conn, key)
        if reader is None:
            reader = ResultReader(conn, queue, private=reply_to is None, lease_s=lease_s)
            reader._holds = 1
            _readers.setdefault(conn, {})[key] = reader
            reader.start()
            return reader
    # Another thread made the private queue meanwhile: ours goes.
    try:
        conn.call("DeleteQueue", pb.DeleteQueueRequest(queue=queue), timeout=CLEANUP_TIMEOUT_S)
    except TaskqError:
        pass
    return reader


def readers_of(conn: Connection) -> List[ResultReader]:
    """The readers running for `conn` (tests and diagnostics)."""
    with _registry_lock:
        return list(_readers.get(conn, {}).values())
