"""taskq.connect(): where the address and credential come from, refusals with
a clear error, and calls that ride out a master restart."""

import os
import threading

import grpc
import pytest

import taskq
from taskq._stubs import pb
from conftest import wait_for


def stats(conn, queue):
    return conn.call("GetQueueStats", pb.GetQueueStatsRequest(queue=queue), timeout=10)


def put_one(conn, queue, payload=b"x"):
    req = pb.PutRequest(queue=queue, tasks=[pb.TaskSpec(payload=payload, dedup_key="k." + payload.hex())])
    return conn.call("Put", req, timeout=10)


def test_token_file_argument_reaches_the_master(master, conn):
    ids = put_one(conn, "conn.q").ids
    assert len(ids) == 1
    assert stats(conn, "conn.q").ready == 1


def test_environment_variables_as_the_cli_reads_them(master, monkeypatch):
    monkeypatch.setenv("TASKQ_MASTER", master.address)
    monkeypatch.setenv("TASKQ_TOKEN_FILE", master.token_file)
    monkeypatch.delenv("TASKQ_JOIN", raising=False)
    with taskq.connect() as c:
        assert c.address == master.address
        put_one(c, "env.q")
        assert stats(c, "env.q").ready == 1


def test_wrong_token_is_refused_with_unauthenticated(master, tmp_path):
    bad = tmp_path / "bad-token"
    bad.write_text("not-the-token\n")
    bad.chmod(0o600)
    with taskq.connect(master.address, token_file=str(bad)) as c:
        with pytest.raises(taskq.TaskqError) as e:
            put_one(c, "q")
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "not-the-token" not in str(e.value)


def test_token_file_readable_by_others_is_refused(master, tmp_path):
    loose = tmp_path / "loose-token"
    loose.write_text(open(master.token_file).read())
    loose.chmod(0o644)
    with pytest.raises(taskq.TaskqError) as e:
        taskq.connect(master.address, token_file=str(loose))
    assert "chmod 600" in str(e.value)


def test_missing_default_token_names_the_fix(master, tmp_path, monkeypatch):
    monkeypatch.delenv("TASKQ_TOKEN_FILE", raising=False)
    monkeypatch.delenv("TASKQ_JOIN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(taskq.TaskqError) as e:
        taskq.connect(master.address)
    assert "TASKQ_TOKEN_FILE" in str(e.value)


def test_join_bundle_must_be_private(tmp_path):
    bundle = tmp_path / "w.join"
    bundle.write_text('master: "127.0.0.1:1"\ntoken: "tq1.x.y"\n')
    bundle.chmod(0o644)
    with pytest.raises(taskq.TaskqError) as e:
        taskq.connect(join=str(bundle))
    assert "chmod 600" in str(e.value)
    bundle.chmod(0o600)
    bundle.write_text('master: "127.0.0.1:1"\n')
    with pytest.raises(taskq.TaskqError) as e:
        taskq.connect(join=str(bundle))
    assert "no credential" in str(e.value)


def test_calls_wait_out_a_master_restart(master, conn):
    put_one(conn, "restart.q", b"a")
    master.stop()
    result = {}

    def call_while_down():
        try:
            result["stats"] = stats(conn, "restart.q")
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=call_while_down)
    t.start()
    master.start()
    t.join(timeout=60)
    assert not t.is_alive()
    assert "error" not in result, result.get("error")
    assert result["stats"].ready == 1  # the durable store kept the task


def test_a_waiting_call_that_is_not_idempotent_rides_a_clean_restart(master, conn):
    # A take waiting on an empty queue is answered "master is shutting down"
    # by a master stopping on SIGTERM: it did nothing, so the call is sent
    # again (to the master that comes back) even though a take is not
    # safe to send twice in general.
    from taskq.connection import RETRY_IF_NOT_SENT
    assert master.cli("queue", "create", "restart.take").returncode == 0
    result = {}

    def take():
        try:
            req = pb.GetRequest(queue="restart.take", max_tasks=1, mode=pb.GET_MODE_TAKE,
                                timeout_ms=60000)
            result["got"] = conn.call("Get", req, timeout=90, retry=RETRY_IF_NOT_SENT)
        except Exception as e:  # reported below
            result["error"] = e

    t = threading.Thread(target=take)
    t.start()
    wait_for(lambda: stats(conn, "restart.take").waiting_consumers == 1, 20, "the waiting take")
    master.restart()
    put_one(conn, "restart.take", b"after")
    t.join(timeout=60)
    assert not t.is_alive()
    assert "error" not in result, result.get("error")
    assert [d.task.payload for d in result["got"].deliveries] == [b"after"]


def test_unreachable_master_fails_after_retry_window(tmp_path):
    token = tmp_path / "t"
    token.write_text("tq1.a.b\n")
    token.chmod(0o600)
    # A port nothing listens on (bound by us, never listening).
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % s.getsockname()[1]
    try:
        with taskq.connect(address, token_file=str(token), retry_for=1.0) as c:
            with pytest.raises(taskq.TaskqError) as e:
                stats(c, "q")
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        s.close()


def test_a_failed_call_keeps_nothing_of_its_caller_alive(master, conn):
    # A TaskqError kept in a local of Connection.call formed a cycle with its
    # traceback: the caller's frame and locals lived on until the next GC.
    import gc
    import weakref

    class Marker:
        pass

    def caller():
        marker = Marker()
        try:
            stats(conn, "no.such.queue")
        except taskq.TaskqError as e:
            assert e.code == grpc.StatusCode.NOT_FOUND
        return weakref.ref(marker)

    gc.disable()
    try:
        assert caller()() is None
    finally:
        gc.enable()
