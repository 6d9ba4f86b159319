"""taskq.managers.QueueManager: BaseManager's calls mapped onto taskq
queues (register, start/connect, get_<x>_queue, shutdown)."""

import queue

import pytest

import taskq
from taskq.managers import BaseManager, QueueManager, master_address
from taskq.queues import Queue


class Manager(BaseManager):
    pass


Manager.register("get_task_queue", callable=lambda: "never called")
Manager.register("get_result_queue")
Manager.register("get_jobs", queue="jobs.prio", kind="priority", maxsize=5)
Manager.register("get_pickled_queue", serializer="pickle")


def env(monkeypatch, master):
    monkeypatch.setenv("TASKQ_MASTER", master.address)
    monkeypatch.setenv("TASKQ_TOKEN_FILE", master.token_file)
    monkeypatch.delenv("TASKQ_JOIN", raising=False)


def test_registered_methods_are_taskq_queues_named_after_them(master, monkeypatch):
    env(monkeypatch, master)
    m = Manager()
    m.start()  # connects; the master is the server
    try:
        task, result = m.get_task_queue(), m.get_result_queue()
        assert isinstance(task, Queue) and (task.name, result.name) == ("task", "result")
        assert m.get_task_queue() is task
        jobs = m.get_jobs()
        assert (jobs.name, jobs.kind, jobs.maxsize) == ("jobs.prio", "priority", 5)
        # The default serializer is json: the seed's ints round-trip.
        task.put(42)
        task.put([1, "two"])
        assert task.get(timeout=10) == 42
        assert task.get(timeout=10) == [1, "two"]
        # Another manager (another process, elsewhere) sees the same queues.
        with Manager(address=master.address, token_file=master.token_file) as other:
            other.get_result_queue().put("7 * 7 = 49")
        assert result.get(timeout=10) == "7 * 7 = 49"
        with pytest.raises(queue.Empty):
            result.get(timeout=0.2)
    finally:
        m.shutdown()


def test_address_forms_and_authkey_as_token(master, monkeypatch):
    monkeypatch.delenv("TASKQ_MASTER", raising=False)
    monkeypatch.delenv("TASKQ_JOIN", raising=False)
    host, port = master.address.rsplit(":", 1)
    token = open(master.token_file).read().strip()
    for address in [(host, int(port)), ("", int(port)), master.address]:
        m = Manager(address=address, authkey=token.encode())
        m.connect()
        try:
            assert m.address == master.address
            m.get_result_queue().put(b"x")
            assert m.get_result_queue().get(timeout=10) == b"x"
        finally:
            m.shutdown()


def test_wrong_authkey_is_refused(master):
    m = Manager(address=master.address, authkey=b"abc")
    m.connect()
    with pytest.raises(taskq.TaskqError) as e:
        m.get_task_queue()
    assert e.value.code.name == "UNAUTHENTICATED"
    m.shutdown()


def test_pickle_is_opt_in_per_registration(master, monkeypatch):
    env(monkeypatch, master)
    with Manager() as m:
        with pytest.raises(TypeError):
            m.get_task_queue().put({1, 2})  # json cannot carry a set
        m.get_pickled_queue().put({1, 2})
        assert m.get_pickled_queue().get(timeout=10) == {1, 2}
    with Manager(serializer="pickle") as m:
        m.get_task_queue().put({3})
        assert m.get_task_queue().get(timeout=10) == {3}


def test_calls_before_connect_and_server_only_calls_say_what_to_do(master):
    m = Manager(address=master.address, token_file=master.token_file)
    with pytest.raises(RuntimeError, match="connect"):
        m.get_task_queue()
    with pytest.raises(NotImplementedError, match="taskq-master"):
        m.get_server()
    m.shutdown()  # harmless when not connected


def test_registrations_are_per_subclass():
    class A(QueueManager):
        pass

    class B(QueueManager):
        pass

    A.register("get_a_queue")
    assert hasattr(A, "get_a_queue") and not hasattr(B, "get_a_queue")
    assert "get_a_queue" not in QueueManager._registry
    with pytest.raises(ValueError):
        A.register("not a name")


def test_master_address_reads_the_environment(monkeypatch):
    monkeypatch.delenv("TASKQ_JOIN", raising=False)
    monkeypatch.setenv("TASKQ_MASTER", "10.0.0.7:6000")
    assert master_address() == "10.0.0.7:6000"
    monkeypatch.delenv("TASKQ_MASTER")
    assert master_address() == "127.0.0.1:5000"
