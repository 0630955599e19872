"""Is a handler's answer a value or something to await?

Service handlers answer a value now or an awaitable of it later. The
framework asks which on every request, so the test must be cheap, and it must
accept every awaitable: a native coroutine, a future, and the coroutines of a
mypyc-compiled handler (objects of a generated class with ``__await__``,
which ``types.CoroutineType`` does not cover). ``asyncio.iscoroutine`` is both
slower (about 1 µs for a plain list: an ABC check) and narrower (it refuses
futures and bare awaitables), ``inspect.isawaitable`` is slower still.

:func:`is_awaitable` answers from the object's type: the common answer types
first, then native coroutines, then a per-type cache of "has ``__await__``".
Compiled with the hot path (``peer_ring._build.HOT_MODULES``).
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Awaitable
from typing import Any, Final

__all__ = ["as_future", "is_awaitable"]

#: Answer types that are never awaitable (the fast path).
_PLAIN: Final = frozenset({type(None), bool, int, float, str, bytes, list, tuple, dict})
_CORO: Final = types.CoroutineType
_GEN: Final = types.GeneratorType
#: type -> whether its instances are awaitable (bounded: answer types are few).
_SEEN: dict[type, bool] = {}
_SEEN_MAX: Final = 256


def is_awaitable(obj: object) -> bool:
    """True when ``obj`` is to be awaited for the answer: anything with
    ``__await__`` (coroutines native or compiled, futures, tasks) and
    generator-based coroutines (``@types.coroutine``)."""
    t = type(obj)
    if t in _PLAIN:
        return False
    if t is _CORO:
        return True
    known = _SEEN.get(t)
    if known is None:
        if t is _GEN:  # awaitable or not per object (the coroutine flag of its code)
            return inspect.isawaitable(obj)
        known = getattr(t, "__await__", None) is not None
        if len(_SEEN) < _SEEN_MAX:
            _SEEN[t] = known
    return known


def as_future(aw: Awaitable[Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """Run an awaitable (one :func:`is_awaitable` accepted) as a future of ``loop``:
    a task for a coroutine, the future itself, or a task awaiting anything else."""
    if type(aw) is _CORO:
        return loop.create_task(aw)
    return asyncio.ensure_future(aw, loop=loop)
