"""taskq: the Python client of the taskq task-queue service.

    import taskq
    conn = taskq.connect()                 # $TASKQ_MASTER, $TASKQ_TOKEN_FILE, ...
    q = conn.queue("tasks")                # queue.Queue's interface, served by the master
    q.put("7"); print(q.get(timeout=5))

docs/PYTHON.md is the reference. Everything here is thread-safe unless its
docstring says otherwise.
"""

# Run from the checkout, the generated stubs (taskq/v1/*_pb2.py) live in the
# build tree (build/<preset>/python/taskq/v1): join every taskq/ directory
# on sys.path into this package, so PYTHONPATH=clients/python:build/release/python
# works. Installed with pip, they sit beside this file.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)  # noqa: F821 (set by the import system)

from taskq.errors import TaskqError  # noqa: E402
from taskq.connection import Connection, connect  # noqa: E402
from taskq.results import TaskFailed, TaskFuture  # noqa: E402
from taskq.worker import PermanentError, ReleaseTask, TaskInfo, Worker  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Connection", "TaskqError", "connect", "__version__"]
__all__ += ["PermanentError", "ReleaseTask", "TaskFailed", "TaskFuture", "TaskInfo", "Worker"]
