"""The Python client follows the cluster map (issue 18, docs/CLUSTER.md
"Clients"): two masters and a real etcd on 127.0.0.1 sharing one token, the
client connected to the master that does NOT own the queue. Queue put/get,
GetTask by id, submit with results, an owner killed: the call raises at
once with the owner's name, and a queue moved to the other master while the
client puts (`taskq queue move`): nothing lost or stored twice."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

import taskq
import taskq.connection
from taskq._stubs import pb
from taskq.connection import node_of
from taskq.errors import TaskqError

from conftest import Master, stop_process, wait_for

ETCD = "/usr/bin/etcd"
TTL = "2s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def etcd(tmp_path: Path):
    """A one-member etcd on loopback; its client endpoint HOST:PORT."""
    if not os.access(ETCD, os.X_OK):
        pytest.skip("etcd-server is not installed")
    client, peer = free_port(), free_port()
    endpoint = f"127.0.0.1:{client}"
    peer_url = f"http://127.0.0.1:{peer}"
    log = open(tmp_path / "etcd.log", "ab")
    proc = subprocess.Popen(
        [ETCD, "--name", "t", "--data-dir", str(tmp_path / "etcd"),
         "--listen-client-urls", f"http://{endpoint}", "--advertise-client-urls",
         f"http://{endpoint}", "--listen-peer-urls", peer_url,
         "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"t={peer_url}",
         "--log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, ETCD_UNSUPPORTED_ARCH=""))
    log.close()

    def healthy():
        if proc.poll() is not None:
            pytest.fail(f"etcd exited: {(tmp_path / 'etcd.log').read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://{endpoint}/health", timeout=1) as r:
                return b"true" in r.read()
        except OSError:
            return False

    try:
        wait_for(healthy, 30, "etcd to answer", interval=0.1)
        yield endpoint
    finally:
        stop_process(proc)


@pytest.fixture
def masters(tmp_path: Path, etcd: str):
    """m1 and m2 of one cluster, sharing m1's token."""
    started = []
    try:
        for name in ("m1", "m2"):
            workdir = tmp_path / name
            workdir.mkdir()
            if started:
                shutil.copy(started[0].token_file, workdir / "token")
                os.chmod(workdir / "token", 0o600)
            m = Master(workdir, extra=["--cluster", f"etcd://{etcd}", "--name", name,
                                       "--advertise", "127.0.0.1:0", "--cluster-ttl", TTL])
            started.append(m.start())
        with taskq.connect(started[0].address, token_file=started[0].token_file) as c:
            wait_for(lambda: sum(m.up for m in c.cluster().masters) == 2, 20,
                     "both masters up", interval=0.1)
        yield started
    finally:
        for m in started:
            m.stop()


@pytest.fixture
def via_m1(masters):
    """A connection given m1's address."""
    c = taskq.connect(masters[0].address, token_file=masters[0].token_file, retry_for=5.0)
    try:
        yield c
    finally:
        c.close()


def create_on(masters, queue: str, owner: str) -> None:
    r = masters[0].cli("queue", "create", queue, "--on", owner)
    assert r.returncode == 0, r.stderr


def test_a_queue_on_the_other_master_is_followed_and_remembered(masters, via_m1):
    create_on(masters, "jobs", "m2")
    q = via_m1.queue("jobs")
    q.put("alpha")
    assert via_m1._queue_addresses["jobs"] == masters[1].address
    assert q.qsize() == 1
    assert q.get(timeout=10) == "alpha"
    # A task by id, through m1: its node says m2.
    ids = via_m1.call("Put", pb.PutRequest(queue="jobs", tasks=[pb.TaskSpec(payload=b"b")])).ids
    assert node_of(ids[0]) != 0
    task = via_m1.call("GetTask", pb.GetTaskRequest(task_id=ids[0]))
    assert task.queue == "jobs"
    cluster = via_m1.cluster()
    assert cluster.clustered
    assert sorted(m.name for m in cluster.masters) == ["m1", "m2"]


def test_submit_gets_its_results_through_the_other_master(masters, via_m1, procs):
    create_on(masters, "squares", "m2")
    procs.cxx_worker(masters[1], ["squares"])
    futures = via_m1.submit("squares", "square", ["3", "4"])
    assert [f.result(timeout=60) for f in futures] == ["3 * 3 = 9", "4 * 4 = 16"]


def test_a_killed_owner_raises_at_once_naming_it(masters, via_m1):
    create_on(masters, "jobs", "m2")
    create_on(masters, "local", "m1")
    q = via_m1.queue("jobs")
    q.put("x")  # the owner's address is remembered now
    masters[1].kill()
    wait_for(lambda: [m.up for m in sorted(via_m1.cluster().masters, key=lambda m: m.name)]
             == [True, False], 20, "m2 to be called down", interval=0.2)
    start = time.monotonic()
    with pytest.raises(TaskqError) as raised:
        q.put("y")
    assert time.monotonic() - start < 5, "not retried"
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert "owner m2 is down" in raised.value.details
    assert raised.value.owner is not None and raised.value.owner.down
    assert raised.value.owner.master == "m2"
    # m1's own queues keep working.
    via_m1.queue("local").put("z")


