"""CPU time of one asyncio thread, split by phase, right even while many tasks interleave.

Timing a phase with ``thread_time()`` around an ``await`` counts whatever else the loop ran
meanwhile; with eight syncs at once that is most of it. ``PhaseClock`` charges CPU at every
switch instead: each callback the loop runs (``Handle._run``) is charged to the phase of the
task it steps, and the loop's own work between callbacks to ``EVENT_LOOP``. A task's phase is
a context variable, set for the length of a call by ``tagged`` wrappers (``patched`` puts them
on classes and modules, and takes them off again). Bytes that arrive on a socket are charged
to the phase that last wrote to it (an IMAP command's or a query's answer belongs to the
phase that sent it): the transport's ``_read_ready`` runs in the context of whoever opened
the connection, which is the wrong one.

For the benchmarks only: it patches asyncio's internals (``Handle._run``, the selector socket
transport's ``write``) while ``installed``, and costs two ``thread_time()`` calls a callback.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import asyncio.selector_events
import functools
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

EVENT_LOOP = "event loop"
UNTAGGED = "other"
PHASE: ContextVar[str] = ContextVar("bench_phase", default=UNTAGGED)
_Transport: Any = getattr(asyncio.selector_events, "_SelectorSocketTransport")  # private: no stub


class PhaseClock:
    """Seconds of this thread's CPU by phase, while ``installed``."""

    def __init__(self) -> None:
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self._current = EVENT_LOOP
        self._since = time.thread_time()
        self._writers: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()

    def switch(self, phase: str) -> None:
        now = time.thread_time()
        self.cpu[self._current] += now - self._since
        self._since, self._current = now, phase

    def _phase_of(self, handle: asyncio.Handle) -> str:
        owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
        if isinstance(owner, _Transport) and owner in self._writers:
            return self._writers[owner]
        context = handle._context  # type: ignore[attr-defined]
        return context.get(PHASE, UNTAGGED) if context is not None else EVENT_LOOP

    @contextmanager
    def installed(self) -> Iterator[PhaseClock]:
        clock, run, write = self, asyncio.events.Handle._run, _Transport.write

        def charged_run(handle: asyncio.Handle) -> None:
            clock.switch(clock._phase_of(handle))
            try:
                run(handle)
            finally:
                clock.switch(EVENT_LOOP)

        def noted_write(transport: Any, data: Any) -> None:
            clock._writers[transport] = PHASE.get()
            write(transport, data)

        self._since, self._current = time.thread_time(), EVENT_LOOP
        setattr(asyncio.events.Handle, "_run", charged_run)
        _Transport.write = noted_write
        try:
            yield self
        finally:
            setattr(asyncio.events.Handle, "_run", run)
            _Transport.write = write
            self.switch(EVENT_LOOP)

    def tagged(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` (a coroutine function or a plain one) charged to ``phase`` while it runs."""
        clock = self
        if asyncio.iscoroutinefunction(function):
            @functools.wraps(function)
            async def charged(*args: Any, **kwargs: Any) -> Any:
                token = PHASE.set(phase)
                clock.switch(phase)
                try:
                    return await function(*args, **kwargs)
                finally:
                    PHASE.reset(token)
                    clock.switch(PHASE.get())
            return charged

        @functools.wraps(function)
        def charged_now(*args: Any, **kwargs: Any) -> Any:
            token = PHASE.set(phase)
            clock.switch(phase)
            try:
                return function(*args, **kwargs)
            finally:
                PHASE.reset(token)
                clock.switch(PHASE.get())
        return charged_now

    @contextmanager
    def patched(self, targets: Sequence[tuple[object, Sequence[str], str]]) -> Iterator[None]:
        """Each (class or module, attribute names, phase): the attributes ``tagged`` until exit."""
        saved = [(owner, name, vars(owner)[name]) for owner, names, _ in targets for name in names]
        try:
            for owner, names, phase in targets:
                for name in names:
                    setattr(owner, name, self.tagged(phase, vars(owner)[name]))
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)
