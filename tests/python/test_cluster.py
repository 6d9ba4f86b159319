"""The Python client follows the cluster map (issue 18, docs/CLUSTER.md
"Clients"): two masters and a real etcd on 127.0.0.1 sharing one token, the
client connected to the master that does NOT own the queue. Queue put/get,
GetTask by id, submit with results, and an owner killed: the call raises at
once with the owner's name."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

import taskq
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
