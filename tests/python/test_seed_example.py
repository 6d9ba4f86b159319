"""The seed's task_master.py / task_worker.py (examples/python), rewritten
for taskq.managers, run as the seed runs them against a real master: the
master script puts ten numbers, the worker squares them (1 s each), the
master script prints the ten results."""

import re
import subprocess
from pathlib import Path

from conftest import wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def test_seed_scripts_compute_ten_squares(master, procs, tmp_path):
    env = {"TASKQ_MASTER": master.address, "TASKQ_TOKEN_FILE": master.token_file}
    boss = procs.python([str(EXAMPLES / "task_master.py")], "task_master", env=env)
    wait_for(lambda: "Try get results..." in procs.log("task_master") or boss.poll() is not None,
             30, "task_master.py to put its tasks")
    assert boss.poll() is None, procs.log("task_master")
    worker = procs.python([str(EXAMPLES / "task_worker.py")], "task_worker", env=env)
    try:
        assert worker.wait(60) == 0, procs.log("task_worker")
        assert boss.wait(30) == 0, procs.log("task_master")
    except subprocess.TimeoutExpired:
        raise AssertionError(f"scripts did not finish:\n{procs.log('task_master')}\n"
                             f"{procs.log('task_worker')}") from None

    out, wout = procs.log("task_master"), procs.log("task_worker")
    put = [int(n) for n in re.findall(r"^Put task (\d+)\.\.\.$", out, re.M)]
    results = re.findall(r"^Result: (\d+) \* (\d+) = (\d+)$", out, re.M)
    assert len(put) == 10, out
    assert len(results) == 10, out
    for a, b, sq in results:
        assert a == b and int(sq) == int(a) ** 2
    # Every number put came back squared, in order (one FIFO worker).
    assert [int(a) for a, _, _ in results] == put
    assert out.rstrip().endswith("master exit.")
    assert f"Connect to server {master.address}..." in wout
    assert wout.count("run task ") == 10 and "worker exit." in wout
    assert "empty" not in wout


def test_examples_mark_every_line_changed_from_the_seed():
    # The examples are the seed's scripts with a few lines changed, each
    # marked "# taskq:" (imports, connecting, the seed's Queue.Empty bug).
    for name in ("task_master.py", "task_worker.py"):
        text = (EXAMPLES / name).read_text()
        changed = [line for line in text.splitlines() if "# taskq:" in line]
        assert 2 <= len(changed) <= 4, (name, changed)
        assert "multiprocessing" not in text.replace("# taskq: was multiprocessing.managers", "")
