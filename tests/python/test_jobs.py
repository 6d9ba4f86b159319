"""conn.submit and conn.map against the real master and the C++ worker:
futures that as_completed and wait understand, results in input order,
failures raised, cancellation, the private reply queue deleted at the end,
no reader thread left behind."""

import concurrent.futures
import itertools
import threading
import time

import grpc
import pytest

import taskq
from taskq._stubs import pb
from taskq.results import readers_of

from conftest import wait_for


def square(n: int) -> str:
    return f"{n} * {n} = {n * n}"


def queue_names(conn):
    return {q.config.name for q in conn.call("ListQueues", pb.ListQueuesRequest(), timeout=10).queues}


def stats(conn, queue):
    return conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=queue), timeout=10)


@pytest.fixture
def worker(master, conn, procs):
    """A C++ worker serving queue "q" (square, sleep, ...), subscribed."""
    conn.call("CreateQueue", pb.CreateQueueRequest(config=pb.QueueConfig(name="q"), exist_ok=True),
              timeout=10)
    proc = procs.cxx_worker(master, ["q"])
    wait_for(lambda: stats(conn, "q").workers >= 1, 30, "the worker to subscribe")
    return proc


def no_readers(conn):
    return not readers_of(conn)


def test_submit_returns_futures_as_completed_understands(conn, worker):
    futures = conn.submit("q", "square", [str(n) for n in range(1, 51)])
    assert len(futures) == 50
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)
    assert len({f.task_id for f in futures}) == 50
    got = {}
    for f in concurrent.futures.as_completed(futures, timeout=60):
        got[futures.index(f)] = f.result()
    assert got == {i: square(i + 1) for i in range(50)}


def test_wait_and_done_callbacks(conn, worker):
    calls = []
    futures = conn.submit("q", "square", ["3", "4"])
    for f in futures:
        f.add_done_callback(lambda f: calls.append(f.result()))
    done, not_done = concurrent.futures.wait(futures, timeout=60)
    assert not not_done and len(done) == 2
    wait_for(lambda: len(calls) == 2, 10, "both callbacks")
    assert sorted(calls) == [square(3), square(4)]


def test_results_decode_as_the_payloads_were_sent(conn, worker):
    s, b = conn.submit("q", "square", ["5", b"6"])
    assert s.result(timeout=60) == square(5)  # str in, str out
    assert b.result(timeout=60) == square(6).encode()  # bytes in, bytes out


def test_failed_task_raises_task_failed(conn, worker):
    ok, bad = conn.submit("q", "square", ["2", "not-a-number"])
    assert ok.result(timeout=60) == square(2)
    with pytest.raises(taskq.TaskFailed) as e:
        bad.result(timeout=60)
    assert e.value.task_id == bad.task_id
    assert "not-a-number" in e.value.error or "integer" in e.value.error
    assert isinstance(bad.exception(), taskq.TaskFailed)


def test_payloads_are_checked_before_anything_is_put(conn):
    with pytest.raises(TypeError):
        conn.submit("typed.q", "square", ["1", 2])
    assert "typed.q" not in queue_names(conn)
    assert conn.submit("typed.q", "square", []) == []


def test_private_reply_queue_is_deleted_and_no_thread_is_left(conn, worker):
    stats(conn, "q")  # the channel's own threads start with the first call
    threads = threading.active_count()
    futures = conn.submit("q", "square", ["7"] * 20)
    reply = futures[0].reply_to
    assert reply.startswith("_results.")
    assert reply in queue_names(conn)
    concurrent.futures.wait(futures, timeout=60)
    assert [f.result() for f in futures] == [square(7)] * 20
    wait_for(lambda: no_readers(conn), 20, "the reader to stop")
    wait_for(lambda: threading.active_count() == threads, 20, "the reader thread to end")
    wait_for(lambda: reply not in queue_names(conn), 20, "the private queue to be deleted")


def test_named_reply_queue_is_kept_and_drained(conn, worker):
    futures = conn.submit("q", "square", ["8", "9"], reply_to="my.results")
    assert [f.result(timeout=60) for f in futures] == [square(8), square(9)]
    wait_for(lambda: no_readers(conn), 20, "the reader to stop")
    # Still there; every result acknowledged (the last acks go out as the
    # reader ends).
    wait_for(lambda: stats(conn, "my.results").leased == 0, 20, "the last acknowledgements")
    s = stats(conn, "my.results")
    assert (s.ready, s.leased, s.pending_results) == (0, 0, 0)


def test_map_yields_results_in_input_order(conn, worker):
    # "sleep" makes later tasks finish first.
    out = list(conn.map("sleep", ["0.4", "0.2", "0", "0.1"], queue="q"))
    assert out == ["slept 0.4", "slept 0.2", "slept 0", "slept 0.1"]
    assert list(conn.map("square", (str(n) for n in range(200)), queue="q", window=16)) == \
        [square(n) for n in range(200)]
    assert list(conn.map("square", [], queue="q")) == []


