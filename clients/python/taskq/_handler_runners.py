"""What runs handlers: a pool of `concurrency` threads for plain functions,
one asyncio loop thread for async ones, and the stream reader itself for
inline ones. Accepted runs wait in `waiting` until a slot is free
(`free_slots`: concurrency minus the runs started on the pool or loop);
dispatch() starts them. A pool thread that finishes a task takes the next
waiting one itself, and a batch wakes one idle thread, which wakes the
next only if more are ready (no thundering herd).

When a handler returned, `on_done(run, outcome)` (lock held) ends the run.

Thread-safety: the fields are guarded by the worker's one lock; dispatch()
expects it held. Handlers run without it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Callable, List, Optional

from taskq._handler_call import HandlerCall
from taskq._handlers import HandlerRegistry
from taskq._task_runs import TaskRun


class HandlerRunners:
    """The pool, the loop and inline runs of one worker."""

    def __init__(self, lock: threading.Lock, call: HandlerCall,
                 on_done: Callable[[TaskRun, Optional[tuple]], None]):
        self._lock = lock
        self._call = call
        self._on_done = on_done
        self._pool_cond = threading.Condition(lock)
        self.waiting: collections.deque = collections.deque()   # runs waiting for a slot
        self._ready: collections.deque = collections.deque()    # runs for the pool
        self.free_slots = 0
        self._idle_threads = 0
        self._exit = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._threads: List[threading.Thread] = []

    # -- threads -----------------------------------------------------------
    def start(self, handlers: HandlerRegistry, concurrency: int) -> None:
        """Starts the pool if a handler needs it, the loop if one is async."""
        self._exit = False
        if handlers.any_on_pool():
            for i in range(concurrency):
                t = threading.Thread(target=self._pool_main, name=f"taskq-worker-{i}", daemon=True)
                t.start()
                self._threads.append(t)
        if handlers.any_async():
            self._loop = asyncio.new_event_loop()
            ready = threading.Event()

            def loop_main() -> None:
                asyncio.set_event_loop(self._loop)
                self._loop.call_soon(ready.set)
                self._loop.run_forever()

            t = threading.Thread(target=loop_main, name="taskq-worker-asyncio", daemon=True)
            t.start()
            ready.wait()
            self._threads.append(t)

    def stop(self, stuck: bool) -> None:
        """Ends the pool threads and the loop; with a stuck handler its
        thread (a daemon) is left behind, not waited for."""
        with self._lock:
            self._exit = True
            self._pool_cond.notify_all()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self._threads:
            t.join(timeout=0 if stuck else 1.0)
        self._threads = []
        if self._loop is not None and not stuck:
            self._loop.close()

    # -- starting runs (lock held) -----------------------------------------
    def dispatch(self, wake_pool: bool, on_loop: bool = False) -> None:
        """Starts waiting runs while slots are free. on_loop: called on the
        loop thread, which starts async runs itself (no self-pipe wake-up)."""
        to_loop = None
        to_pool = False
        while self.free_slots > 0 and self.waiting:
            run = self.waiting.popleft()
            if run.settled:
                continue
            run.started = True
            self.free_slots -= 1
            if run.handler.is_async:
                if on_loop:
                    run.async_task = self._loop.create_task(self._async_main(run))
                    continue
                if to_loop is None:
                    to_loop = []
                to_loop.append(run)
            else:
                self._ready.append(run)
                to_pool = True
        if to_pool and wake_pool and self._idle_threads:
            # One thread; it wakes the next if more are ready (no herd).
            self._pool_cond.notify()
        if to_loop:
            self._loop.call_soon_threadsafe(self._start_async, to_loop)

    # -- inline (the stream reader's thread, no lock held) -------------------
    def run_inline(self, runs: List[TaskRun]) -> None:
        """Runs these runs' handlers on this thread, then ends them."""
        execute = self._call.execute
        outcomes = []
        for run in runs:
            outcomes.append(None if run.settled else execute(run))
        with self._lock:
            for run, outcome in zip(runs, outcomes):
                self._on_done(run, outcome)

    # -- the pool ----------------------------------------------------------
    def _pool_main(self) -> None:
        run: Optional[TaskRun] = None
        outcome: Optional[tuple] = None
        lock = self._lock
        execute = self._call.execute
        with lock:
            while True:
                if run is not None:
                    self._on_done(run, outcome)
                    self.free_slots += 1
                    if self.waiting:
                        self.dispatch(wake_pool=False)   # this thread takes it next
                    run = None
                while not self._ready:
                    if self._exit:
                        return
                    self._idle_threads += 1
                    self._pool_cond.wait()
                    self._idle_threads -= 1
                run = self._ready.popleft()
                if self._ready and self._idle_threads:
                    self._pool_cond.notify()
                if run.settled:
                    outcome = None
                    continue
                lock.release()
                try:
                    outcome = execute(run)
                finally:
                    lock.acquire()

    # -- the loop ----------------------------------------------------------
    def _start_async(self, runs: List[TaskRun]) -> None:
        # On the loop thread: the tasks cannot run before this returns. A
        # run settled meanwhile is not cancelled here (a task cancelled
        # before its first step never runs its body, so it would never
        # finish): _async_main sees `settled` and ends at once.
        create = self._loop.create_task
        tasks = [create(self._async_main(run)) for run in runs]
        with self._lock:
            for run, t in zip(runs, tasks):
                run.async_task = t

    async def _async_main(self, run: TaskRun) -> None:
        outcome = None
        if not run.settled:
            try:
                outcome = await self._call.execute_async(run)
            except asyncio.CancelledError:
                outcome = None  # cancelled before the handler started
        with self._lock:
            run.async_task = None
            self._on_done(run, outcome)
            self.free_slots += 1
            if self.waiting:
                self.dispatch(wake_pool=True, on_loop=True)
