"""Queue calls across failures: a get waiting through a master restart, items
kept by the SQLite store through kill -9, and replies lost on the way (put,
get, ack) losing no item and storing none twice."""

import queue
import signal
import threading

import grpc
import pytest

from conftest import wait_for
from taskq._stubs import pb


def stats(conn, name):
    return conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=name), timeout=30)


class LostReply(grpc.RpcError):
    """What gRPC raises when a link breaks after the request went out."""

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "Socket closed"


def lose_first_reply(conn, method):
    """The next `method` call reaches the master, but its reply is lost.
    Returns a list that counts the calls made."""
    real = getattr(conn.stub, method)
    calls = []

    def rpc(request, **kw):
        calls.append(request)
        reply = real(request, **kw)
        if len(calls) == 1:
            raise LostReply()
        return reply

    setattr(conn.stub, method, rpc)
    return calls


def test_get_waiting_across_a_master_restart_returns_the_item(master, conn):
    q = conn.queue("restart.get")
    got, errors = [], []

    def consumer():
        try:
            got.append(q.get(timeout=90))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=consumer)
    t.start()
    wait_for(lambda: stats(conn, "restart.get").waiting_consumers == 1, 20, "the get to wait")
    master.restart()
    q.put("after restart")
    t.join(60)
    assert not t.is_alive() and errors == [] and got == ["after restart"]
    assert stats(conn, "restart.get").ready == 0


def test_items_survive_kill_9_and_the_queue_keeps_working(master, conn):
    q = conn.queue("restart.kill", kind="lifo", maxsize=10)
    q.put_many(["a", "b", "c"])
    master.stop(signal.SIGKILL)
    master.start()
    q2 = conn.queue("restart.kill", kind="lifo", maxsize=10)
    assert [q2.get(timeout=30) for _ in range(3)] == ["c", "b", "a"]
    assert q.empty()


def test_a_put_whose_reply_was_lost_is_stored_once(conn):
    q = conn.queue("lost.put")
    calls = lose_first_reply(conn, "Put")
    q.put("once")
    assert len(calls) == 2  # sent again after the lost reply
    assert calls[0].tasks[0].dedup_key == calls[1].tasks[0].dedup_key != ""
    st = stats(conn, "lost.put")
    assert (st.ready, st.total_put) == (1, 1)
    assert q.get(timeout=10) == "once"
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_a_put_many_whose_reply_was_lost_is_stored_once(conn):
    q = conn.queue("lost.putmany")
    calls = lose_first_reply(conn, "Put")
    assert q.put_many(str(i) for i in range(100)) == 100
    assert len(calls) == 2
    assert stats(conn, "lost.putmany").ready == 100


def test_a_get_whose_reply_was_lost_delivers_the_item_again(conn):
    # The lease the lost reply carried lapses (0.5 s here) and the item is
    # ready again after the queue's retry backoff (~1 s).
    q = conn.queue("lost.get", lease=0.5)
    q.put("precious")
    calls = lose_first_reply(conn, "Get")
    assert q.get(timeout=60) == "precious"
    assert len(calls) >= 2
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.task_done()
    assert q.join(timeout=10)


def test_an_ack_whose_reply_was_lost_returns_the_item_once(conn):
    q = conn.queue("lost.ack")
    q.put("one")
    q.put("two")
    calls = lose_first_reply(conn, "Ack")
    assert q.get(timeout=10) == "one"
    assert len(calls) == 2
    st = stats(conn, "lost.ack")
    assert (st.ready, st.leased, st.unfinished) == (1, 0, 2)  # "one" awaits task_done
    assert q.get(timeout=10) == "two"
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.task_done()
    q.task_done()
    assert q.join(timeout=10)


def test_an_ack_that_came_too_late_drops_nothing(conn):
    # The consumer stalls past its lease before acknowledging: the master
    # refuses the ack (acked 0), the item goes back, and get() takes it
    # again instead of returning an item someone else may also get.
    q = conn.queue("late.ack", lease=0.2)
    q.put("slow")
    real_ack = q._ack
    acks = []

    def stalled_ack(d):
        acks.append(d.task.id)
        if len(acks) == 1:
            wait_for(lambda: stats(conn, "late.ack").leased == 0, 20, "the lease to lapse")
        return real_ack(d)

    q._ack = stalled_ack
    assert q.get(timeout=60) == "slow"
    assert len(acks) == 2 and acks[0] == acks[1]
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_an_ack_lost_before_the_lease_lapsed_does_not_return_the_item_twice(conn):
    # The first ack never reaches the master (the link breaks as it is
    # sent), the lease lapses meanwhile, the resent ack finds no lease: the
    # item is back in the queue, so get() must not return it now as well.
    q = conn.queue("lost.ack2", lease=0.2)
    q.put("only once")
    real = conn.stub.Ack
    calls = []

    def ack(request, **kw):
        calls.append(request)
        if len(calls) == 1:
            wait_for(lambda: stats(conn, "lost.ack2").leased == 0, 20, "the lease to lapse")
            raise LostReply()
        return real(request, **kw)

    conn.stub.Ack = ack
    assert q.get(timeout=60) == "only once"
    assert len(calls) == 3  # lost, resent (no lease), then the redelivery's
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.task_done()
    assert q.join(timeout=10)
