"""Jobs: tasks for handlers that workers run, with their results as
concurrent.futures futures (`conn.submit`) or in input order like
Executor.map (`conn.map`).

    futures = conn.submit("tasks", "square", ["1", "2", "3"])
    for f in concurrent.futures.as_completed(futures):
        print(f.task_id, f.result())
    print(list(conn.map("square", map(str, range(10)), queue="tasks")))

As `taskq submit --wait` (client/submit_command.cc): the tasks go out in
Puts of at most 10,000 tasks and 4 MiB, each task with a random dedup key so
a Put sent again after a lost reply stores its tasks once; their results
come to a reply queue (by default a private `_results.<random>` queue,
deleted when every result is in) read by one background thread per reply
queue (taskq.results), which resolves each future exactly once, across
network cuts and master restarts. docs/PYTHON.md has the guarantees.

Thread-safety: submit and map may be called from any thread, also at once
on one connection (they share its reader of the private reply queue). The
iterator map returns is for one consumer thread, as a generator is.
"""

from __future__ import annotations

import collections
import secrets
import time
from typing import Any, Deque, Iterable, Iterator, List, Mapping, Optional, Sequence

import grpc

from taskq._stubs import pb
from taskq.connection import RETRY_ALWAYS, Connection
from taskq.errors import TaskqError
from taskq.results import (DEFAULT_RESULT_LEASE_S, ResultReader, TaskFailed, TaskFuture,
                           acquire_reader, cancel_all, drop_traceback)
from taskq.serializers import ENCODING_HEADER, Serializer, get_serializer

__all__ = ["TaskFailed", "TaskFuture", "map_results", "submit"]

# Per Put request (common/limits.h kMaxTasksPerPut; common/client.cc splits
# requests at kMaxStreamMessageBytes, well under the 64 MiB message limit).
MAX_TASKS_PER_PUT = 10000
MAX_PUT_BYTES = 4 * 1024 * 1024
DEFAULT_WINDOW = 1000


class _TaskTemplate:
    """What every task of one submission shares, and how a payload becomes
    its TaskSpec."""

    def __init__(self, handler: str, serializer: Optional[str], priority: int,
                 headers: Optional[Mapping[str, str]], args: Optional[Sequence[str]],
                 delay: Optional[float]):
        if not isinstance(handler, str) or not handler:
            raise ValueError("handler must be a non-empty string naming a worker's handler")
        if delay is not None and delay < 0:
            raise ValueError("delay must be >= 0 seconds")
        if headers and ENCODING_HEADER in headers:
            raise ValueError(f"header {ENCODING_HEADER!r} is set by the serializer")
        self.handler = handler
        self.serializer = get_serializer(serializer)
        self.priority = int(priority)
        self.headers = dict(headers or {})
        self.args = list(args or [])
        self.delay_ms = int(round(delay * 1000)) if delay else 0
        # "submit.<16 hex>:<index>": as AddRetryDedupKeys (at most 43 bytes).
        self.dedup_prefix = f"submit.{secrets.token_hex(8)}:"

    def spec(self, payload: Any, index: int, reply_to: str) -> Any:
        data, tag = self.serializer.encode(payload)
        headers = dict(self.headers)
        if tag:
            headers[ENCODING_HEADER] = tag
        return pb.TaskSpec(payload=data, handler=self.handler, priority=self.priority,
                           reply_to=reply_to, headers=headers, args=self.args,
                           delay_ms=self.delay_ms, dedup_key=f"{self.dedup_prefix}{index}")


def _batch_limit(conn: Connection, queue: str) -> int:
    """Tasks per Put: 10,000, or the queue's maxsize if smaller (a Put
    larger than maxsize could never fit), as PutBatchLimit."""
    try:
        stats = conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=queue), timeout=30.0)
    except TaskqError as e:
        drop_traceback(e)
        return MAX_TASKS_PER_PUT  # unknown yet: created by the first Put
    maxsize = stats.config.maxsize
    return min(MAX_TASKS_PER_PUT, maxsize) if maxsize else MAX_TASKS_PER_PUT


