#!/usr/bin/python3
"""The runtime micro-workloads of bench/runtime_bench.cc, in Python.

Runs each workload with asyncio and with gevent (python3-gevent from apt;
run it with Debian's /usr/bin/python3, which has it) and prints one JSON
object per line:
  {"impl": "asyncio", "bench": "spawn_resume", "ops": N, "ns_per_op": X,
   "runs_ns_per_op": [...], "cpu_share": C}
ns_per_op is the median of --repeat runs (default 3); cpu_share is CPU time
over wall time (below ~0.9: the machine was busy and the numbers inflated). bench/runtime.sh runs
this next to the C++ benchmark and prints the ratios.

Workloads (same meaning and sizes as in C++; keep the constants equal):
  spawn_resume      spawn N coroutines that each yield once, wait for all;
                    per coroutine
  channel_pingpong  two coroutines bounce a number through two 1-slot
                    queues; per round trip
  mutex_contended   4 coroutines x (take a lock, bump a counter, release,
                    yield); per acquisition. Single-threaded, and no switch
                    happens while the lock is held, so it is never
                    contended here (unlike rt on 2 threads)
  timer_fire        N coroutines sleeping 0..10 ms (spread evenly), wait for
                    all; per timer (the 10 ms wait included, as in C++)
  timer_insert_cancel  insert N callback timers (1 h out, spread over 100 ms)
                    then cancel them all; per timer. asyncio cancels lazily:
                    one loop pass after the cancels (inside the measurement)
                    lets it drop the cancelled handles.

usage: runtime_micro.py [--repeat N] [asyncio] [gevent]
"""
import argparse
import asyncio
import json
import statistics
import time

SPAWN_N = 100_000
PINGPONG_N = 20_000
MUTEX_N = 100_000  # acquisitions in total
MUTEX_WORKERS = 4
TIMER_N = 100_000


def fire_delay(i):
    """0 .. 9.99 ms in steps of 10 us (runtime_bench.cc FireDelay)."""
    return (i % 1000) * 10e-6


def far_delay(i):
    """1 h plus a scattered 0 .. 100 ms (runtime_bench.cc FarDelay)."""
    return 3600 + ((i * 7919) % 100_000) * 1e-6


def never():
    raise AssertionError("a cancelled timer fired")


# --- asyncio -----------------------------------------------------------------
async def aio_spawn_resume(n):
    async def child():
        await asyncio.sleep(0)
    start = time.perf_counter()
    tasks = [asyncio.create_task(child()) for _ in range(n)]
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


async def aio_pingpong(n):
    ping, pong = asyncio.Queue(1), asyncio.Queue(1)

    async def ponger():
        for _ in range(n):
            await pong.put(await ping.get())
    start = time.perf_counter()
    t = asyncio.create_task(ponger())
    for i in range(n):
        await ping.put(i)
        assert await pong.get() == i
    await t
    return time.perf_counter() - start


