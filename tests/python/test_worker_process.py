"""`python3 -m taskq worker MODULE:ATTR` as a process: its help, refusals,
a SIGKILL mid-task (the task runs again on another worker, one result) and
the SIGTERM drain (the running task finishes, the prefetched one is
released, exit 0)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from taskq._stubs import pb
from conftest import wait_for
from test_worker import no_more_results, put, results, stats, task_state

TIMEOUT = 30.0

EXAMPLE_MODULE = '''
import os
import taskq

worker = taskq.Worker(queues=["unused"], concurrency=1,
                      prefetch=int(os.environ.get("EXAMPLE_PREFETCH", "0")))


@worker.handler("hold")
def hold(payload, task):
    # Marks that it runs, then works until the file "go" appears.
    open(f"started.{os.getpid()}.{task.id}", "w").close()
    while not os.path.exists("go"):
        if task.wait_stop(0.02):
            return "stopped"
    return f"done by {os.getpid()} attempt {task.attempt}"
'''


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "app"
    d.mkdir()
    (d / "examplemodule.py").write_text(EXAMPLE_MODULE)
    return d


def start_worker(procs, master, workdir: Path, queue: str, name: str, env=None):
    return procs.python(["-m", "taskq", "worker", "examplemodule:worker", "--master",
                         master.address, "--token-file", master.token_file, "--queue", queue,
                         "--id", name],
                        name, cwd=str(workdir), env=env)


def started(workdir: Path, pid: int, task_id: int) -> bool:
    return (workdir / f"started.{pid}.{task_id}").exists()


def test_help_explains_the_package_and_points_at_the_cli():
    r = subprocess.run([sys.executable, "-m", "taskq", "--help"], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "taskq --help" in r.stdout and "docs/PYTHON.md" in r.stdout
    assert "worker MODULE[:ATTR]" in r.stdout
    r = subprocess.run([sys.executable, "-m", "taskq", "worker", "--help"], capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and "--concurrency" in r.stdout


def test_bad_targets_exit_2_with_a_message(workdir):
    def run(target):
        return subprocess.run([sys.executable, "-m", "taskq", "worker", target],
                              capture_output=True, text=True, timeout=TIMEOUT, cwd=str(workdir))

    r = run("no_such_module")
    assert r.returncode == 2 and "cannot import no_such_module" in r.stderr
    r = run("examplemodule:nothing")
    assert r.returncode == 2 and "has no attribute 'nothing'" in r.stderr
    r = run("examplemodule:hold")
    assert r.returncode == 2 and "not a taskq.Worker" in r.stderr
    (workdir / "broken.py").write_text("raise RuntimeError('broken at import')\n")
    r = run("broken")
    assert r.returncode == 2 and "RuntimeError: broken at import" in r.stderr


def test_sigkill_mid_task_runs_it_again_on_another_worker_with_one_result(
        master, conn, procs, workdir):
    a = start_worker(procs, master, workdir, "wp.kill", "worker-a")
    [tid] = put(conn, "wp.kill", "hold", ["x"], reply_to="wp.kill.r")
    wait_for(lambda: started(workdir, a.pid, tid) or a.poll() is not None, TIMEOUT,
             "worker A to start the task")
    assert a.poll() is None, procs.log("worker-a")
    b = start_worker(procs, master, workdir, "wp.kill", "worker-b")
    wait_for(lambda: stats(conn, "wp.kill").workers == 2, TIMEOUT, "worker B to subscribe")
    a.send_signal(signal.SIGKILL)
    a.wait(TIMEOUT)
    wait_for(lambda: started(workdir, b.pid, tid), TIMEOUT, "worker B to run the task again")
    (workdir / "go").touch()
    [r] = results(conn, "wp.kill.r", 1)
    assert r.outcome == pb.OUTCOME_OK and r.result_of == tid
    assert r.payload.decode() == f"done by {b.pid} attempt 2"
    assert no_more_results(conn, "wp.kill.r")
    assert stats(conn, "wp.kill.r").pending_results == 0


def test_sigterm_finishes_the_running_task_releases_the_prefetched_one_and_exits_0(
        master, conn, procs, workdir):
    w = start_worker(procs, master, workdir, "wp.term", "worker", env={"EXAMPLE_PREFETCH": "1"})
    first, second = put(conn, "wp.term", "hold", ["1", "2"], reply_to="wp.term.r")
    wait_for(lambda: started(workdir, w.pid, first) and stats(conn, "wp.term").leased == 2,
             TIMEOUT, "one task running and one prefetched")
    w.send_signal(signal.SIGTERM)
    # Draining: the prefetched task goes back at once, the running one runs on.
    wait_for(lambda: task_state(conn, second).state == pb.TASK_STATE_READY, TIMEOUT,
             "the prefetched task to be released")
    assert w.poll() is None and not started(workdir, w.pid, second)
    (workdir / "go").touch()
    [r] = results(conn, "wp.term.r", 1)
    assert r.result_of == first and r.payload.decode() == f"done by {w.pid} attempt 1"
    assert w.wait(TIMEOUT) == 0, procs.log("worker")
    s = task_state(conn, second)
    # Released: ready again, no attempt counted (a lost lease would count one).
    assert (s.state, s.attempt, s.history[-1].how) == (pb.TASK_STATE_READY, 0, "released")
    assert "draining" in procs.log("worker")
