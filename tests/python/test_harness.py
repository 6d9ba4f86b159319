"""The Python suite's own guard: a test file that collects nothing must fail
its ctest entry (pytest exits 5), never pass silently."""

import subprocess
import sys


def test_a_file_without_tests_fails(tmp_path):
    empty = tmp_path / "test_nothing.py"
    empty.write_text("# no tests here\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(empty)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 5, run.stdout + run.stderr
    assert "no tests ran" in run.stdout
