"""Installing the client from the checkout without a registry: pip (Debian's
python3-pip, --no-build-isolation --no-deps) and `setup.py build` generate
the stubs from proto/ at build time; the installed package works alone, in
a fresh interpreter that sees only the install directory (plus Debian's
python3-grpcio and python3-protobuf)."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable  # Debian's /usr/bin/python3 under ctest


def copy_checkout(dest: Path) -> Path:
    """clients/python and proto/ as in the checkout (a copy, so the build's
    own files stay out of the source tree and tests may run in parallel)."""
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*_pb2*.py")
    shutil.copytree(ROOT / "clients" / "python", dest / "clients" / "python", ignore=skip)
    shutil.copytree(ROOT / "proto", dest / "proto")
    return dest / "clients" / "python"


def no_registry_env() -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1",
               PYTHONDONTWRITEBYTECODE="1")
    return env


def have_pip() -> bool:
    r = subprocess.run([PYTHON, "-m", "pip", "--version"], capture_output=True)
    return r.returncode == 0


def test_stubs_are_not_in_the_checkout():
    r = subprocess.run(["git", "ls-files", "*_pb2.py", "*_pb2_grpc.py"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"not a git checkout: {r.stderr.strip()}")
    assert r.stdout == ""


def test_pip_install_works_in_a_fresh_interpreter(master, tmp_path):
    if not have_pip():
        pytest.skip("pip is missing (Debian: apt-get install python3-pip)")
    src = copy_checkout(tmp_path / "src")
    target = tmp_path / "site"
    # --target: a directory of our own, so Debian's PEP 668 rule (no pip
    # installs into the system's site-packages) does not apply.
    r = subprocess.run([PYTHON, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                        "--target", str(target), str(src)],
                       capture_output=True, text=True, env=no_registry_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "taskq" / "v1" / "taskq_pb2.py").exists()
    assert (target / "taskq" / "v1" / "taskq_pb2_grpc.py").exists()

    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(target)!r})
        import taskq, taskq.queues
        from taskq._stubs import pb
        assert taskq.__file__.startswith({str(target)!r}), taskq.__file__
        assert pb.__file__.startswith({str(target)!r}), pb.__file__
        conn = taskq.connect({master.address!r}, token_file={master.token_file!r})
        q = conn.queue("installed")
        q.put("hello from the installed package")
        print(q.get(timeout=10))
        conn.close()
    """)
    # -I: no PYTHONPATH, no user site, not the current directory.
    r = subprocess.run([PYTHON, "-I", "-c", script], capture_output=True, text=True,
                       env=no_registry_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "hello from the installed package"


def test_setup_py_build_generates_the_stubs(tmp_path):
    src = copy_checkout(tmp_path / "src")
    r = subprocess.run([PYTHON, "setup.py", "build"], cwd=src, capture_output=True, text=True,
                       env=no_registry_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    lib = src / "build" / "lib" / "taskq"
    for f in ["__init__.py", "queues.py", "managers.py", "v1/__init__.py", "v1/taskq_pb2.py",
              "v1/taskq_pb2_grpc.py", "v1/join_bundle_pb2.py"]:
        assert (lib / f).exists(), f
    # Generated from this checkout's proto/: a field added there is in it.
    assert "manual_task_done" in (lib / "v1" / "taskq_pb2.py").read_text()


def test_build_without_proto_says_where_it_looks(tmp_path):
    src = copy_checkout(tmp_path / "src")
    shutil.rmtree(tmp_path / "src" / "proto")
    r = subprocess.run([PYTHON, "setup.py", "build"], cwd=src, capture_output=True, text=True,
                       env=no_registry_env(), timeout=300)
    assert r.returncode != 0
    assert "TASKQ_PROTO_DIR" in r.stdout + r.stderr
