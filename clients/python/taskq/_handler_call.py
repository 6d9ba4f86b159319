"""Calling one task's handler: decode the task's item, call the function
(plain or async), and turn what it did into an outcome: its result
encoded like the item, a failure with the exception's text (permanent for
PermanentError, an undecodable item, a result that cannot be encoded or a
handler name nobody registered), or a release (ReleaseTask).

Outcomes are tuples: (OK, result) | (FAIL, text, permanent) |
(RELEASE, delay_ms); None = no outcome (the task was stopped).

Thread-safety: a HandlerCall holds no state of its own; pool threads, the
stream reader (inline) and the asyncio loop call it at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional

from taskq._handler_api import PermanentError, ReleaseTask, TaskInfo
from taskq.serializers import ENCODING_HEADER

log = logging.getLogger("taskq.worker")

OK, FAIL, RELEASE = 0, 1, 2
MAX_ERROR_BYTES = 4096
MAX_DELAY_MS = 365 * 24 * 3600 * 1000


def clean_error(text: str) -> str:
    """Valid UTF-8, at most 4 KiB, as the C++ worker sends."""
    data = text.encode("utf-8", "replace")
    if len(data) <= MAX_ERROR_BYTES:
        return data.decode("utf-8", "replace")
    return data[:MAX_ERROR_BYTES].decode("utf-8", "ignore")


def exception_text(e: BaseException) -> str:
    """A failure's text: "Type: message" (a PermanentError's own message)."""
    text = str(e)
    if isinstance(e, PermanentError) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class HandlerCall:
    """Runs handlers for a worker. `settings` is the Worker (its serializer
    and worker_id are read when used); `task_info(run)` gives a run's
    TaskInfo."""

    def __init__(self, settings: Any, task_info: Callable[[Any], TaskInfo]):
        self._settings = settings
        self._task_info = task_info

    def _decode(self, task: Any) -> tuple:
        """(tag, item, None), or (tag, None, a permanent failure) when the
        payload cannot be decoded (e.g. pickled, without the opt-in)."""
        tag = task.headers.get(ENCODING_HEADER, "") if task.headers else ""
        try:
            return tag, self._settings.serializer.decode(task.payload, tag), None
        except Exception as e:
            return tag, None, (FAIL, clean_error(f"cannot decode the task's payload: {e}"), True)

    def execute(self, run: Any) -> tuple:
        """Runs a plain function's task; its outcome."""
        h = run.handler
        task = run.task
        if h is None:
            return (FAIL, clean_error(f'no handler named "{task.handler}" on worker '
                                      f"{self._settings.worker_id}"), True)
        tag, item, failure = self._decode(task)
        if failure is not None:
            return failure
        serializer = self._settings.serializer
        try:
            if h.wants_task:
                value = h.fn(item, task=self._task_info(run))
            else:
                value = h.fn(item)
        except BaseException as e:  # noqa: B902 - a handler must never end the thread
            return self._failure(run, e)
        return self._encode(serializer, value, tag)

    async def execute_async(self, run: Any) -> Optional[tuple]:
        """Runs an async function's task on the loop; its outcome, None if
        the task was stopped (cancelled because it was settled)."""
        h = run.handler
        task = run.task
        tag, item, failure = self._decode(task)
        if failure is not None:
            return failure
        serializer = self._settings.serializer
        try:
            if h.wants_task:
                value = await h.fn(item, task=self._task_info(run))
            else:
                value = await h.fn(item)
        except asyncio.CancelledError as e:
            if run.settled:
                return None
            return self._failure(run, e)
        except BaseException as e:  # noqa: B902 - SystemExit would stop the loop itself
            return self._failure(run, e)
        return self._encode(serializer, value, tag)

    @staticmethod
    def _encode(serializer: Any, value: Any, tag: str) -> tuple:
        try:
            return (OK, serializer.encode_like(value, tag))
        except Exception as e:
            return (FAIL, clean_error(f"the handler's result cannot be encoded: "
                                      f"{exception_text(e)}"), True)

    @staticmethod
    def _failure(run: Any, e: BaseException) -> tuple:
        if isinstance(e, ReleaseTask):
            delay_ms = min(int(e.delay * 1000), MAX_DELAY_MS, 2 ** 32 - 1)
            return (RELEASE, delay_ms)
        permanent = isinstance(e, PermanentError)
        text = clean_error(exception_text(e))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("task %d (%s) failed%s: %s", run.task_id, run.handler.name,
                      " permanently" if permanent else "", text, exc_info=e)
        return (FAIL, text, permanent)
