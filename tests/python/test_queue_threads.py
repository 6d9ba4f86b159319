"""One taskq Queue shared by threads, as queue.Queue is: a producer and
several consumers get every item exactly once; task_done/join across
threads."""

import queue
import threading

from conftest import wait_for
from taskq._stubs import pb

STOP = "STOP"


def stats(conn, name):
    return conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=name), timeout=10)


def test_producer_and_consumers_get_every_item_exactly_once(conn):
    # A bounded queue, so the producer also blocks on room.
    q = conn.queue("mt", maxsize=20)
    n, consumers = 400, 4
    got = [[] for _ in range(consumers)]
    errors = []

    def consume(mine):
        try:
            while True:
                item = q.get(timeout=60)
                if item == STOP:
                    q.task_done()
                    return
                mine.append(item)
                q.task_done()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def produce():
        try:
            for i in range(n):
                q.put(f"item-{i}")
            for _ in range(consumers):
                q.put(STOP)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=consume, args=(got[i],)) for i in range(consumers)]
    threads.append(threading.Thread(target=produce))
    for t in threads:
        t.start()
    assert q.join(timeout=120), "join: not every item was task_done"
    for t in threads:
        t.join(60)
    assert errors == []
    everything = [x for mine in got for x in mine]
    assert sorted(everything) == sorted(f"item-{i}" for i in range(n))
    assert len(set(everything)) == n
    # Every consumer took part (they share one Queue object).
    assert sum(1 for mine in got if mine) >= 2
    # Each consumer saw the producer's order (FIFO).
    for mine in got:
        idx = [int(x.split("-")[1]) for x in mine]
        assert idx == sorted(idx)
    st = stats(conn, "mt")
    assert (st.ready, st.leased, st.unfinished) == (0, 0, 0)


def test_join_in_one_thread_returns_after_task_done_in_others(conn):
    q = conn.queue("mt.join")
    for i in range(6):
        q.put(str(i))
    processed = []
    release = threading.Event()
    joined = threading.Event()

    def worker():
        while True:
            try:
                item = q.get(timeout=1)
            except queue.Empty:
                return
            release.wait(30)
            processed.append(item)
            q.task_done()

    workers = [threading.Thread(target=worker) for _ in range(3)]
    joiner = threading.Thread(target=lambda: (q.join(), joined.set()))
    for t in workers:
        t.start()
    joiner.start()
    # Three got (one per worker), none done yet: join still waits.
    wait_for(lambda: stats(conn, "mt.join").ready == 3, 20, "the workers to take items")
    assert not joined.is_set()
    release.set()
    assert joined.wait(60), "join did not return after every task_done"
    assert sorted(processed) == [str(i) for i in range(6)]
    for t in workers + [joiner]:
        t.join(30)


def test_several_blocked_getters_each_get_one_item(conn):
    q = conn.queue("mt.wake")
    results = []
    lock = threading.Lock()

    def getter():
        item = q.get(timeout=60)
        with lock:
            results.append(item)

    threads = [threading.Thread(target=getter) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: stats(conn, "mt.wake").waiting_consumers == 3, 20, "three getters waiting")
    q.put_many(["a", "b", "c"])
    for t in threads:
        t.join(30)
    assert sorted(results) == ["a", "b", "c"]