def _put(conn: Connection, reader: ResultReader, queue: str, specs: List[Any],
         serializer: Serializer) -> List[TaskFuture]:
    """Puts `specs` (one request) and registers their futures with
    `reader`. Safe to send again: every task has a dedup key."""
    reader.begin_put()
    entries = []
    try:
        response = conn.call("Put", pb.PutRequest(queue=queue, tasks=specs), retry=RETRY_ALWAYS)
        if len(response.ids) != len(specs):
            raise TaskqError(grpc.StatusCode.INTERNAL, f"master returned {len(response.ids)} ids for "
                                          f"{len(specs)} tasks")
        # A task deduplicated by its key is one of ours, put by an earlier
        # copy of this request: its result comes here all the same.
        entries = [(task_id, TaskFuture(task_id, queue, reader.queue, reader), serializer)
                   for task_id in response.ids]
    finally:
        reader.end_put(entries)
    return [future for _, future, _ in entries]


def _put_all(conn: Connection, reader: ResultReader, queue: str, specs: List[Any],
             serializer: Serializer, limit: int) -> List[TaskFuture]:
    """Puts `specs` in requests of at most `limit` tasks and MAX_PUT_BYTES."""
    futures: List[TaskFuture] = []
    start = 0
    while start < len(specs):
        end, size = start, 0
        while end < len(specs) and end - start < limit:
            n = specs[end].ByteSize()
            if end > start and size + n > MAX_PUT_BYTES:
                break
            size += n
            end += 1
        futures += _put(conn, reader, queue, specs[start:end], serializer)
        start = end
    return futures


def submit(conn: Connection, queue: str, handler: str, payloads: Iterable[Any],
           reply_to: Optional[str] = None, *, serializer: Optional[str] = None,
           priority: int = 0, headers: Optional[Mapping[str, str]] = None,
           args: Optional[Sequence[str]] = None, delay: Optional[float] = None,
           result_lease: float = DEFAULT_RESULT_LEASE_S) -> List[TaskFuture]:
    """Puts one task per payload on `queue` for `handler` and returns their
    futures, in payload order (TaskFuture: concurrent.futures.Future).

    payloads: bytes or str (or what `serializer`, "json" or "pickle",
      carries); every one is encoded before anything is put, so a TypeError
      puts nothing.
    reply_to: the queue results come to. Default: this connection's private
      `_results.<random>` queue, deleted once every result is in. A queue
      you name should be read by nobody else.
    priority, headers, args, delay (seconds): as TaskSpec's fields, the same
      for every task.
    result_lease: seconds a result stays leased to the reader before it is
      delivered again, when its acknowledgement did not arrive.

    A future resolves with the handler's result (decoded by the task's
    encoding), raises TaskFailed if the task was given up, and is cancelled
    if the task was (`TaskFuture.cancel()` cancels it on the master).
    Raises TaskqError if a Put fails (tasks of earlier Puts have been put:
    they run and their results are read and dropped).
    """
    template = _TaskTemplate(handler, serializer, priority, headers, args, delay)
    items = list(payloads)
    if not items:
        return []
    # Encoded before the reader starts: a TypeError leaves nothing behind.
    encoded = [template.spec(item, i, "") for i, item in enumerate(items)]
    limit = _batch_limit(conn, queue)
    reader = acquire_reader(conn, reply_to, result_lease, for_queue=queue)
    try:
        for spec in encoded:
            spec.reply_to = reader.queue
        return _put_all(conn, reader, queue, encoded, template.serializer, limit)
    finally:
        reader.release()


