"""The handler registry: which function serves which handler name, and how
the worker calls it (async on the loop, plain on the thread pool or inline;
with or without a `task` parameter).

Thread-safety: Worker.register() adds handlers under the worker's lock and
only before run(); once run() started the registry does not change, so the
threads that run tasks read it without a lock.
"""

from __future__ import annotations

import inspect
import re
from typing import Callable, Dict, Optional

# Handler and queue names, as the master accepts them.
NAME_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class Handler:
    """One registered function and how it is called."""

    __slots__ = ("name", "fn", "is_async", "wants_task", "inline")

    def __init__(self, name: str, fn: Callable, is_async: bool, wants_task: bool, inline: bool):
        self.name, self.fn, self.is_async = name, fn, is_async
        self.wants_task, self.inline = wants_task, inline


def describe_handler(name: str, fn: Callable, inline: bool) -> Handler:
    """A Handler for `fn`; ValueError/TypeError for a bad name, a function
    that cannot be called, or an async one asked to run inline."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"bad handler name {name!r}: 1-128 characters from [A-Za-z0-9_.:-]")
    if not callable(fn):
        raise TypeError(f"handler {name!r} is not callable")
    is_async = _is_async_callable(fn)
    if inline and is_async:
        raise ValueError(f"handler {name!r}: an async function cannot run inline")
    return Handler(name, fn, is_async, _takes_task(fn), inline)


class HandlerRegistry:
    """Handlers by name. `get(name)` is the dict's own lookup (it runs for
    every delivery)."""

    def __init__(self) -> None:
        self._by_name: Dict[str, Handler] = {}
        self.get: Callable[[str], Optional[Handler]] = self._by_name.get

    def add(self, handler: Handler) -> None:
        """Registers `handler`, replacing one of the same name."""
        self._by_name[handler.name] = handler

    def functions(self) -> Dict[str, Callable]:
        """The registered functions by name (a copy)."""
        return {n: h.fn for n, h in self._by_name.items()}

    def any_on_pool(self) -> bool:
        """True if some handler needs the thread pool (plain, not inline)."""
        return any(not h.is_async and not h.inline for h in self._by_name.values())

    def any_async(self) -> bool:
        """True if some handler needs the asyncio loop."""
        return any(h.is_async for h in self._by_name.values())


def _is_async_callable(fn: Callable) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def _takes_task(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("task")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
