"""Many tasks: 20,000 futures from one submit (split into Puts by count and
by bytes), and a 20,000-item map that never has more than its window
outstanding; no reader thread outlives its job."""

import concurrent.futures
import threading
import time

from taskq._stubs import pb
from taskq.results import readers_of

from conftest import wait_for


def square(n: int) -> str:
    return f"{n} * {n} = {n * n}"


def stats(conn, queue):
    return conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=queue), timeout=10)


def start_worker(master, conn, procs, queue):
    conn.call("CreateQueue", pb.CreateQueueRequest(config=pb.QueueConfig(name=queue), exist_ok=True),
              timeout=10)
    procs.cxx_worker(master, [queue])
    wait_for(lambda: stats(conn, queue).workers >= 1, 30, "the worker to subscribe")


def test_twenty_thousand_futures(master, conn, procs):
    start_worker(master, conn, procs, "big.q")
    threads = threading.active_count()
    n = 20000
    start = time.monotonic()
    futures = conn.submit("big.q", "square", [str(i) for i in range(n)])
    submitted = time.monotonic() - start
    done = sum(1 for _ in concurrent.futures.as_completed(futures, timeout=100))
    took = time.monotonic() - start
    print(f"[ figures ] submit {n} tasks: {submitted:.2f} s; all results: {took:.2f} s "
          f"({n / took:.0f} tasks/s)")
    assert done == n
    assert [f.result() for f in futures] == [square(i) for i in range(n)]
    wait_for(lambda: not readers_of(conn), 30, "the reader to stop")
    wait_for(lambda: threading.active_count() == threads, 30, "the reader thread to end")


def test_large_payloads_are_split_into_puts_under_the_message_limit(master, conn, procs):
    start_worker(master, conn, procs, "wide.q")
    # 24 x 512 KiB = 12 MiB: more than one Put's worth of bytes (4 MiB).
    pad = " " * (512 * 1024)
    futures = conn.submit("wide.q", "square", [f"{i}{pad}" for i in range(24)])
    assert [f.result(timeout=60) for f in futures] == [square(i) for i in range(24)]


def test_map_of_twenty_thousand_stays_within_its_window(master, conn, procs):
    start_worker(master, conn, procs, "win.q")
    threads = threading.active_count()
    n, window = 20000, 1000
    start = time.monotonic()
    results = conn.map("square", (str(i) for i in range(n)), queue="win.q", window=window)
    most = 0
    for i, value in enumerate(results):
        assert value == square(i)
        if i % 500 == 0:
            s = stats(conn, "win.q")
            # Put but not yet returned to us: never more than the window.
            most = max(most, s.total_put - i)
            assert s.total_put <= i + window, (i, s.total_put)
    took = time.monotonic() - start
    print(f"[ figures ] map over {n} items, window {window}: {took:.2f} s ({n / took:.0f} tasks/s); "
          f"most outstanding seen {most}")
    assert stats(conn, "win.q").total_put == n
    wait_for(lambda: not readers_of(conn), 30, "the reader to stop")
    wait_for(lambda: threading.active_count() == threads, 30, "the reader thread to end")
