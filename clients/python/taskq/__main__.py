"""`python3 -m taskq`: the package's command line.

    python3 -m taskq --help
    python3 -m taskq worker MODULE[:ATTR] [--master HOST:PORT] [--token-file PATH]
                     [--tls-ca FILE] [--join FILE] [--queue NAME]... [--concurrency N]
                     [--prefetch N] [--drain-timeout S] [--id NAME] [--log-level LEVEL]

`worker` imports MODULE (the current directory comes first on the path) and
runs its taskq.Worker ATTR (default `worker`) until SIGTERM/SIGINT, which
drain it; the exit status is then 0. The connection is made from the flags,
else the environment ($TASKQ_JOIN, $TASKQ_MASTER, $TASKQ_TOKEN_FILE,
$TASKQ_TLS_CA) as the `taskq` CLI makes it; a Worker created with its own
connection keeps it when no connection flag is given. --queue,
--concurrency, --prefetch, --drain-timeout and --id override the Worker's.
Exit status: 0 after a stop, 1 if no connection could be made, 2 for a
usage error (bad flags, MODULE or ATTR).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from typing import List, Optional

DESCRIPTION = """\
taskq: the Python client of the taskq task-queue service.

In Python:  import taskq; conn = taskq.connect(); q = conn.queue("tasks")
            (queue.Queue's interface), conn.submit()/conn.map() (futures),
            taskq.Worker (Python functions as handlers).
Commands:   python3 -m taskq worker MODULE[:ATTR]   run a taskq.Worker
The `taskq` CLI binary (taskq --help) submits tasks, reads results and manages
queues; taskq-master and taskq-worker are the server and the C++ worker.
Reference: docs/PYTHON.md (and docs/PYTHON-worker.md for workers).
"""

WORKER_DESCRIPTION = """\
Import MODULE (from the current directory too) and run the taskq.Worker named
ATTR in it (default: `worker`), e.g. `python3 -m taskq worker tasks:worker`
for tasks.py holding `worker = taskq.Worker(queues=["tasks"])` and its
@worker.handler functions. SIGTERM or Ctrl-C drains it (running tasks finish,
up to --drain-timeout) and it exits 0; a second one stops at once.
The connection comes from the flags, else $TASKQ_JOIN, $TASKQ_MASTER,
$TASKQ_TOKEN_FILE and $TASKQ_TLS_CA (as the taskq CLI).
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m taskq", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    w = sub.add_parser("worker", help="run a taskq.Worker from a module",
                       description=WORKER_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("target", metavar="MODULE[:ATTR]", help="module and Worker object (default ATTR: worker)")
    w.add_argument("--master", metavar="HOST:PORT", help="the master (default $TASKQ_MASTER, else 127.0.0.1:5000)")
    w.add_argument("--token-file", metavar="PATH", help="the token file, mode 0600 (default $TASKQ_TOKEN_FILE, else ~/.config/taskq/token)")
    w.add_argument("--tls-ca", metavar="FILE", help="PEM CA of the master's certificate (implies TLS; default $TASKQ_TLS_CA)")
    w.add_argument("--join", metavar="FILE", help="a join bundle (default $TASKQ_JOIN)")
    w.add_argument("--keepalive", type=float, default=2.0, metavar="SECONDS",
                   help="keepalive ping period; a dead link is noticed within twice this (default 2)")
    w.add_argument("--queue", action="append", metavar="NAME", help="queue to serve (repeatable; overrides the Worker's)")
    w.add_argument("--concurrency", type=int, metavar="N", help="handlers running at once (overrides the Worker's)")
    w.add_argument("--prefetch", type=int, metavar="N", help="tasks taken beyond --concurrency (overrides the Worker's)")
    w.add_argument("--drain-timeout", type=float, metavar="SECONDS", help="on SIGTERM, how long running tasks may finish")
    w.add_argument("--id", metavar="NAME", help="the worker id the master shows (default hostname:pid)")
    w.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def _load_worker(target: str):
    import taskq
    module_name, _, attr = target.partition(":")
    attr = attr or "worker"
    if not module_name:
        raise SystemExit(f"python3 -m taskq worker: {target!r} names no module (MODULE[:ATTR])")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SystemExit(f"python3 -m taskq worker: cannot import {module_name}: {e}") from None
    except Exception as e:  # the module's own code failed: show where
        traceback.print_exc()
        raise SystemExit(f"python3 -m taskq worker: importing {module_name} failed: "
                         f"{type(e).__name__}: {e}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SystemExit(f"python3 -m taskq worker: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, taskq.Worker):
        raise SystemExit(f"python3 -m taskq worker: {module_name}:{attr} is a "
                         f"{type(obj).__name__}, not a taskq.Worker")
    return obj


def worker_main(args: argparse.Namespace) -> int:
    import taskq
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        worker = _load_worker(args.target)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    try:
        if args.queue:
            worker.queues = list(args.queue)
        if args.concurrency is not None:
            worker.concurrency = args.concurrency
        if args.prefetch is not None:
            worker.prefetch = args.prefetch
        if args.drain_timeout is not None:
            worker.drain_timeout = args.drain_timeout
        if args.id:
            worker.worker_id = args.id
        worker.validate()
    except ValueError as e:
        print(f"python3 -m taskq worker: {e}", file=sys.stderr)
        return 2
    conn = None
    if worker.conn is None or args.master or args.token_file or args.tls_ca or args.join:
        try:
            conn = taskq.connect(args.master, token_file=args.token_file, tls_ca=args.tls_ca,
                                 join=args.join, keepalive=args.keepalive)
        except taskq.TaskqError as e:
            print(f"python3 -m taskq worker: {e.details}", file=sys.stderr)
            return 1
    try:
        worker.run(conn)
    finally:
        if conn is not None:
            conn.close()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "worker":
        return worker_main(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