def test_a_queue_moved_under_the_client_loses_and_doubles_nothing(masters, monkeypatch, caplog):
    """`taskq queue move` while the client puts: the calls refused with
    "moving" are sent again (no "unreachable" notice), then follow the
    redirect to the new owner; every put lands exactly once."""
    m1, m2 = masters
    create_on(masters, "pyjobs", "m1")
    moving_seen = []
    real_owner_of = taskq.connection.owner_of

    def recording_owner_of(error):
        owner = real_owner_of(error)
        if owner is not None and owner.moving:
            moving_seen.append(owner)
        return owner

    monkeypatch.setattr(taskq.connection, "owner_of", recording_owner_of)
    caplog.set_level("WARNING", logger="taskq")
    with taskq.connect(m1.address, token_file=m1.token_file, retry_for=60.0) as conn:
        q = conn.queue("pyjobs")
        before = [f"before-{i}" for i in range(20)]
        for item in before:
            q.put(item)
        assert conn.master_of("pyjobs") == "m1"
        # A lease held across the move keeps the queue fenced for --drain
        # seconds, so the putters below are sure to meet the fence.
        held = conn.call("Get", pb.GetRequest(queue="pyjobs", mode=pb.GET_MODE_LEASE,
                                              lease_ms=120_000, nowait=True),
                         timeout=10).deliveries
        assert len(held) == 1

        stop = threading.Event()
        lock = threading.Lock()
        landed = {}  # dedup key -> (id, existing)
        errors = []

        def putter(prefix: str) -> None:
            try:
                for i in range(2000):
                    if stop.is_set():
                        return
                    key = f"{prefix}-{i}"
                    r = conn.call("Put", pb.PutRequest(queue="pyjobs", tasks=[
                        pb.TaskSpec(payload=key.encode(), dedup_key=key)]), timeout=60)
                    with lock:
                        landed[key] = (list(r.ids), list(r.existing))
            except Exception as e:  # noqa: BLE001 - reported by the test
                errors.append(e)

        def count() -> int:
            with lock:
                return len(landed)

        threads = [threading.Thread(target=putter, args=(p,), daemon=True) for p in ("ra", "rb")]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: count() >= 10 or errors, 30, "puts before the move")
            r = m1.cli("queue", "move", "pyjobs", "--to", "m2", "--drain", "1", "--json",
                       timeout=120)
            assert r.returncode == 0, r.stderr
            moved = json.loads(r.stdout)
            assert "pyjobs" in moved["queues"] and moved["to"] == "m2"
            assert moved["taken_back"] == 1
            after_move = count()
            wait_for(lambda: count() >= after_move + 10 or errors, 30, "puts after the move")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=70)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)

        # The fence was met and retried, naming the target; never a notice.
        assert moving_seen, "no call met the move"
        assert all(o.master == "m2" and o.address == m2.address for o in moving_seen)
        assert not [r.message for r in caplog.records if "unreachable" in r.message]

        # Each put stored one task, once.
        ids = [v[0] for v in landed.values()]
        assert all(len(i) == 1 for i in ids)
        assert not any(any(v[1]) for v in landed.values())
        assert len({i[0] for i in ids}) == len(ids)

        # Now m2's, with everything in it (the held task back ready).
        assert conn.master_of("pyjobs") == "m2"
        stats = q.stats()
        assert (stats.ready, stats.leased) == (len(before) + len(landed), 0)
        ref = pb.LeaseRef(task_id=held[0].task.id, lease_id=held[0].lease_id)
        assert conn.call("Ack", pb.AckRequest(leases=[ref]), timeout=10).acked == 0
        # Ids and dedup keys came along: by id through m1, and a key put again.
        assert conn.call("GetTask", pb.GetTaskRequest(task_id=held[0].task.id),
                         timeout=10).queue == "pyjobs"
        key, (first_ids, _) = next(iter(landed.items()))
        again = conn.call("Put", pb.PutRequest(queue="pyjobs", tasks=[
            pb.TaskSpec(payload=key.encode(), dedup_key=key)]), timeout=10)
        assert list(again.ids) == first_ids and list(again.existing) == [True]

        q.put("after")
        assert conn._queue_addresses["pyjobs"] == m2.address
        expected = before + list(landed) + ["after"]
        got = [q.get(timeout=10) for _ in expected]
        with pytest.raises(queue.Empty):
            q.get_nowait()
        got = [item.decode() if isinstance(item, bytes) else item for item in got]
        assert sorted(got) == sorted(expected)
