"""taskq.queues.Queue against a real master: queue.Queue's methods, their
blocking and timeout edges (Full/Empty timing), order by kind, item types
and serializers, settings of an existing queue, put_many."""

import datetime
import os
import queue
import threading
import time

import grpc
import pytest

import taskq
from conftest import Master, wait_for
from taskq._stubs import pb

# Upper bound for "at once" and "just after the timeout": the machine is
# shared and loaded, the bounds only have to tell "waited" from "did not".
PROMPT_S = 3.0
LATE_S = 5.0


def stats(conn, name):
    return conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=name), timeout=10)


def timed(fn, *args, **kw):
    """(seconds fn took, the exception it raised)."""
    t = time.monotonic()
    try:
        fn(*args, **kw)
    except Exception as e:  # noqa: BLE001
        return time.monotonic() - t, e
    pytest.fail(f"{fn.__name__} returned instead of raising")


# -- put / get and their types -------------------------------------------------

def test_str_and_bytes_come_back_as_put(conn):
    q = conn.queue("types")
    items = ["text", "ünïcödé ✓", "", b"raw\x00\xff", b"", bytearray(b"ba"), memoryview(b"mv")]
    for it in items:
        q.put(it)
    got = [q.get(timeout=10) for _ in items]
    assert got == ["text", "ünïcödé ✓", "", b"raw\x00\xff", b"", b"ba", b"mv"]
    assert [type(g) for g in got] == [str, str, str, bytes, bytes, bytes, bytes]


def test_default_serializer_refuses_other_objects(conn):
    q = conn.queue("raw-only")
    with pytest.raises(TypeError, match="serializer='json'"):
        q.put(7)
    assert q.qsize() == 0


def test_json_serializer_round_trips_json_values(conn):
    q = conn.queue("json", serializer="json")
    values = [7, 2.5, None, True, [1, "a"], {"k": [1, 2], "n": None}, "plain str", b"bytes"]
    for v in values:
        q.put(v)
    assert [q.get(timeout=10) for _ in values] == values
    with pytest.raises(TypeError, match="pickle"):
        q.put({1, 2})


def test_json_item_is_readable_by_a_default_reader(conn):
    conn.queue("json2", serializer="json").put({"a": 1})
    assert conn.queue("json2").get(timeout=10) == {"a": 1}


def test_bytes_put_by_the_cli_are_bytes(master, conn):
    r = master.cli("put", "cli.q", "from-cli")
    assert r.returncode == 0, r.stderr
    assert conn.queue("cli.q").get(timeout=10) == b"from-cli"


# -- pickle: only with the opt-in ----------------------------------------------

def _unpickled_mark(path):
    with open(path, "w") as f:
        f.write("unpickled")
    return "ran"


