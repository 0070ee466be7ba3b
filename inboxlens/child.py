"""The skeleton every child process runs in (Postfix's shared server skeleton).

The supervisor starts a child with three descriptors: stdin, a pipe whose first line
is the child's configuration slice (JSON) and later lines control messages (the
vault's PID registrations), its end meaning the supervisor is gone; stdout, where
the child writes ``ready`` when it serves and nothing else; stderr, the log.

SIGTERM (or the end of stdin) sets ``channel.stopping``; the child stops accepting and
lets in-flight work finish within a deadline (``drain``). ``run`` exits 0, or 75 when
that deadline passed (``DrainExpired``), or 78 when the child could not start
(``StartError``; the supervisor does not retry it).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import resource
import signal
import sys
from typing import Any, AsyncIterator, Awaitable, Callable

from inboxlens.errors import DrainExpired, StartError

MAX_SLICE_BYTES = 1 << 20
EX_TEMPFAIL, EX_CONFIG = 75, 78
ChildMain = Callable[["Channel"], Awaitable[None]]
log = logging.getLogger("inboxlens")


class Channel:
    """The child's side of the supervisor's pipes."""

    def __init__(self, reader: asyncio.StreamReader, config: dict[str, Any]) -> None:
        self.reader = reader
        self.config = config
        self.stopping = asyncio.Event()

    async def messages(self) -> AsyncIterator[Any]:
        """Control messages until the supervisor closes the pipe; then ``stopping`` is set."""
        while True:
            try:
                line = await self.reader.readline()
            except ValueError:  # a line over the limit: the supervisor never sends one
                log.error("oversized control line; stopping")
                break
            if not line:
                break
            try:
                yield json.loads(line)
            except ValueError:
                log.error("malformed control line ignored")
        self.stopping.set()

    def ready(self) -> None:
        os.write(1, b"ready\n")


class JsonLines(logging.Formatter):
    """One JSON object per line (``log_format = "json"``), for log shippers."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "process": self.process,
                "pid": record.process, "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        return json.dumps({**line, "error": self.formatException(record.exc_info)} if record.exc_info else line)


def setup_logging(name: str, level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines(name) if fmt == "json" else
                         logging.Formatter(f"{name}[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx(2) logs full request URLs at INFO; aioimaplib logs every line it sends at DEBUG,
    # the base64 XOAUTH2 string (a bearer token) included.
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "aioimaplib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def make_undumpable() -> None:
    """No ptrace and no /proc/<pid>/mem from our own uid either, no core; exec resets it, so after exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        raise StartError(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(ctypes.get_errno())}")


def run(name: str, main: ChildMain) -> None:
    """Run a child: read its slice from stdin, then ``main`` until told to stop."""
    # Web holds client secrets and, briefly, refresh tokens; harvest holds access tokens: no core files.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    setup_logging(name)
    try:
        make_undumpable()  # issue 12.8
        asyncio.run(_run(name, main))
    except StartError as e:
        logging.getLogger(name).error("cannot start: %s", e)
        sys.exit(EX_CONFIG)
    except DrainExpired as e:
        logging.getLogger(name).error("stopped uncleanly: %s", e)
        sys.exit(EX_TEMPFAIL)


async def drain(server: asyncio.AbstractServer, seconds: float, *work: Awaitable[Any],
                cut_idle: Callable[[], None] = lambda: None) -> None:
    """Stop accepting, then wait up to ``seconds`` for open connections and ``work`` to end.

    ``cut_idle`` closes connections that wait for a request (they have nothing in flight).
    Raises DrainExpired when the deadline passes; what is still running is cancelled.
    """
    # Python 3.11's wait_closed() waits for connections only if it is waiting before close().
    closed = asyncio.ensure_future(server.wait_closed())
    await asyncio.sleep(0)
    server.close()
    cut_idle()
    done, late = await asyncio.wait([closed, *(asyncio.ensure_future(w) for w in work)], timeout=seconds)
    for task in late:
        task.cancel()
    if late:
        raise DrainExpired(f"{len(late)} piece(s) of work were still running after {seconds:g} s")
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def _run(name: str, main: ChildMain) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_SLICE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0))
    try:
        config = json.loads(await reader.readline())
    except ValueError:
        raise StartError("no configuration slice on stdin (children are started by 'inboxlens serve')") from None
    if not isinstance(config, dict):
        raise StartError("the configuration slice is not a JSON object")
    settings = config.get("config", {})
    setup_logging(name, str(settings.get("log_level", "INFO")), str(settings.get("log_format", "text")))
    channel = Channel(reader, config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, channel.stopping.set)
    await main(channel)
