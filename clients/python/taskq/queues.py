"""taskq.queues.Queue: Python's queue.Queue, served by a taskq master.

    q = conn.queue("tasks")                      # as the master has it
    q = conn.queue("jobs", kind="priority", maxsize=100)
    q.put("7"); q.put(b"raw", priority=-1)       # lower priority first
    item = q.get(timeout=5)                      # queue.Empty after 5 s
    q.task_done(); q.join()

The queue lives on the master: every Queue object with the same name, in
any process on any machine, is the same queue. `kind` and `maxsize` are the
master's settings of that queue, shared by all its clients.

Delivery: get() leases the item, then acknowledges it (Ack with
manual_task_done), and returns it only once the master has taken the
acknowledgement. A reply lost on the way (network cut, master restart)
loses nothing: the lease lapses and the item comes again. An
acknowledgement whose answer was lost is checked with the master; where it
cannot tell, the item is returned and may come twice (at-least-once). put() gives every task a random
dedup key, so a put sent again after a lost reply is stored once.

Thread-safety: a Queue is safe to share between threads (a producer thread
and any number of consumer threads), as queue.Queue is: each call is its
own RPC on the connection's thread-safe channel; the only state kept here
is the queue's settings, under a lock.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

import grpc

from taskq._stubs import pb
from taskq.connection import RETRY_ALWAYS, RETRY_IF_NOT_SENT, Connection
from taskq.errors import TaskqError
from taskq.serializers import Serializer, get_serializer

KINDS = {
    "fifo": pb.QUEUE_KIND_FIFO,
    "lifo": pb.QUEUE_KIND_LIFO,
    "priority": pb.QUEUE_KIND_PRIORITY,
}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
_KIND_NAMES[pb.QUEUE_KIND_UNSPECIFIED] = "fifo"

# A wait without end (timeout=None) is a loop of long-polls this long, so a
# master that went away is noticed within one slice plus the connection's
# retry window, and never by a call that hangs forever.
POLL_SLICE_S = 30.0
# Added to the master's own wait for the call's deadline: the reply's way
# back. The master answers at the end of its wait; this only bounds a call
# whose reply never comes.
CALL_MARGIN_S = 5.0
# Calls that do not wait on the master (nowait, stats, acks).
SHORT_CALL_S = 30.0
# How long a get's lease lasts before the item goes back to the queue if
# its acknowledgement never arrives (the queue's lease_ms is for workers).
DEFAULT_LEASE_S = 30.0
# Put batches: at most 10000 tasks per PutRequest (proto), and 4 MiB, as
# the C++ client sends them (common/client.cc): the master accepts requests
# of max(8 MiB, 2 x --max-payload-bytes + 1 MiB), far below gRPC's 64 MiB
# (MAX_MESSAGE_BYTES); a single larger task goes alone.
MAX_TASKS_PER_PUT = 10000
MAX_PUT_BYTES = 4 << 20
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1

ItemSerializer = Union[None, str, Serializer]


def _is_full(e: TaskqError) -> bool:
    # "queue full" (wait for room) versus the other RESOURCE_EXHAUSTED
    # refusals (memory budget, disk full, --max-queues), which are errors:
    # master/engine/task_engine.cc words it 'queue "X" is full (maxsize N)'.
    return e.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "is full (maxsize" in e.details


def _deadline(block: bool, timeout: Optional[float]) -> Optional[float]:
    """monotonic() time a call gives up at: None = never; now = at once."""
    if not block:
        return time.monotonic()
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return time.monotonic() + timeout


def _ms(seconds: float) -> int:
    return max(1, min(int(math.ceil(seconds * 1000)), 2 ** 32 - 1))


class Queue:
    """A named queue on a taskq master with the interface of queue.Queue.

    Made by `Connection.queue(name, kind=None, maxsize=None, serializer=None,
    lease=30.0)`. kind ("fifo", "lifo", "priority") and maxsize (0 or less:
    unbounded) given: the queue is created so, or must already be so
    (ValueError otherwise). Left out: the queue is used as the master has it
    (created fifo and unbounded if it does not exist).

    serializer: None (bytes and str), "json" or "pickle" (any picklable
    object; unpickling runs code chosen by whoever put the item, so only a
    reader that opts in unpickles). Items come back as the type they were
    put, decoded by the tag each task carries (taskq.serializers).

    lease: seconds an item taken by get() stays reserved while its
    acknowledgement is on the way (100 ms .. 24 h); after a lost reply it
    is delivered again once this has passed.
    """

    def __init__(self, conn: Connection, name: str, *, kind: Optional[str] = None,
                 maxsize: Optional[int] = None, serializer: ItemSerializer = None,
                 lease: float = DEFAULT_LEASE_S):
        if not isinstance(name, str) or not name:
            raise ValueError("a queue needs a name (1-128 characters of [A-Za-z0-9_.:-])")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown queue kind {kind!r}: use 'fifo', 'lifo' or 'priority'")
        if maxsize is not None:
            maxsize = max(0, int(maxsize))  # as queue.Queue: <= 0 is unbounded
        if not 0.1 <= lease <= 86400:
            raise ValueError("lease must be between 0.1 s and 24 h")
        self.conn = conn
        self.name = name
        self.serializer = serializer if isinstance(serializer, Serializer) else get_serializer(serializer)
        self.lease = float(lease)
        self._lock = threading.Lock()
        self._config: Optional[pb.QueueConfig] = None  # guarded by _lock
        try:
            self._attach(kind, maxsize)
        except TaskqError as e:
            if e.code == grpc.StatusCode.INVALID_ARGUMENT:  # a bad name
                raise ValueError(e.details) from None
            raise

    def __repr__(self) -> str:
        with self._lock:  # as last read: no call to the master here
            config = self._config
        settings = "" if config is None else \
            f" kind={_KIND_NAMES.get(config.kind, 'fifo')} maxsize={config.maxsize}"
        return f"<taskq.Queue {self.name!r}{settings} at {self.conn.address}>"

    # -- settings ----------------------------------------------------------
    def _attach(self, kind: Optional[str], maxsize: Optional[int]) -> None:
        """Finds the queue's settings, creating it if it does not exist, and
        checks the ones the caller asked for."""
        config: Optional[pb.QueueConfig] = None
        try:
            config = self._stats().config
        except TaskqError as e:
            if e.code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                raise
        if config is None:
            want = pb.QueueConfig(name=self.name, kind=KINDS[kind or "fifo"], maxsize=maxsize or 0)
            try:
                config = self.conn.call("CreateQueue", pb.CreateQueueRequest(config=want, exist_ok=True),
                                        timeout=SHORT_CALL_S).config
            except TaskqError as e:
                if e.code == grpc.StatusCode.ALREADY_EXISTS:
                    # Someone else made it, with other settings somewhere.
                    config = self._stats().config
                elif e.code == grpc.StatusCode.PERMISSION_DENIED and kind is None and maxsize is None:
                    # A credential that may only put or only get: use the
                    # queue as it is; it is made on first use by the master.
                    config = None
                elif e.code == grpc.StatusCode.PERMISSION_DENIED:
                    raise TaskqError(e.code, f"{e.details}; cannot create or check queue "
                                             f"{self.name!r}: leave out kind= and maxsize= to use "
                                             "it as the master has it") from None
                else:
                    raise
        if config is not None:
            have_kind = _KIND_NAMES.get(config.kind, "fifo")
            if (kind is not None and have_kind != kind) or (maxsize is not None and
                                                             config.maxsize != maxsize):
                asked = ", ".join(p for p in (f"kind={kind!r}" if kind is not None else "",
                                              f"maxsize={maxsize}" if maxsize is not None else "") if p)
                raise ValueError(
                    f"queue {self.name!r} exists on the master with kind={have_kind!r}, "
                    f"maxsize={config.maxsize}, not {asked}: leave kind= and maxsize= out to use "
                    f"it as it is, or delete it first (taskq queue delete {self.name})")
        with self._lock:
            self._config = config

    def _stats(self) -> "pb.QueueStats":
        st = self.conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=self.name),
                            timeout=SHORT_CALL_S)
        with self._lock:
            self._config = st.config
        return st

    def _known_config(self) -> Optional["pb.QueueConfig"]:
        with self._lock:
            if self._config is not None:
                return self._config
        try:
            return self._stats().config
        except TaskqError:
            return None

    @property
    def kind(self) -> Optional[str]:
        """"fifo", "lifo" or "priority" (None: this credential may not read it)."""
        config = self._known_config()
        return None if config is None else _KIND_NAMES.get(config.kind, "fifo")

    @property
    def maxsize(self) -> Optional[int]:
        """The master's maxsize of this queue, 0 = unbounded (None: this
        credential may not read it). As of the last call that read it."""
        config = self._known_config()
        return None if config is None else config.maxsize

    def stats(self) -> "pb.QueueStats":
        """The master's counters of this queue (taskq.v1.QueueStats)."""
        return self._stats()

    # -- sizes (approximate, as queue.Queue's are across threads) ----------
    def qsize(self) -> int:
        """Items waiting: ready + delayed (not those being processed)."""
        try:
            st = self._stats()
        except TaskqError as e:
            if e.code == grpc.StatusCode.NOT_FOUND:
                return 0
            raise
        return st.ready + st.delayed

    def empty(self) -> bool:
        """True if qsize() == 0 (a put may follow at once)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """True if maxsize > 0 and ready + delayed + leased >= maxsize."""
        try:
            st = self._stats()
        except TaskqError as e:
            if e.code == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        m = st.config.maxsize
        return m > 0 and st.ready + st.delayed + st.leased >= m

    # -- put ---------------------------------------------------------------
    def _spec(self, item: Any, priority: int) -> "pb.TaskSpec":
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise TypeError("priority must be an int")
        if not INT32_MIN <= priority <= INT32_MAX:
            raise ValueError("priority must fit in 32 bits")
        if priority:
            with self._lock:
                config = self._config
            if config is not None and config.kind != pb.QUEUE_KIND_PRIORITY:
                raise ValueError(f"queue {self.name!r} is {_KIND_NAMES.get(config.kind, 'fifo')}: "
                                 "priority= needs a queue made with kind='priority'")
        payload, tag = self.serializer.encode(item)
        return pb.TaskSpec(payload=payload, priority=priority,
                           headers=self.serializer.headers_for(tag))

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None, *,
            priority: int = 0) -> None:
        """Puts `item` on the queue, waiting for room in a full one.

        block=False: queue.Full at once if there is no room. timeout: wait
        at most that many seconds, then queue.Full. timeout=None waits as
        long as it takes. priority: priority queues hand out the lowest
        first. TypeError if the queue's serializer cannot carry `item`;
        TaskqError for what the master refuses otherwise (e.g. its memory
        budget: retry later).
        """
        self._put_specs([self._spec(item, priority)], _deadline(block, timeout), _new_dedup_prefix())

    def put_nowait(self, item: Any, *, priority: int = 0) -> None:
        """put(item, block=False)."""
        self.put(item, block=False, priority=priority)

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: Optional[float] = None,
                 *, priority: int = 0) -> int:
        """Puts every item of `items`, in order, with few round trips:
        batches of up to 10000 items and 4 MiB (never more than maxsize),
        each stored atomically. Returns how many were put.

        block/timeout as put(), for the whole call. On queue.Full the
        exception's `put_count` says how many items were put before it.
        """
        deadline = _deadline(block, timeout)
        prefix = _new_dedup_prefix()
        try:
            config: Optional[pb.QueueConfig] = self._stats().config  # maxsize as of now
        except TaskqError:
            config = self._known_config()  # a credential that may not read it
        per_batch = MAX_TASKS_PER_PUT
        if config is not None and config.maxsize:
            per_batch = min(per_batch, config.maxsize)
        done = 0
        for batch in _batches((self._spec(i, priority) for i in items), per_batch, MAX_PUT_BYTES):
            try:
                self._put_specs(batch, deadline, prefix, first_index=done)
            except queue.Full as e:
                e.put_count = done  # type: ignore[attr-defined]
                raise
            done += len(batch)
        return done

    def _put_specs(self, specs: List["pb.TaskSpec"], deadline: Optional[float], prefix: str,
                   first_index: int = 0) -> List[int]:
        # A key per task, the same on every attempt: a put sent again after
        # its reply was lost (cut, master restart, our own deadline) finds
        # the tasks stored the first time and stores nothing more.
        for i, spec in enumerate(specs):
            spec.dedup_key = f"{prefix}{first_index + i}"
        req = pb.PutRequest(queue=self.name, tasks=specs)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                # No time (left): one try that does not wait.
                req.nowait, req.timeout_ms = True, 0
                try:
                    return list(self.conn.call("Put", req, timeout=SHORT_CALL_S,
                                               retry=RETRY_ALWAYS).ids)
                except TaskqError as e:
                    if _is_full(e):
                        raise queue.Full from None
                    raise
            wait = POLL_SLICE_S if left is None else min(left, POLL_SLICE_S)
            req.nowait, req.timeout_ms = False, _ms(wait)
            try:
                return list(self.conn.call("Put", req, timeout=wait + CALL_MARGIN_S,
                                           retry=RETRY_ALWAYS).ids)
            except TaskqError as e:
                # Full after this slice, or our deadline passed on the way:
                # wait on (same keys), or end with the try above.
                if not (_is_full(e) or e.code == grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise

    # -- get ---------------------------------------------------------------
    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Removes and returns an item, waiting for one.

        block=False: queue.Empty at once if none is ready. timeout: wait at
        most that many seconds, then queue.Empty. timeout=None waits as long
        as it takes. ValueError (and the item goes to the queue's
        dead-letter set, untouched) if the item cannot be decoded here: a
        pickled item read without serializer="pickle", or a malformed one.
        """
        deadline = _deadline(block, timeout)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            req = pb.GetRequest(queue=self.name, max_tasks=1, mode=pb.GET_MODE_LEASE,
                                lease_ms=_ms(self.lease))
            if left is not None and left <= 0:
                req.nowait = True
                call_timeout = SHORT_CALL_S
            else:
                wait = POLL_SLICE_S if left is None else min(left, POLL_SLICE_S)
                req.timeout_ms = _ms(wait)
                call_timeout = wait + CALL_MARGIN_S
            try:
                resp = self.conn.call("Get", req, timeout=call_timeout, retry=RETRY_ALWAYS)
            except TaskqError as e:
                # DEADLINE_EXCEEDED: empty for this long (from the master),
                # or our own deadline passed (a lease handed out just then
                # lapses and the item comes again).
                if e.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                if req.nowait:
                    raise queue.Empty from None
                continue
            for d in resp.deliveries:
                ok, item = self._accept(d)
                if ok:
                    return item
            # The lease lapsed before our acknowledgement reached the
            # master: the item is someone else's now, or comes again.

    def get_nowait(self) -> Any:
        """get(block=False)."""
        return self.get(block=False)

    def _accept(self, d: "pb.Delivery") -> Tuple[bool, Any]:
        """Decodes a leased item, then acknowledges it. (True, item) if it
        is ours; (False, None) if the lease was lost before the ack."""
        task = d.task
        try:
            item = self.serializer.decode(task.payload, Serializer.tag_of(task.headers))
        except Exception as e:  # noqa: BLE001 - whatever the decoder raised
            self._dead_letter(d, e)
            raise ValueError(f"task {task.id} on queue {self.name!r} cannot be read here: {e}; "
                             f"it was moved to the queue's dead-letter set (taskq dlq list "
                             f"{self.name})") from e
        return self._ack(d), item

    def _ack(self, d: "pb.Delivery") -> bool:
        ref = pb.LeaseRef(task_id=d.task.id, lease_id=d.lease_id)
        # manual_task_done: the item counts as unfinished for join() until
        # task_done(), as queue.Queue counts it.
        req = pb.AckRequest(leases=[ref], manual_task_done=True)
        try:
            # Sent again only if it surely never reached the master: then
            # acked == 0 means the lease was lost before it arrived.
            return self.conn.call("Ack", req, timeout=SHORT_CALL_S,
                                  retry=RETRY_IF_NOT_SENT).acked > 0
        except TaskqError as e:
            if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                              grpc.StatusCode.CANCELLED):
                raise
        # The ack may have been applied and only its answer lost. Sent
        # again, acked == 0 means either "already acknowledged by the first
        # one" or "the lease was lost before it arrived": ask the master.
        resent = self.conn.call("Ack", req, timeout=SHORT_CALL_S + self.conn.retry_for,
                                retry=RETRY_ALWAYS)
        return resent.acked > 0 or self._acked_before(d.task.id)

    def _acked_before(self, task_id: int) -> bool:
        """Whether a task whose lease this reader no longer holds was
        finished by its own lost ack (True) or is back in the queue, held by
        another, given up or cancelled (False: it is not ours to return)."""
        try:
            task = self.conn.call("GetTask", pb.GetTaskRequest(task_id=task_id), timeout=SHORT_CALL_S,
                                  retry=RETRY_ALWAYS)
        except TaskqError as e:
            if e.code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                # Finished and forgotten (e.g. the master restarted since),
                # or this credential may not look: keep it, at-least-once
                # rather than lost.
                return True
            raise
        return task.state == pb.TASK_STATE_DONE

    def _dead_letter(self, d: "pb.Delivery", why: Exception) -> None:
        """Gives up a task this reader cannot decode, without touching it:
        it stays in the dead-letter set for a reader that can."""
        req = pb.FailRequest(task_id=d.task.id, lease_id=d.lease_id, permanent=True,
                             error=f"taskq.Queue.get cannot decode it: {type(why).__name__}: "
                                   f"{why}"[:1000])
        try:
            self.conn.call("Fail", req, timeout=SHORT_CALL_S, retry=RETRY_ALWAYS)
        except TaskqError as e:
            if e.code != grpc.StatusCode.FAILED_PRECONDITION:  # lease lost: it comes again
                raise

    # -- task_done / join --------------------------------------------------
    def task_done(self) -> None:
        """Tells the master one item got by get() is processed. ValueError
        if called more times than items were got (counted on the master,
        across every client of the queue)."""
        try:
            # Not idempotent (a count): sent again only if it never left.
            self.conn.call("TaskDone", pb.TaskDoneRequest(queue=self.name, count=1),
                           timeout=SHORT_CALL_S, retry=RETRY_IF_NOT_SENT)
        except TaskqError as e:
            if e.code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise ValueError(f"task_done() called too many times ({e.details})") from None
            raise

    def join(self, timeout: Optional[float] = None) -> bool:
        """Waits until every item put on the queue has been got and
        task_done() called for it (by any client). timeout (an extension of
        queue.Queue): at most that many seconds; returns False if items are
        still unfinished then, True otherwise."""
        deadline = _deadline(True, timeout)
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            wait = POLL_SLICE_S if left is None else max(0.0, min(left, POLL_SLICE_S))
            req = pb.JoinRequest(queue=self.name, timeout_ms=_ms(wait) if wait > 0 else 1)
            try:
                self.conn.call("Join", req, timeout=wait + CALL_MARGIN_S, retry=RETRY_ALWAYS)
                return True
            except TaskqError as e:
                if e.code == grpc.StatusCode.NOT_FOUND:
                    return True  # deleted (or never made): nothing unfinished
                if e.code != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                return False


def _new_dedup_prefix() -> str:
    # As common/client.cc AddRetryDedupKeys: "<kind>.<64 random bits>:<i>".
    return f"py.{os.urandom(8).hex()}:"


def _batches(specs: Iterator["pb.TaskSpec"], max_tasks: int,
             max_bytes: int) -> Iterator[List["pb.TaskSpec"]]:
    """Consecutive lists of at most max_tasks specs and max_bytes encoded."""
    batch: List[pb.TaskSpec] = []
    size = 0
    for spec in specs:
        # The spec, its field tag and length prefix, and its dedup key.
        n = spec.ByteSize() + 6 + 40
        if batch and (len(batch) >= max_tasks or size + n > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(spec)
        size += n
    if batch:
        yield batch