class Booby:
    """Unpickling it creates a file: proof that a reader unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_unpickled_mark, (self.path,))


def test_pickle_opt_in_round_trips_objects(conn):
    q = conn.queue("pickled", serializer="pickle")
    obj = {"when": datetime.datetime(2024, 1, 2, 3, 4, 5), "set": {1, 2}, "t": (1, 2.5j)}
    q.put(obj)
    assert q.get(timeout=10) == obj


def test_pickled_item_is_not_unpickled_without_the_opt_in(conn, tmp_path):
    mark = str(tmp_path / "unpickled")
    conn.queue("pk", serializer="pickle").put(Booby(mark))
    plain = conn.queue("pk")
    with pytest.raises(ValueError, match="pickle") as e:
        plain.get(timeout=10)
    assert "dead-letter" in str(e.value)
    assert not os.path.exists(mark), "a reader without serializer='pickle' unpickled the item"
    # Not lost: kept untouched in the dead-letter set; nothing left to get.
    st = stats(conn, "pk")
    assert (st.dead, st.ready, st.leased) == (1, 0, 0)
    json_reader = conn.queue("pk", serializer="json")
    conn.call("RequeueDead", pb.RequeueDeadRequest(queue="pk"), timeout=10)
    with pytest.raises(ValueError):
        json_reader.get(timeout=10)
    assert not os.path.exists(mark)
    # A reader that opts in gets it (and so runs its code).
    conn.call("RequeueDead", pb.RequeueDeadRequest(queue="pk"), timeout=10)
    assert conn.queue("pk", serializer="pickle").get(timeout=10) == "ran"
    assert os.path.exists(mark)


# -- order ---------------------------------------------------------------------

def test_fifo_order(conn):
    q = conn.queue("order.fifo", kind="fifo")
    for i in range(5):
        q.put(str(i))
    assert [q.get(timeout=10) for _ in range(5)] == ["0", "1", "2", "3", "4"]


def test_lifo_order(conn):
    q = conn.queue("order.lifo", kind="lifo")
    for i in range(5):
        q.put(str(i))
    assert [q.get(timeout=10) for _ in range(5)] == ["4", "3", "2", "1", "0"]


def test_priority_order_lowest_first_ties_in_put_order(conn):
    q = conn.queue("order.prio", kind="priority")
    for item, prio in [("c", 5), ("a", -3), ("d", 5), ("b", 0), ("e", 2 ** 31 - 1)]:
        q.put(item, priority=prio)
    assert [q.get(timeout=10) for _ in range(5)] == ["a", "b", "c", "d", "e"]


def test_priority_on_a_fifo_queue_is_refused(conn):
    q = conn.queue("fifo.noprio", kind="fifo")
    with pytest.raises(ValueError, match="kind='priority'"):
        q.put("x", priority=1)
    with pytest.raises(ValueError):
        conn.queue("order.prio2", kind="priority").put("x", priority=2 ** 31)


# -- settings of an existing queue -----------------------------------------------

def test_attaches_to_an_existing_queue_whatever_its_settings(conn):
    conn.queue("settings", kind="lifo", maxsize=3)
    q = conn.queue("settings")
    assert (q.kind, q.maxsize) == ("lifo", 3)
    assert conn.queue("settings", kind="lifo").maxsize == 3
    assert conn.queue("settings", maxsize=3).kind == "lifo"


def test_other_settings_asked_for_raise_value_error(conn):
    conn.queue("settings2", kind="priority", maxsize=10)
    with pytest.raises(ValueError, match="kind='priority', maxsize=10"):
        conn.queue("settings2", kind="fifo")
    with pytest.raises(ValueError, match="maxsize"):
        conn.queue("settings2", maxsize=0)
    with pytest.raises(ValueError, match="unknown queue kind"):
        conn.queue("settings3", kind="stack")
    with pytest.raises(ValueError, match="character"):
        conn.queue("bad name!")


def test_new_queue_is_created_with_the_settings(conn):
    conn.queue("made", kind="priority", maxsize=7)
    st = stats(conn, "made")
    assert (st.config.kind, st.config.maxsize) == (pb.QUEUE_KIND_PRIORITY, 7)
    conn.queue("made-default")
    st = stats(conn, "made-default")
    assert (st.config.kind, st.config.maxsize) == (pb.QUEUE_KIND_FIFO, 0)


# -- qsize / empty / full --------------------------------------------------------

def test_qsize_empty_full_count_ready_delayed_and_leased(conn):
    q = conn.queue("sizes", maxsize=3)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    q.put("a")
    # A delayed task counts in qsize and toward maxsize.
    conn.call("Put", pb.PutRequest(queue="sizes", tasks=[pb.TaskSpec(payload=b"d", delay_ms=3_600_000)]),
              timeout=10)
    assert (q.qsize(), q.empty(), q.full()) == (2, False, False)
    # A leased one (a worker holds it) counts toward maxsize, not qsize.
    q.put("b")
    r = conn.call("Get", pb.GetRequest(queue="sizes", mode=pb.GET_MODE_LEASE, nowait=True), timeout=10)
    assert len(r.deliveries) == 1
    assert (q.qsize(), q.empty(), q.full()) == (2, False, True)
    assert conn.queue("unbounded").full() is False


# -- Empty / Full timing -----------------------------------------------------------

def test_get_on_empty_queue_timing(conn):
    q = conn.queue("empty")
    took, e = timed(q.get_nowait)
    assert isinstance(e, queue.Empty) and took < PROMPT_S
    took, e = timed(q.get, block=False, timeout=30)  # timeout ignored when not blocking
    assert isinstance(e, queue.Empty) and took < PROMPT_S
    took, e = timed(q.get, timeout=0)
    assert isinstance(e, queue.Empty) and took < PROMPT_S
    took, e = timed(q.get, timeout=0.3)
    assert isinstance(e, queue.Empty) and 0.3 <= took < LATE_S
    took, e = timed(q.get, True, 1.2)
    assert isinstance(e, queue.Empty) and 1.2 <= took < 1.2 + LATE_S
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)


def test_put_on_full_queue_timing(conn):
    q = conn.queue("full", maxsize=2)
    q.put("1")
    q.put_nowait("2")
    took, e = timed(q.put_nowait, "3")
    assert isinstance(e, queue.Full) and took < PROMPT_S
    took, e = timed(q.put, "3", block=False, timeout=30)
    assert isinstance(e, queue.Full) and took < PROMPT_S
    took, e = timed(q.put, "3", timeout=0)
    assert isinstance(e, queue.Full) and took < PROMPT_S
    took, e = timed(q.put, "3", timeout=0.3)
    assert isinstance(e, queue.Full) and 0.3 <= took < LATE_S
    with pytest.raises(ValueError, match="non-negative"):
        q.put("3", timeout=-0.5)
    # Nothing of the refused puts was stored.
    assert [q.get(timeout=10), q.get(timeout=10)] == ["1", "2"]
    assert q.empty()


def test_blocking_get_returns_when_an_item_is_put(conn):
    q = conn.queue("wake.get")
    got = []
    t = threading.Thread(target=lambda: got.append(q.get()))  # timeout=None
    t.start()
    wait_for(lambda: stats(conn, "wake.get").waiting_consumers == 1, 20, "the get to wait")
    q.put("here")
    t.join(20)
    assert not t.is_alive() and got == ["here"]


def test_blocking_put_returns_when_room_is_made(conn):
    q = conn.queue("wake.put", maxsize=1)
    q.put("first")
    done = threading.Event()

    def producer():
        q.put("second")  # timeout=None: waits for room
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    wait_for(lambda: stats(conn, "wake.put").waiting_producers == 1, 20, "the put to wait")
    assert not done.is_set()
    assert q.get(timeout=10) == "first"
    assert done.wait(20)
    assert q.get(timeout=10) == "second"
    t.join(20)


def test_put_with_timeout_gets_in_when_room_is_made_in_time(conn):
    q = conn.queue("wake.put2", maxsize=1)
    q.put("first")
    errors = []
    t = threading.Thread(target=lambda: _catch(errors, q.put, "second", timeout=30))
    t.start()
    wait_for(lambda: stats(conn, "wake.put2").waiting_producers == 1, 20, "the put to wait")
    q.get(timeout=10)
    t.join(30)
    assert errors == [] and q.get(timeout=10) == "second"


def _catch(errors, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except Exception as e:  # noqa: BLE001
        errors.append(e)


# -- task_done / join ----------------------------------------------------------------

def test_task_done_too_many_times_raises_value_error(conn):
    q = conn.queue("td")
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    q.put("a")
    q.get(timeout=10)
    q.task_done()
    with pytest.raises(ValueError):
        q.task_done()


def test_join_waits_for_task_done_of_every_item(conn):
    q = conn.queue("join1")
    assert q.join(timeout=0) is True  # nothing put: at once, as queue.Queue
    q.put("a")
    q.put("b")
    assert q.join(timeout=0.3) is False  # not got
    q.get(timeout=10)
    q.get(timeout=10)
    assert q.join(timeout=0.3) is False  # got, not task_done
    q.task_done()
    assert q.join(timeout=0.3) is False
    q.task_done()
    assert q.join(timeout=10) is True
    q.join()


# -- put_many ------------------------------------------------------------------------

def test_put_many_in_batches_keeps_order(conn):
    q = conn.queue("many")
    n = 25_000  # three PutRequests (10000 per request)
    assert q.put_many(str(i) for i in range(n)) == n
    st = stats(conn, "many")
    assert st.ready == n and st.total_put == n
    first = [q.get(timeout=10) for _ in range(3)]
    assert first == ["0", "1", "2"]


def test_put_many_splits_below_the_masters_request_limit(conn):
    q = conn.queue("many.big")
    big = b"x" * 1_000_000  # the master's --max-payload-bytes is 1 MiB
    n = 20  # 20 MB: more than the master takes in one request (8 MiB)
    assert q.put_many(big for _ in range(n)) == n
    assert stats(conn, "many.big").ready == n
    assert q.get(timeout=10) == big


def test_put_many_on_a_bounded_queue_waits_for_room(conn):
    q = conn.queue("many.bounded", maxsize=5)
    got = []

    def consumer():
        for _ in range(12):
            got.append(q.get(timeout=30))

    t = threading.Thread(target=consumer)
    t.start()
    assert q.put_many([str(i) for i in range(12)], timeout=60) == 12
    t.join(60)
    assert got == [str(i) for i in range(12)]


def test_put_many_nowait_on_full_queue_says_how_many_went_in(conn):
    q = conn.queue("many.full", maxsize=4)
    with pytest.raises(queue.Full) as e:
        q.put_many([str(i) for i in range(10)], block=False)
    assert e.value.put_count == 4
    assert q.qsize() == 4


# -- refusals that are not Full/Empty ---------------------------------------------------

def test_memory_budget_refusal_is_a_taskq_error_not_full(tmp_path):
    m = Master(tmp_path, store="memory", extra=["--memory-budget-mb", "1"]).start()
    try:
        with taskq.connect(m.address, token_file=m.token_file) as c:
            q = c.queue("budget")
            with pytest.raises(taskq.TaskqError) as e:
                for _ in range(4):
                    q.put(b"x" * 600_000, timeout=1)
            assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "memory budget" in e.value.details
            assert not isinstance(e.value, queue.Full)
    finally:
        m.stop()


def test_the_queue_object_is_reused_across_connections(master, conn):
    conn.queue("shared").put("from one")
    with taskq.connect(master.address, token_file=master.token_file) as other:
        assert other.queue("shared").get(timeout=10) == "from one"


def count_calls(conn, method):
    """A list that grows by one per `method` call made on `conn`."""
    real, calls = getattr(conn.stub, method), []

    def rpc(request, **kw):
        calls.append(request)
        return real(request, **kw)

    setattr(conn.stub, method, rpc)
    return calls


def test_waits_without_timeout_outlast_many_long_poll_slices(conn, monkeypatch):
    # timeout=None is a loop of long-polls (30 s each); with 0.2 s slices
    # each wait below spans several of them and still ends as it should.
    import taskq.queues
    monkeypatch.setattr(taskq.queues, "POLL_SLICE_S", 0.2)
    q = conn.queue("slices", maxsize=1)
    gets, puts, joins = (count_calls(conn, m) for m in ("Get", "Put", "Join"))
    got = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    wait_for(lambda: len(gets) >= 4, 20, "the get to poll four times")
    assert t.is_alive() and got == []
    q.put("late")
    t.join(20)
    assert got == ["late"]
    # A put waiting for room across slices.
    q.put("fill")
    done = threading.Event()
    p = threading.Thread(target=lambda: (q.put("waited"), done.set()))
    p.start()
    before = len(puts)
    wait_for(lambda: len(puts) >= before + 4, 20, "the put to poll four times")
    assert not done.is_set()
    assert q.get(timeout=10) == "fill"
    assert done.wait(20) and q.get(timeout=10) == "waited"
    # join() too.
    j = threading.Thread(target=q.join)
    j.start()
    wait_for(lambda: len(joins) >= 4, 20, "join to poll four times")
    assert j.is_alive()
    for _ in range(3):
        q.task_done()
    j.join(20)
    assert not j.is_alive()


# -- credentials with one role ----------------------------------------------------------

def credential(master, tmp_path, name, role, queues):
    r = master.cli("credential", "create", name, "--role", role, "--queues", *queues)
    assert r.returncode == 0, r.stderr
    path = tmp_path / f"{name}.token"
    path.write_text(r.stdout.strip() + "\n")
    path.chmod(0o600)
    return taskq.connect(master.address, token_file=str(path))


def test_producer_and_worker_credentials_use_a_queue_they_cannot_create(master, tmp_path):
    # The seed's split: a producer that puts and joins, a worker that gets
    # and calls task_done; neither may create queues or (the worker) read
    # their settings. The queue is made by the master on first use.
    with credential(master, tmp_path, "p1", "producer", ["roles.*"]) as pc, \
            credential(master, tmp_path, "w1", "worker", ["roles.*"]) as wc:
        producer = pc.queue("roles.q")
        consumer = wc.queue("roles.q")
        assert consumer.kind is None and consumer.maxsize is None  # may not read them
        producer.put_many(["a", "b"])
        assert producer.qsize() == 2
        assert [consumer.get(timeout=10), consumer.get(timeout=10)] == ["a", "b"]
        assert producer.join(timeout=0.2) is False
        consumer.task_done()
        consumer.task_done()
        assert producer.join(timeout=10) is True
        with pytest.raises(taskq.TaskqError) as e:
            wc.queue("roles.q", kind="lifo")
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert "leave out kind=" in e.value.details
