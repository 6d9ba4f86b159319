"""taskq.Worker in this process against a real master: plain and async
handlers, results and their encoding, failures (text, permanent or
retried), releases, the credit window, heartbeats keeping a long task's
lease, cancellation, the drain and reconnecting across a master restart.
Worker processes (python3 -m taskq worker, SIGKILL, SIGTERM) are in
test_worker_process.py."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from typing import List

import grpc
import pytest

import taskq
from taskq._stubs import pb
from conftest import wait_for

TIMEOUT = 30.0  # upper bound of anything that should take well under a second


@pytest.fixture
def serve():
    """Runs Workers on background threads; stops them all at the end."""
    running = []

    def start(worker: taskq.Worker) -> taskq.Worker:
        t = threading.Thread(target=worker.run, name="test-worker", daemon=True)
        t.start()
        running.append((worker, t))
        return worker

    yield start
    for worker, t in running:
        worker.stop_now()
    for worker, t in running:
        t.join(TIMEOUT)
        assert not t.is_alive(), "Worker.run() did not return after stop_now()"


def create_queue(conn, name: str, **config) -> None:
    conn.call("CreateQueue", pb.CreateQueueRequest(config=pb.QueueConfig(name=name, **config)),
              timeout=10)


def put(conn, queue: str, handler: str, payloads, reply_to: str = "", headers=None) -> List[int]:
    tasks = [pb.TaskSpec(payload=p if isinstance(p, bytes) else p.encode(), handler=handler,
                         reply_to=reply_to, headers=headers or {}) for p in payloads]
    return list(conn.call("Put", pb.PutRequest(queue=queue, tasks=tasks), timeout=10).ids)


def results(conn, queue: str, n: int, timeout: float = TIMEOUT) -> List[pb.Task]:
    """Takes n result messages from `queue` (fails the test if they do not
    all come within `timeout`)."""
    got: List[pb.Task] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{len(got)} of {n} results on {queue} after {timeout:.0f} s")
        try:
            r = conn.call("Get", pb.GetRequest(queue=queue, max_tasks=n - len(got),
                                               timeout_ms=max(1, int(left * 1000)),
                                               mode=pb.GET_MODE_TAKE), timeout=left + 5)
        except taskq.TaskqError as e:
            if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                continue
            raise
        got.extend(d.task for d in r.deliveries)
    return got


def no_more_results(conn, queue: str, wait_ms: int = 500) -> bool:
    try:
        conn.call("Get", pb.GetRequest(queue=queue, timeout_ms=wait_ms), timeout=30)
    except taskq.TaskqError as e:
        return e.code == grpc.StatusCode.DEADLINE_EXCEEDED
    return False


def stats(conn, queue: str):
    return conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=queue), timeout=10)


def task_state(conn, task_id: int) -> pb.Task:
    return conn.call("GetTask", pb.GetTaskRequest(task_id=task_id), timeout=10)


def test_plain_function_is_a_handler(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.plain"], concurrency=2)

    @worker.handler("upper")
    def upper(payload):
        assert isinstance(payload, bytes)  # the CLI puts bytes
        return payload.decode().upper()

    serve(worker)
    r = master.cli("submit", "--queue", "w.plain", "--handler", "upper", "--wait",
                   "--wait-timeout", "30", "abc", "déf")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["ABC", "DÉF"]


def test_async_function_is_a_handler_and_runs_concurrently(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.async"], concurrency=4)
    running = {"now": 0, "max": 0}

    @worker.handler("slow_echo")
    async def slow_echo(payload, task):
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        try:
            # Held until all four run at once: one at a time would time out.
            for _ in range(2000):
                if running["max"] >= 4:
                    break
                await asyncio.sleep(0.01)
            return f"{payload.decode()} attempt {task.attempt} on {task.queue}"
        finally:
            running["now"] -= 1

    serve(worker)
    r = master.cli("submit", "--queue", "w.async", "--handler", "slow_echo", "--wait",
                   "--wait-timeout", "30", "a", "b", "c", "d")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == [f"{x} attempt 1 on w.async" for x in "abcd"]
    assert running["max"] == 4


def test_plain_functions_run_on_concurrency_threads(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.threads"], concurrency=3)
    barrier = threading.Barrier(3, timeout=TIMEOUT)

    @worker.handler("meet")
    def meet(payload):
        barrier.wait()  # needs three threads at once
        return threading.current_thread().name

    serve(worker)
    r = master.cli("submit", "--queue", "w.threads", "--handler", "meet", "--wait",
                   "--wait-timeout", "60", "1", "2", "3")
    assert r.returncode == 0, r.stderr
    assert len(set(r.stdout.splitlines())) == 3


def test_items_and_results_keep_their_encoding(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.json"])

    @worker.handler("add")
    def add(item):
        return {"sum": item["a"] + item["b"]}

    @worker.handler("shout")
    def shout(item):
        assert isinstance(item, str)
        return item + "!"

    serve(worker)
    put(conn, "w.json", "add", [json.dumps({"a": 1, "b": 2})], reply_to="w.json.r",
        headers={"taskq-encoding": "json"})
    put(conn, "w.json", "shout", ["hé"], reply_to="w.json.r", headers={"taskq-encoding": "str"})
    got = {r.headers["taskq-encoding"]: r for r in results(conn, "w.json.r", 2)}
    assert json.loads(got["json"].payload) == {"sum": 3}
    assert got["str"].payload.decode() == "hé!"
    assert all(r.outcome == pb.OUTCOME_OK for r in got.values())


def test_pickled_items_need_the_pickle_serializer(master, conn, serve):
    import pickle
    worker = taskq.Worker(conn, queues=["w.pickle"])
    calls = []
    worker.register("f", lambda item: calls.append(item))
    serve(worker)
    [tid] = put(conn, "w.pickle", "f", [pickle.dumps({1, 2})], reply_to="w.pickle.r",
                headers={"taskq-encoding": "pickle"})
    [r] = results(conn, "w.pickle.r", 1)
    assert r.outcome == pb.OUTCOME_FAILED and "serializer='pickle'" in r.error
    assert calls == []  # never unpickled, never run
    assert task_state(conn, tid).state == pb.TASK_STATE_DEAD  # permanent: not retried


def test_exception_text_reaches_the_failed_result_after_retries(master, conn, serve):
    create_queue(conn, "w.fail", max_attempts=2, backoff_ms=1, backoff_max_ms=1)
    worker = taskq.Worker(conn, queues=["w.fail"])
    attempts = []

    @worker.handler("boom")
    def boom(payload, task):
        attempts.append(task.attempt)
        raise ValueError(f"bad input {payload.decode()}")

    serve(worker)
    r = master.cli("submit", "--queue", "w.fail", "--handler", "boom", "--wait",
                   "--wait-timeout", "30", "7")
    assert r.returncode == 7
    assert "ValueError: bad input 7" in r.stderr
    assert attempts == [1, 2]  # retryable: run again until max_attempts


def test_permanent_error_is_not_retried(master, conn, serve):
    create_queue(conn, "w.perm", max_attempts=5, backoff_ms=1, backoff_max_ms=1)
    worker = taskq.Worker(conn, queues=["w.perm"])
    calls = []

    @worker.handler("never")
    def never(payload):
        calls.append(payload)
        raise taskq.PermanentError("this input can never work")

    serve(worker)
    [tid] = put(conn, "w.perm", "never", ["x"], reply_to="w.perm.r")
    [r] = results(conn, "w.perm.r", 1)
    assert (r.outcome, r.error, r.result_of) == (pb.OUTCOME_FAILED, "this input can never work", tid)
    assert calls == [b"x"]


def test_unknown_handler_fails_permanently_naming_the_worker(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.unknown"], worker_id="py-test-worker")
    worker.register("known", lambda p: p)
    serve(worker)
    [tid] = put(conn, "w.unknown", "nope", ["x"], reply_to="w.unknown.r")
    [r] = results(conn, "w.unknown.r", 1)
    assert r.outcome == pb.OUTCOME_FAILED
    assert r.error == 'no handler named "nope" on worker py-test-worker'
    assert task_state(conn, tid).state == pb.TASK_STATE_DEAD


def test_release_gives_the_task_back_without_an_attempt(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.release"])
    seen = []

    @worker.handler("later")
    def later(payload, task):
        seen.append(task.attempt)
        if len(seen) == 1:
            raise taskq.ReleaseTask(delay=0.2)
        return f"attempt {task.attempt}"

    serve(worker)
    put(conn, "w.release", "later", ["x"], reply_to="w.release.r")
    [r] = results(conn, "w.release.r", 1)
    assert r.payload == b"attempt 1"
    assert seen == [1, 1]


def test_never_more_in_flight_than_concurrency_plus_prefetch(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.window"], concurrency=2, prefetch=1)
    go = threading.Event()
    started = []

    @worker.handler("hold")
    def hold(payload):
        started.append(payload)
        go.wait(TIMEOUT)
        return payload

    serve(worker)
    put(conn, "w.window", "hold", [str(i) for i in range(10)], reply_to="w.window.r")
    wait_for(lambda: len(started) == 2 and worker.tasks_in_flight == 3, TIMEOUT,
             "two tasks running and one prefetched")
    s = stats(conn, "w.window")
    assert (s.leased, s.ready) == (3, 7)
    assert len(started) == 2  # the prefetched one waits for a slot
    go.set()
    assert len(results(conn, "w.window.r", 10)) == 10


def test_heartbeats_keep_a_long_tasks_lease(master, conn, serve):
    create_queue(conn, "w.long", lease_ms=1000, backoff_ms=1, backoff_max_ms=1)
    worker = taskq.Worker(conn, queues=["w.long"])
    calls = []

    @worker.handler("long")
    def long_task(payload, task):
        calls.append(task.attempt)
        # The task's own work: three lease times long.
        stopped = task.wait_stop(3.0)
        return f"attempt {task.attempt} stopped={stopped}"

    serve(worker)
    put(conn, "w.long", "long", ["x"], reply_to="w.long.r")
    [r] = results(conn, "w.long.r", 1)
    assert r.outcome == pb.OUTCOME_OK, r.error
    assert r.payload == b"attempt 1 stopped=False"
    assert calls == [1]
    assert no_more_results(conn, "w.long.r")


def test_cancel_stops_an_async_handler(master, conn, serve, caplog):
    caplog.set_level("INFO", logger="taskq.worker")
    create_queue(conn, "w.cancel", lease_ms=1500)  # heartbeats every 0.5 s
    worker = taskq.Worker(conn, queues=["w.cancel"])
    started, cancelled = threading.Event(), threading.Event()

    @worker.handler("forever")
    async def forever(payload):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    serve(worker)
    [tid] = put(conn, "w.cancel", "forever", ["x"], reply_to="w.cancel.r")
    assert started.wait(TIMEOUT)
    conn.call("CancelTask", pb.CancelTaskRequest(task_id=tid), timeout=10)
    assert cancelled.wait(TIMEOUT), "the handler was not cancelled"
    # Told by the refused heartbeat (not by its lease running out).
    assert f"task {tid} was cancelled" in caplog.text
    [r] = results(conn, "w.cancel.r", 1)
    assert r.outcome == pb.OUTCOME_CANCELLED
    wait_for(lambda: worker.tasks_in_flight == 0, TIMEOUT, "the slot to come back")


def test_cancel_tells_a_plain_function_to_stop_and_drops_its_result(master, conn, serve, caplog):
    caplog.set_level("INFO", logger="taskq.worker")
    create_queue(conn, "w.cancel2", lease_ms=1500)
    worker = taskq.Worker(conn, queues=["w.cancel2"])
    started, saw_stop = threading.Event(), threading.Event()

    @worker.handler("poll")
    def poll(payload, task):
        started.set()
        if task.wait_stop(TIMEOUT):
            saw_stop.set()
        return "late result"

    serve(worker)
    [tid] = put(conn, "w.cancel2", "poll", ["x"], reply_to="w.cancel2.r")
    assert started.wait(TIMEOUT)
    conn.call("CancelTask", pb.CancelTaskRequest(task_id=tid), timeout=10)
    assert saw_stop.wait(TIMEOUT)
    assert f"task {tid} was cancelled" in caplog.text
    [r] = results(conn, "w.cancel2.r", 1)
    assert r.outcome == pb.OUTCOME_CANCELLED  # the late result was not used
    assert no_more_results(conn, "w.cancel2.r")


def test_stop_drains_then_releases_what_still_runs(master, conn):
    worker = taskq.Worker(conn, queues=["w.drain"], concurrency=2, drain_timeout=0.5)
    started = threading.Semaphore(0)
    told = []

    @worker.handler("quick")
    def quick(payload, task):
        started.release()
        return "quick done"

    @worker.handler("stubborn")
    def stubborn(payload, task):
        started.release()
        told.append(task.wait_stop(TIMEOUT))
        return "never used"

    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    [slow] = put(conn, "w.drain", "stubborn", ["x"])
    assert started.acquire(timeout=TIMEOUT)
    worker.stop()
    put(conn, "w.drain", "quick", ["y"])  # taken by nobody now
    t.join(TIMEOUT)
    assert not t.is_alive()
    assert told == [True]  # told to stop at the drain deadline
    s = task_state(conn, slow)
    assert s.state == pb.TASK_STATE_READY  # released: ready again
    assert s.history[-1].how == "released"
    assert stats(conn, "w.drain").ready == 2


def test_worker_reconnects_after_a_master_restart(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.restart"])
    worker.register("echo", lambda p: b"echo " + p)
    serve(worker)
    r = master.cli("submit", "--queue", "w.restart", "--handler", "echo", "--wait",
                   "--wait-timeout", "30", "one")
    assert (r.returncode, r.stdout) == (0, "echo one\n"), r.stderr
    master.restart()
    wait_for(lambda: stats(conn, "w.restart").workers == 1, TIMEOUT,
             "the worker to subscribe again")
    r = master.cli("submit", "--queue", "w.restart", "--handler", "echo", "--wait",
                   "--wait-timeout", "30", "two")
    assert (r.returncode, r.stdout) == (0, "echo two\n"), r.stderr


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        taskq.Worker(None, queues=[])
    with pytest.raises(ValueError):
        taskq.Worker(None, queues=[".hidden"])
    with pytest.raises(ValueError):
        taskq.Worker(None, concurrency=0)
    w = taskq.Worker(None)
    with pytest.raises(ValueError):
        w.register("bad name", lambda p: p)
    with pytest.raises(ValueError):
        async def a(p):
            return p
        w.register("a", a, inline=True)


def test_a_lease_that_may_have_run_out_stops_its_task(master, conn, serve, caplog):
    # docs/WORKER.md, "Failure detection": with the master frozen no
    # heartbeat is confirmed, so the worker stops the task before the 1 s
    # lease can run out on the master, which then hands it out again.
    caplog.set_level("INFO", logger="taskq.worker")
    create_queue(conn, "w.fence", lease_ms=1000, backoff_ms=1, backoff_max_ms=1)
    worker = taskq.Worker(conn, queues=["w.fence"])
    started, stopped = threading.Event(), threading.Event()

    @worker.handler("wait")
    def wait(payload, task):
        if task.attempt == 1:
            started.set()
            if task.wait_stop(TIMEOUT):
                stopped.set()
            return "first attempt (dropped)"
        return f"attempt {task.attempt}"

    serve(worker)
    [tid] = put(conn, "w.fence", "wait", ["x"], reply_to="w.fence.r")
    assert started.wait(TIMEOUT)
    master.proc.send_signal(signal.SIGSTOP)
    try:
        assert stopped.wait(TIMEOUT), "the task was not stopped"
    finally:
        master.proc.send_signal(signal.SIGCONT)
    assert f"task {tid}: no heartbeat of lease" in caplog.text
    [r] = results(conn, "w.fence.r", 1)
    assert r.payload == b"attempt 2"
    assert no_more_results(conn, "w.fence.r")


def test_stop_now_cancels_a_running_async_handler_and_releases_its_task(master, conn):
    worker = taskq.Worker(conn, queues=["w.stopnow"], concurrency=2, prefetch=1)
    started, cancelled = threading.Event(), threading.Event()

    @worker.handler("forever")
    async def forever(payload):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    ids = put(conn, "w.stopnow", "forever", ["1", "2", "3"])
    assert started.wait(TIMEOUT)
    wait_for(lambda: worker.tasks_in_flight == 3, TIMEOUT, "two running, one prefetched")
    worker.stop_now()
    t.join(TIMEOUT)
    assert not t.is_alive() and cancelled.is_set()
    assert not worker.has_stuck_handlers
    for tid in ids:
        s = task_state(conn, tid)
        assert (s.state, s.history[-1].how) == (pb.TASK_STATE_READY, "released")


def test_a_task_running_when_the_master_restarts_is_stopped_and_runs_again(master, conn, serve):
    worker = taskq.Worker(conn, queues=["w.midrestart"])
    first_started, first_stopped = threading.Event(), threading.Event()

    @worker.handler("job")
    def job(payload, task):
        if task.attempt == 1:
            first_started.set()
            if task.wait_stop(TIMEOUT):
                first_stopped.set()
            return "first attempt (dropped: its stream ended)"
        return f"attempt {task.attempt}"

    serve(worker)
    put(conn, "w.midrestart", "job", ["x"], reply_to="w.midrestart.r")
    assert first_started.wait(TIMEOUT)
    master.restart()
    assert first_stopped.wait(TIMEOUT), "the task of the ended stream was not stopped"
    [r] = results(conn, "w.midrestart.r", 1)
    assert r.payload == b"attempt 2"
    assert no_more_results(conn, "w.midrestart.r")


def test_inline_handler_runs_on_the_thread_that_reads_the_stream(master, conn):
    worker = taskq.Worker(conn, queues=["w.inline"])
    worker.register("where", lambda p: threading.current_thread().name, inline=True)
    t = threading.Thread(target=worker.run, name="the-reader", daemon=True)
    t.start()
    try:
        r = master.cli("submit", "--queue", "w.inline", "--handler", "where", "--wait",
                       "--wait-timeout", "30", "x")
        assert (r.returncode, r.stdout) == (0, "the-reader\n"), r.stderr
    finally:
        worker.stop()
        t.join(TIMEOUT)