async def aio_mutex(n, workers=MUTEX_WORKERS):
    lock = asyncio.Lock()
    counter = 0

    async def worker():
        nonlocal counter
        for _ in range(n // workers):
            async with lock:
                counter += 1
            await asyncio.sleep(0)  # let the others run
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    elapsed = time.perf_counter() - start
    assert counter == n // workers * workers
    return elapsed


async def aio_timers(n):
    start = time.perf_counter()
    await asyncio.gather(*(asyncio.sleep(fire_delay(i)) for i in range(n)))
    return time.perf_counter() - start


async def aio_insert_cancel(n):
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    handles = [loop.call_later(far_delay(i), never) for i in range(n)]
    for h in handles:
        h.cancel()
    await asyncio.sleep(0)  # one loop pass: it drops the cancelled handles
    return time.perf_counter() - start


ASYNCIO = {
    "spawn_resume": (SPAWN_N, lambda: asyncio.run(aio_spawn_resume(SPAWN_N))),
    "channel_pingpong": (PINGPONG_N, lambda: asyncio.run(aio_pingpong(PINGPONG_N))),
    "mutex_contended": (MUTEX_N, lambda: asyncio.run(aio_mutex(MUTEX_N))),
    "timer_fire": (TIMER_N, lambda: asyncio.run(aio_timers(TIMER_N))),
    "timer_insert_cancel": (TIMER_N, lambda: asyncio.run(aio_insert_cancel(TIMER_N))),
}


# --- gevent ------------------------------------------------------------------
def gevent_workloads():
    import gevent
    import gevent.lock
    import gevent.queue

    def spawn_resume(n):
        start = time.perf_counter()
        gevent.joinall([gevent.spawn(gevent.sleep, 0) for _ in range(n)])
        return time.perf_counter() - start

    def pingpong(n):
        ping, pong = gevent.queue.Queue(1), gevent.queue.Queue(1)

        def ponger():
            for _ in range(n):
                pong.put(ping.get())
        start = time.perf_counter()
        g = gevent.spawn(ponger)
        for i in range(n):
            ping.put(i)
            assert pong.get() == i
        g.join()
        return time.perf_counter() - start

    def mutex(n, workers=MUTEX_WORKERS):
        lock = gevent.lock.Semaphore(1)
        counter = [0]

        def worker():
            for _ in range(n // workers):
                with lock:
                    counter[0] += 1
                gevent.sleep(0)
        start = time.perf_counter()
        gevent.joinall([gevent.spawn(worker) for _ in range(workers)])
        elapsed = time.perf_counter() - start
        assert counter[0] == n // workers * workers
        return elapsed

    def timers(n):
        start = time.perf_counter()
        gevent.joinall([gevent.spawn(gevent.sleep, fire_delay(i)) for i in range(n)])
        return time.perf_counter() - start

    def insert_cancel(n):
        loop = gevent.get_hub().loop
        start = time.perf_counter()
        watchers = []
        for i in range(n):
            t = loop.timer(far_delay(i))
            t.start(never)
            watchers.append(t)
        for t in watchers:
            t.close()  # stop + release, like rt's Cancel + destroy
        return time.perf_counter() - start

    return {
        "spawn_resume": (SPAWN_N, lambda: spawn_resume(SPAWN_N)),
        "channel_pingpong": (PINGPONG_N, lambda: pingpong(PINGPONG_N)),
        "mutex_contended": (MUTEX_N, lambda: mutex(MUTEX_N)),
        "timer_fire": (TIMER_N, lambda: timers(TIMER_N)),
        "timer_insert_cancel": (TIMER_N, lambda: insert_cancel(TIMER_N)),
    }


def run(impl, workloads, repeat):
    for bench, (ops, fn) in workloads.items():
        runs, cpu_share = [], []
        for _ in range(repeat):
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            runs.append(fn() * 1e9 / ops)
            cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
            cpu_share.append(cpu / wall)
        # cpu_share: CPU time / wall time of this single-threaded process;
        # well below 1 means other processes took the CPU (timer_fire also
        # idles for its 10 ms).
        print(json.dumps({"impl": impl, "bench": bench, "ops": ops,
                          "ns_per_op": statistics.median(runs),
                          "runs_ns_per_op": runs,
                          "cpu_share": statistics.median(cpu_share)}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("impls", nargs="*", metavar="asyncio|gevent",
                        help="which to run (default: both)")
    args = parser.parse_args()
    only = set(args.impls) or {"asyncio", "gevent"}
    if only - {"asyncio", "gevent"}:
        parser.error(f"unknown implementation(s): {', '.join(sorted(only - {'asyncio', 'gevent'}))}")
    if "asyncio" in only:
        run("asyncio", ASYNCIO, args.repeat)
    if "gevent" in only:
        try:
            workloads = gevent_workloads()
        except ImportError as e:
            print(json.dumps({"impl": "gevent", "error": f"{e} (apt-get install python3-gevent; "
                              "run with /usr/bin/python3)"}), flush=True)
        else:
            run("gevent", workloads, args.repeat)


if __name__ == "__main__":
    main()
