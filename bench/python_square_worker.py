"""The square workload's handler as a Python taskq worker, for
bench/python_square.sh: `python3 -m taskq worker python_square_worker`.

The result text is what taskq-square-bench checks ("n * n = n*n"), the same
as the C++ worker's built-in `square`. With $TASKQ_BENCH_INLINE=1 the
handler runs inline (on the thread reading the stream, no hand-off to the
thread pool; docs/PYTHON-worker.md, "Speed"); with $TASKQ_BENCH_ASYNC=1 it
is an `async def` run on the worker's asyncio loop.
"""

import os

import taskq

worker = taskq.Worker(queues=["bench.tasks"], concurrency=4, prefetch=64)


def square(payload: bytes) -> str:
    n = int(payload)
    return f"{n} * {n} = {n * n}"


async def square_async(payload: bytes) -> str:
    n = int(payload)
    return f"{n} * {n} = {n * n}"


if os.environ.get("TASKQ_BENCH_ASYNC") == "1":
    worker.register("square", square_async)
else:
    worker.register("square", square, inline=os.environ.get("TASKQ_BENCH_INLINE") == "1")


def _profile_all_threads(path: str) -> None:
    """Profiles every Python thread of this worker with cProfile (the
    module only sees the main thread) and writes the merged stats to
    `path` when run() returns: bench/python_square.sh --profile."""
    import cProfile
    import pstats
    import threading

    profiles = []
    lock = threading.Lock()
    thread_run = threading.Thread.run

    def profiled_run(self):
        prof = cProfile.Profile()
        prof.enable()
        try:
            thread_run(self)
        finally:
            prof.disable()
            with lock:
                profiles.append(prof)

    threading.Thread.run = profiled_run
    worker_run = worker.run

    def profiled_worker_run(*args, **kwargs):
        prof = cProfile.Profile()
        prof.enable()
        try:
            worker_run(*args, **kwargs)
        finally:
            prof.disable()
            with lock:
                stats = pstats.Stats(prof)
                for p in profiles:
                    stats.add(p)
                stats.dump_stats(path)

    worker.run = profiled_worker_run


if os.environ.get("TASKQ_BENCH_PROFILE"):
    _profile_all_threads(os.environ["TASKQ_BENCH_PROFILE"])
