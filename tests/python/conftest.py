"""Fixtures of the Python client's tests: a real taskq-master (and workers) on
127.0.0.1 with an ephemeral port, always stopped at the end of the test.

Run through ctest (tests/CMakeLists.txt sets PYTHONPATH and TASKQ_BIN_DIR),
or by hand:

    PYTHONPATH=clients/python:build/release/python TASKQ_BIN_DIR=build/release \\
        /usr/bin/python3 -m pytest -q tests/python
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("TASKQ_BIN_DIR") or ROOT / "build" / "release")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def binary(name: str) -> str:
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build first (cmake --build --preset release)")
    return str(path)


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.01):
    """Polls `condition` until it returns something truthy (returned), or
    fails the test after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> Optional[int]:
    """Stops `proc` (signal, then SIGKILL after STOP_TIMEOUT_S); returns its exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Master:
    """A taskq-master on 127.0.0.1:<ephemeral>; `address` and `token_file`
    are what clients need. `restart()` keeps its data dir (and port)."""

    def __init__(self, workdir: Path, store: str = "sqlite", extra: Optional[List[str]] = None):
        self.workdir = workdir
        self.store = store
        self.extra = list(extra or [])
        self.token_file = str(workdir / "token")
        self.data_dir = str(workdir / "data")
        self.log_path = workdir / "master.log"
        self.address = "127.0.0.1:0"
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def start(self) -> "Master":
        port_file = self.workdir / "master.port"
        if port_file.exists():
            port_file.unlink()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary("taskq-master"), "--listen", self.address, "--port-file", str(port_file),
             "--token-file", self.token_file, "--data-dir", self.data_dir,
             "--store", self.store, *self.extra],
            stdout=self._log, stderr=subprocess.STDOUT)

        def bound():
            if self.proc.poll() is not None:
                pytest.fail(f"taskq-master exited with {self.proc.returncode}:\n{self.log()}")
            # Written atomically (common/port_file.h): present means complete.
            return port_file.read_text().strip() if port_file.exists() else ""

        self.address = wait_for(bound, START_TIMEOUT_S, "the master's port file")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> Optional[int]:
        start = time.monotonic()
        code = stop_process(self.proc, sig) if self.proc else None
        if sig == signal.SIGTERM and code == -signal.SIGKILL and os.environ.get("TASKQ_STRICT_STOP"):
            raise AssertionError(f"taskq-master ignored SIGTERM for {time.monotonic() - start:.1f} s:\n{self.log()[-4000:]}")
        if self._log:
            self._log.close()
            self._log = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> "Master":
        self.stop()
        return self.start()  # same address: the port is free again

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Runs the `taskq` CLI against this master."""
        return subprocess.run([binary("taskq"), "--master", self.address, "--token-file",
                               self.token_file, *args],
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def master(tmp_path: Path):
    """A durable (SQLite) master in a fresh directory."""
    m = Master(tmp_path).start()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def conn(master: Master):
    """A taskq.Connection to `master`."""
    import taskq
    c = taskq.connect(master.address, token_file=master.token_file)
    try:
        yield c
    finally:
        c.close()


class Processes:
    """Child processes a test starts (workers, scripts); all are stopped at
    the end of the test."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: List[subprocess.Popen] = []

    def start(self, args: List[str], name: str, env: Optional[dict] = None, **kw) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, **kw)
        log.close()
        proc.name = name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cxx_worker(self, master: Master, queues: List[str], name: str = "worker",
                   extra: Optional[List[str]] = None) -> subprocess.Popen:
        """The C++ taskq-worker (built-in handlers: square, sleep, ...)."""
        args = [binary("taskq-worker"), "--master", master.address, "--token-file",
                master.token_file]
        for q in queues:
            args += ["--queue", q]
        return self.start(args + list(extra or []), name)

    def python(self, args: List[str], name: str, **kw) -> subprocess.Popen:
        """Debian's python3 running `args` with this checkout's taskq package."""
        return self.start([sys.executable, *args], name, **kw)

    def stop_all(self) -> None:
        for p in self.procs:
            stop_process(p)


@pytest.fixture
def procs(tmp_path: Path):
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()
