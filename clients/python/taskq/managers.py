"""taskq.managers.QueueManager: multiprocessing.managers.BaseManager's shape,
with the queues on a taskq master, so scripts written for BaseManager (the
seed's task_master.py / task_worker.py) run with their import and connect
lines changed:

    from taskq.managers import BaseManager          # was multiprocessing.managers

    class QueueManager(BaseManager):
        pass

    QueueManager.register('get_task_queue')         # -> taskq queue "task"
    QueueManager.register('get_result_queue')       # -> taskq queue "result"
    m = QueueManager()                               # was (address=..., authkey=...)
    m.connect()                                      # or m.start(): both connect
    task = m.get_task_queue()                        # a taskq.queues.Queue
    ...
    m.shutdown()                                     # closes the connection

What maps to what:
- register('get_<x>_queue') gives the manager a method returning the taskq
  queue "<x>" (register(typeid, queue="name") names it explicitly; other
  typeids name the queue after themselves). A `callable=` is accepted and
  never called: the queue lives on the master, not in this process.
- QueueManager(address, authkey): address is (host, port) or "host:port"
  (host '' means 127.0.0.1); None finds the master as taskq.connect() does
  ($TASKQ_JOIN, $TASKQ_MASTER, 127.0.0.1:5000). The credential is a taskq
  token: token_file= (or $TASKQ_TOKEN_FILE, ~/.config/taskq/token), or
  authkey= holding the token itself. There is no shared secret like
  BaseManager's authkey.
- start() does not start a server: the taskq master is the server and
  must be running. start() and connect() both connect to it.
- shutdown() closes this manager's connection; the queues and their items
  stay on the master (BaseManager's shutdown stops its server and the
  queues with it).
- Items are encoded with serializer="json" by default (ints, lists, dicts
  round-trip as BaseManager's pickling would for those), bytes and str as
  such; serializer="pickle" is opt-in (unpickling runs code chosen by
  whoever put the item).

Thread-safety: a connected manager and the queues it returns are safe to
use from any thread; register() changes the class and belongs at import
time, as with BaseManager.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple, Union

from taskq.connection import DEFAULT_MASTER, Connection, connect, read_join_bundle
from taskq.queues import Queue

Address = Union[None, str, Tuple[str, int]]


def master_address() -> str:
    """The master's address as taskq.connect() would find it without
    arguments: the join bundle's first ($TASKQ_JOIN), else $TASKQ_MASTER,
    else 127.0.0.1:5000."""
    join = os.environ.get("TASKQ_JOIN")
    if join:
        return read_join_bundle(join).master[0]
    return os.environ.get("TASKQ_MASTER") or DEFAULT_MASTER


def _address_text(address: Address) -> Optional[str]:
    if address is None or isinstance(address, str):
        return address or None
    host, port = address
    host = host or "127.0.0.1"  # BaseManager's '' (all interfaces) as a client
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{int(port)}"


def _queue_name(typeid: str) -> str:
    if typeid.startswith("get_") and typeid.endswith("_queue") and len(typeid) > len("get__queue"):
        return typeid[len("get_"):-len("_queue")]
    return typeid


class QueueManager:
    """A BaseManager-shaped handle on a taskq master (module docstring).

    address: (host, port), "host:port" or None (as taskq.connect()).
    authkey: the taskq token (bytes or str); usually left out in favour of
      token_file= / $TASKQ_TOKEN_FILE.
    serializer: items' encoding for the queues it returns ("json" default,
      None for bytes/str only, "pickle" opt-in).
    Other keywords (token_file, tls_ca, join, connect_timeout, ...) go to
    taskq.connect().
    """

    _registry: Dict[str, Dict[str, Any]] = {}

    def __init__(self, address: Address = None, authkey: Union[None, bytes, str] = None, *,
                 serializer: Optional[str] = "json", **connect_options: Any):
        self.address = _address_text(address)
        if isinstance(authkey, bytes):
            authkey = authkey.decode("utf-8")
        self._token = authkey or None
        self._serializer = serializer
        self._connect_options = connect_options
        self._conn: Optional[Connection] = None
        self._queues: Dict[str, Queue] = {}

    @classmethod
    def register(cls, typeid: str, callable: Optional[Callable[..., Any]] = None, *,
                 queue: Optional[str] = None, kind: Optional[str] = None,
                 maxsize: Optional[int] = None, serializer: Any = "default",
                 **basemanager_options: Any) -> None:
        """Adds method `typeid` to the class; it returns the taskq queue
        `queue` (default: "<x>" for "get_<x>_queue", else typeid).

        callable and BaseManager's other options (proxytype, exposed,
        method_to_typeid, create_method) are accepted and not used. kind and
        maxsize: as Connection.queue (left out: the queue as the master has
        it). serializer: this queue's, instead of the manager's.
        """
        if not isinstance(typeid, str) or not typeid.isidentifier():
            raise ValueError(f"register needs a method name, not {typeid!r}")
        if "_registry" not in cls.__dict__:
            cls._registry = dict(cls._registry)  # a subclass's own, as BaseManager
        cls._registry[typeid] = {"queue": queue or _queue_name(typeid), "kind": kind,
                                 "maxsize": maxsize, "serializer": serializer}

        def method(self: "QueueManager") -> Queue:
            return self._queue(typeid)

        method.__name__ = typeid
        method.__doc__ = f"The taskq queue {cls._registry[typeid]['queue']!r}."
        setattr(cls, typeid, method)

    # -- connecting ------------------------------------------------------
    def connect(self) -> None:
        """Connects to the master (lazily: the first queue call waits for it)."""
        if self._conn is not None:
            return
        options = dict(self._connect_options)
        if self._token is not None:
            options.setdefault("token", self._token)
        self._conn = connect(self.address, **options)
        self.address = self._conn.address

    def start(self, initializer: Optional[Callable[..., Any]] = None, initargs: tuple = ()) -> None:
        """Connects, as connect(): the taskq master is the server, so
        nothing is started here. `initializer(*initargs)` is called in this
        process if given (BaseManager calls it in the server's)."""
        if initializer is not None:
            initializer(*initargs)
        self.connect()

    def get_server(self) -> Any:
        raise NotImplementedError("the taskq master is the server: run taskq-master, "
                                  "then connect() or start() from any process")

    def shutdown(self) -> None:
        """Closes the connection. The queues and their items stay on the
        master."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._queues.clear()

    def __enter__(self) -> "QueueManager":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    @property
    def connection(self) -> Connection:
        """The taskq.Connection (after connect()/start())."""
        if self._conn is None:
            raise RuntimeError("not connected: call connect() or start() first")
        return self._conn

    # -- queues ----------------------------------------------------------
    def _queue(self, typeid: str) -> Queue:
        conn = self.connection
        q = self._queues.get(typeid)
        if q is None:
            spec = type(self)._registry[typeid]
            serializer = self._serializer if spec["serializer"] == "default" else spec["serializer"]
            q = conn.queue(spec["queue"], kind=spec["kind"], maxsize=spec["maxsize"],
                           serializer=serializer)
            self._queues[typeid] = q
        return q


# The name the seed's scripts subclass: `from taskq.managers import BaseManager`.
BaseManager = QueueManager

__all__ = ["BaseManager", "QueueManager", "master_address"]
