"""Each future resolves exactly once: across a master restart while results
are outstanding, and when a result comes again because its lease lapsed
before the reader acknowledged it."""

import collections
import concurrent.futures
import threading


from taskq._stubs import pb
from taskq.results import readers_of

from conftest import wait_for


def square(n: int) -> str:
    return f"{n} * {n} = {n * n}"


def stats(conn, queue):
    return conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=queue), timeout=10)


def queue_names(conn):
    return {q.config.name for q in conn.call("ListQueues", pb.ListQueuesRequest(), timeout=10).queues}


class Resolutions:
    """Counts done-callbacks per task: each must run once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = collections.Counter()

    def watch(self, futures):
        for f in futures:
            f.add_done_callback(self._done)

    def _done(self, f):
        with self.lock:
            self.count[f.task_id] += 1

    def total(self):
        with self.lock:
            return sum(self.count.values())


def create(conn, name):
    conn.call("CreateQueue", pb.CreateQueueRequest(config=pb.QueueConfig(name=name), exist_ok=True),
              timeout=10)


def test_results_outstanding_across_a_master_restart(master, conn, procs):
    n = 300
    futures = conn.submit("r.q", "square", [str(i) for i in range(n)])
    seen = Resolutions()
    seen.watch(futures)
    reply = futures[0].reply_to
    master.restart()  # the reader and the put tasks ride it out (SQLite store)
    procs.cxx_worker(master, ["r.q"])
    done, not_done = concurrent.futures.wait(futures, timeout=90)
    assert not not_done
    assert [f.result() for f in futures] == [square(i) for i in range(n)]
    assert seen.total() == n and set(seen.count.values()) == {1}
    wait_for(lambda: not readers_of(conn), 30, "the reader to stop")
    wait_for(lambda: reply not in queue_names(conn), 30, "the private queue to be deleted")


def test_master_restart_while_results_flow(master, conn, procs):
    create(conn, "flow.q")
    procs.cxx_worker(master, ["flow.q"])
    wait_for(lambda: stats(conn, "flow.q").workers >= 1, 30, "the worker to subscribe")
    n = 5000
    futures = conn.submit("flow.q", "square", [str(i) for i in range(n)])
    seen = Resolutions()
    seen.watch(futures)
    reader = readers_of(conn)[0]
    # Restart once some results are in, before all are.
    wait_for(lambda: seen.total() >= 1, 60, "the first results")
    master.restart()
    done, not_done = concurrent.futures.wait(futures, timeout=100)
    assert not not_done, f"{len(not_done)} futures unresolved"
    assert [f.result() for f in futures] == [square(i) for i in range(n)]
    assert seen.total() == n and set(seen.count.values()) == {1}
    assert reader.resolved == n
    wait_for(lambda: not readers_of(conn), 30, "the reader to stop")


def test_result_delivered_again_after_its_lease_lapsed_resolves_nothing_twice(master, conn, procs):
    for q in ("slow.q", "later.q", "slow.results"):
        create(conn, q)
    calls = []

    def slow_consumer(f):
        # Holds the reader thread until the master has taken the result
        # back: its 0.2 s lease lapsed before the reader acknowledged it.
        calls.append(f.result())
        wait_for(lambda: stats(conn, "slow.results").ready >= 1, 30,
                 "the unacknowledged result to come back")

    future, = conn.submit("slow.q", "square", ["12"], reply_to="slow.results", result_lease=0.2)
    # A second task on a queue nobody serves yet keeps the reader polling.
    later, = conn.submit("later.q", "square", ["13"], reply_to="slow.results", result_lease=0.2)
    reader, = readers_of(conn)
    future.add_done_callback(slow_consumer)  # before any result can come
    procs.cxx_worker(master, ["slow.q"], name="w1")
    assert future.result(timeout=60) == square(12)
    # The copy comes with the next poll, and is acknowledged and dropped.
    wait_for(lambda: reader.dropped == 1, 30, "the copy to be dropped")
    assert calls == [square(12)]
    procs.cxx_worker(master, ["later.q"], name="w2")
    assert later.result(timeout=60) == square(13)
    wait_for(lambda: not readers_of(conn), 30, "the reader to stop")
    assert calls == [square(12)] and reader.resolved == 2
    wait_for(lambda: stats(conn, "slow.results").leased == 0, 20, "the last acknowledgements")
    s = stats(conn, "slow.results")
    assert (s.ready, s.leased, s.pending_results) == (0, 0, 0)