class MapIterator(Iterator[Any]):
    """The results of `conn.map` in input order (see map_results).

    Holds at most `window` tasks that were put and whose results were not
    yet returned. `close()` (also on garbage collection, and after the
    first failure or timeout) cancels the tasks still outstanding.
    """

    def __init__(self, conn: Connection, queue: str, template: _TaskTemplate,
                 iterable: Iterable[Any], reader: ResultReader, window: int,
                 deadline: Optional[float], limit: int):
        self._conn = conn
        self._queue = queue
        self._template = template
        self._source: Optional[Iterator[Any]] = iter(iterable)
        self._reader: Optional[ResultReader] = reader
        self._window = window
        self._deadline = deadline
        self._limit = limit
        # Put as soon as this many slots are free (a Put per result would
        # cost a round trip each; a quarter window keeps workers fed).
        self._refill = max(1, min(window // 4, MAX_TASKS_PER_PUT))
        self._futures: Deque[TaskFuture] = collections.deque()
        self._index = 0

    def _fill(self) -> None:
        """Tops the window up from the source."""
        free = self._window - len(self._futures)
        if self._source is None or self._reader is None:
            return
        if free < self._refill and self._futures:
            return
        specs = []
        for item in self._source:
            specs.append(self._template.spec(item, self._index, self._reader.queue))
            self._index += 1
            if len(specs) >= free:
                break
        else:
            self._source = None  # exhausted
        if specs:
            self._futures.extend(_put_all(self._conn, self._reader, self._queue, specs,
                                          self._template.serializer, self._limit))

    def __iter__(self) -> "MapIterator":
        return self

    def __next__(self) -> Any:
        if self._reader is None:
            raise StopIteration
        try:
            self._fill()
            if not self._futures:
                self.close()
                raise StopIteration
            head = self._futures[0]
            if self._deadline is None:
                value = head.result()
            else:
                value = head.result(timeout=max(0.0, self._deadline - time.monotonic()))
        except StopIteration:
            raise
        except BaseException:
            # The first failure (or a timeout, or Ctrl-C) ends the map, as
            # for Executor.map: the rest is cancelled.
            self.close()
            raise
        self._futures.popleft()
        return value

    def close(self) -> None:
        """Stops: cancels the tasks still outstanding (CancelTask each) and
        lets the reader go. Idempotent."""
        reader, self._reader = self._reader, None
        self._source = None
        if reader is None:
            return
        try:
            cancel_all(list(self._futures))
            self._futures.clear()
        finally:
            reader.release()

    def __del__(self) -> None:
        # Runs wherever the collector runs, maybe inside one of our locks:
        # the reader thread does the cleanup.
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            reader.abandon(list(self._futures))


def map_results(conn: Connection, handler: str, iterable: Iterable[Any], *, queue: str,
                timeout: Optional[float] = None, window: int = DEFAULT_WINDOW,
                reply_to: Optional[str] = None, serializer: Optional[str] = None,
                priority: int = 0, headers: Optional[Mapping[str, str]] = None,
                args: Optional[Sequence[str]] = None, delay: Optional[float] = None,
                result_lease: float = DEFAULT_RESULT_LEASE_S) -> MapIterator:
    """Like Executor.map(handler, iterable): an iterator of the handler's
    results in input order, each task run by a worker serving `queue`.

    Lazy and bounded: the first `window` items are put now; more are taken
    from `iterable` and put as results are consumed, so at most `window`
    tasks are outstanding (an endless iterable is fine).
    timeout: seconds from this call; `next()` raises TimeoutError when the
      next result has not come by then.
    A failed task raises TaskFailed when its turn comes (a cancelled one
    concurrent.futures.CancelledError); the map ends there and the tasks
    still outstanding are cancelled, as they are when the iterator is
    closed or dropped. Other options as for submit().
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    deadline = None if timeout is None else time.monotonic() + timeout
    template = _TaskTemplate(handler, serializer, priority, headers, args, delay)
    limit = _batch_limit(conn, queue)
    reader = acquire_reader(conn, reply_to, result_lease, for_queue=queue)
    results = MapIterator(conn, queue, template, iterable, reader, window, deadline, limit)
    try:
        results._fill()  # work starts now, and errors surface here
    except BaseException:
        results.close()
        raise
    return results
