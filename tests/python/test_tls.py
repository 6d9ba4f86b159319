"""The Python client against a TLS master made by `taskq-master init`: join
bundles (token and client certificate), a CA file, roles enforced, and
refusals that say what is wrong instead of retrying."""

import socket
import subprocess
import time

import grpc
import pytest

import taskq
from taskq._stubs import pb
from conftest import Master, binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_data_dir(path, port):
    run = subprocess.run([binary("taskq-master"), "init", "--data-dir", str(path), "--port",
                          str(port)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


@pytest.fixture
def tls_master(tmp_path):
    port = free_port()
    init_data_dir(tmp_path / "data", port)
    m = Master(tmp_path)
    m.address = f"127.0.0.1:{port}"
    m.start()
    try:
        yield m
    finally:
        m.stop()


def put(conn, queue, payload=b"p"):
    return conn.call("Put", pb.PutRequest(queue=queue, tasks=[pb.TaskSpec(payload=payload)]),
                     timeout=20, retry="if_not_sent")


def test_admin_join_bundle_connects_over_tls(tls_master):
    admin = f"{tls_master.data_dir}/admin.join"
    with taskq.connect(join=admin) as c:
        assert put(c, "tls.q").ids
        stats = c.call("GetQueueStats", pb.GetQueueStatsRequest(queue="tls.q"), timeout=20)
        assert stats.ready == 1


def test_client_certificate_bundle_and_its_role(tls_master, tmp_path):
    admin = f"{tls_master.data_dir}/admin.join"
    bundle = tmp_path / "p1.join"
    run = subprocess.run([binary("taskq"), "--join", admin, "credential", "create", "p1",
                          "--role", "producer", "--queues", "tls.*", "--cert", "--bundle",
                          str(bundle)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    with taskq.connect(join=str(bundle)) as c:
        assert put(c, "tls.jobs").ids
        with pytest.raises(taskq.TaskqError) as e:
            put(c, "other.jobs")
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "p1" in e.value.details


def test_ca_file_with_the_admin_token(tls_master, tmp_path):
    admin = f"{tls_master.data_dir}/admin.join"
    token = taskq.connection.read_join_bundle(admin).token
    with taskq.connect(tls_master.address, token=token,
                       tls_ca=f"{tls_master.data_dir}/tls/ca.pem") as c:
        assert put(c, "tls.q").ids


def test_untrusted_master_is_refused_at_once(tls_master, tmp_path):
    # A CA of another deployment: the master's certificate does not verify.
    init_data_dir(tmp_path / "other", free_port())
    token = taskq.connection.read_join_bundle(f"{tls_master.data_dir}/admin.join").token
    start = time.monotonic()
    with taskq.connect(tls_master.address, token=token, tls_ca=str(tmp_path / "other/tls/ca.pem"),
                       retry_for=30) as c:
        with pytest.raises(taskq.TaskqError) as e:
            put(c, "tls.q")
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start < 15, "a certificate refusal must not be retried for retry_for"


def test_plaintext_client_to_tls_master_fails(tls_master):
    token = taskq.connection.read_join_bundle(f"{tls_master.data_dir}/admin.join").token
    with taskq.connect(tls_master.address, token=token, retry_for=1.0) as c:
        with pytest.raises(taskq.TaskqError) as e:
            put(c, "tls.q")
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