def test_map_raises_the_first_failure_when_its_turn_comes(conn, worker):
    results = conn.map("square", ["1", "2", "x", "4"], queue="q")
    assert next(results) == square(1)
    assert next(results) == square(2)
    with pytest.raises(taskq.TaskFailed):
        next(results)
    with pytest.raises(StopIteration):
        next(results)


def test_map_timeout_counts_from_the_call(conn, worker):
    start = time.monotonic()
    results = conn.map("sleep", ["0", "4"], queue="q", timeout=1.0)
    assert next(results) == "slept 0"
    with pytest.raises(TimeoutError):
        next(results)
    took = time.monotonic() - start
    assert 1.0 <= took < 10.0
    # The outstanding task was cancelled, and everything ends.
    wait_for(lambda: no_readers(conn), 20, "the reader to stop")
    s = stats(conn, "q")
    assert s.total_cancelled >= 1


def test_cancel_a_future_cancels_its_task(conn):
    # No worker: the task stays ready until cancelled.
    f, = conn.submit("idle.q", "square", ["3"])
    assert f.cancel()
    assert f.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        f.result(timeout=1)
    s = stats(conn, "idle.q")
    assert (s.ready, s.total_cancelled) == (0, 1)
    wait_for(lambda: no_readers(conn), 20, "the reader to stop")


def test_cancel_of_a_finished_task_returns_false(conn, worker):
    f, = conn.submit("q", "square", ["3"])
    assert f.result(timeout=60) == square(3)
    assert not f.cancel()
    assert not f.cancelled()


def test_cancelled_on_the_master_cancels_the_future(conn, master):
    f, = conn.submit("idle.q", "square", ["3"])
    r = master.cli("cancel", str(f.task_id))
    assert r.returncode == 0, r.stderr
    wait_for(f.done, 30, "the CANCELLED result")
    assert f.cancelled()


def test_close_ends_the_readers_and_fails_pending_futures(master):
    c = taskq.connect(master.address, token_file=master.token_file)
    f, = c.submit("idle.q", "square", ["3"])
    threads_during = threading.active_count()
    c.close()
    with pytest.raises(taskq.TaskqError) as e:
        f.result(timeout=20)
    assert e.value.code == grpc.StatusCode.CANCELLED
    wait_for(lambda: no_readers(c), 20, "the reader to stop")
    wait_for(lambda: threading.active_count() < threads_during, 20, "the reader thread to end")


def test_map_is_lazy_and_bounded_by_its_window(conn, worker):
    window = 100
    results = conn.map("square", (str(n) for n in itertools.count()), queue="q", window=window)
    for n in range(1000):
        assert next(results) == square(n)
        if n % 97 == 0:
            # Put so far: what was consumed plus at most a window.
            assert stats(conn, "q").total_put <= n + 1 + window
    results.close()
    wait_for(lambda: no_readers(conn), 30, "the reader to stop")


def test_closing_a_map_cancels_its_outstanding_tasks(conn):
    # Nobody serves idle.q: the whole window stays outstanding.
    results = conn.map("square", (str(n) for n in itertools.count()), queue="idle.q", window=500)
    assert stats(conn, "idle.q").ready == 500
    start = time.monotonic()
    results.close()
    assert time.monotonic() - start < 10  # CancelTask calls in parallel
    s = stats(conn, "idle.q")
    assert (s.ready, s.total_put, s.total_cancelled) == (0, 500, 500)
    wait_for(lambda: no_readers(conn), 20, "the reader to stop")
    with pytest.raises(StopIteration):
        next(results)


def test_a_dropped_map_iterator_lets_its_reader_go(conn):
    results = conn.map("square", ["1", "2"], queue="idle.q")
    assert readers_of(conn)
    del results
    wait_for(lambda: no_readers(conn), 20, "the reader to stop")
    assert stats(conn, "idle.q").ready == 0


def test_options_reach_the_tasks(conn, worker):
    start = time.monotonic()
    f, = conn.submit("q", "square", ["6"], delay=0.5, headers={"job": "j1"}, priority=3)
    task = conn.call("GetTask", pb.GetTaskRequest(task_id=f.task_id), timeout=10)
    assert task.headers["job"] == "j1" and task.headers["taskq-encoding"] == "str"
    assert task.priority == 3 and task.reply_to == f.reply_to
    assert task.dedup_key.startswith("submit.")
    assert f.result(timeout=60) == square(6)
    assert time.monotonic() - start >= 0.5
    with pytest.raises(ValueError):
        conn.submit("q", "square", ["1"], headers={"taskq-encoding": "pickle"})


def test_a_result_that_does_not_decode_is_the_futures_exception(conn, worker):
    # A json task run by the C++ handler: its text result is not JSON.
    f, = conn.submit("q", "square", [7], serializer="json")
    assert isinstance(f.exception(timeout=60), ValueError)
