"""cassandra-driver, seen from asyncio: connect, prepare, run statements, page through rows.

The driver does its network IO on its own thread (libev, else asyncore). Its blocking
calls (``Cluster.connect``, ``prepare``, ``shutdown``) run in the loop's executor; queries
go out with ``execute_async`` and each result page comes back to the loop through
``ResponseFuture.add_callbacks`` and ``loop.call_soon_threadsafe``. Every query is a
prepared statement marked idempotent (every write the store makes is an upsert or a delete,
so a retried or speculative attempt changes nothing), runs at LOCAL_QUORUM, and pages
``FETCH_SIZE`` rows at a time. A semaphore bounds the statements in flight per store.

Errors: the driver's exceptions become ``CassandraUnavailable`` naming the statement; the
password is never part of a message (the server does not echo it, and connect errors are
scrubbed anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence, TypeVar

from inboxlens.config.schema import MetricsConfig
from inboxlens.service_errors import MetricsUnavailable

log = logging.getLogger(__name__)

Row = Mapping[str, Any]
T = TypeVar("T")
R = TypeVar("R")

DEFAULT_PORT = 9042
FETCH_SIZE = 1000  # rows per page: bounds the memory of one read, whatever the partition holds
MAX_IN_FLIGHT = 128  # statements per store at once; the driver allows far more per connection
SCHEMA_FILE = Path(__file__).with_name("schema.cql")
SCHEMA_TIMEOUT_SECONDS = 60.0  # DDL waits for schema agreement across the cluster
_KEYSPACE_NAME = re.compile(r"[A-Za-z0-9_]{1,48}")


class CassandraUnavailable(MetricsUnavailable):
    """The world's fault: the cluster cannot be reached, timed out or refused a statement."""


def contact_points(hosts: Sequence[str]) -> list[tuple[str, int]]:
    """"host", "host:port", "[v6]:port" or a bare IPv6 address, as the driver takes them."""
    return [_contact_point(h.strip()) for h in hosts if h.strip()]


def _contact_point(host: str) -> tuple[str, int]:
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        return address, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    if host.count(":") == 1:
        address, port = host.split(":")
        return address, int(port)
    return host, DEFAULT_PORT


def keyspace_name(name: str) -> str:
    """The keyspace name, refused unless it is safe to put into CQL text."""
    if not _KEYSPACE_NAME.fullmatch(name):
        raise ValueError("a keyspace name is 1-48 letters, digits or '_'")
    return name


def keyspace_cql(name: str, replication_factor: int, local_dc: str = "") -> str:
    """NetworkTopologyStrategy in the local data centre when one is named, else SimpleStrategy."""
    if local_dc:
        replication = f"{{'class': 'NetworkTopologyStrategy', '{_quote(local_dc)}': {int(replication_factor)}}}"
    else:
        replication = f"{{'class': 'SimpleStrategy', 'replication_factor': {int(replication_factor)}}}"
    return f"CREATE KEYSPACE IF NOT EXISTS {keyspace_name(name)} WITH replication = {replication}"


def _quote(text: str) -> str:
    return text.replace("'", "''")


def schema_statements(text: str, keyspace: str) -> list[str]:
    """The schema file's statements: comments dropped, split at ';', the keyspace filled in."""
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    statements = (s.strip() for s in "\n".join(lines).split(";"))
    return [s.replace("{keyspace}", keyspace_name(keyspace)) for s in statements if s]


async def gather_bounded(items: Iterable[T], work: Callable[[T], Awaitable[R]], limit: int = MAX_IN_FLIGHT) -> list[R]:
    """work(item) for every item, at most limit at once, results in order; the first error cancels the rest."""
    indexed = list(enumerate(items))
    results: list[Any] = [None] * len(indexed)
    queue = iter(indexed)

    async def worker() -> None:
        for i, item in queue:
            results[i] = await work(item)

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(indexed)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results


class Pages:
    """One ResponseFuture's result pages, handed from the driver's IO thread to the loop."""

    def __init__(self, future: Any, loop: asyncio.AbstractEventLoop, what: str) -> None:
        self._future = future
        self._loop = loop
        self._what = what
        self._queue: asyncio.Queue[list[Row] | BaseException] = asyncio.Queue()
        # Registered once: the driver calls them again for every page it fetches.
        future.add_callbacks(self._page, self._failed)

    def _page(self, rows: Any) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, list(rows or ()))

    def _failed(self, error: BaseException) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, error)

    async def __aiter__(self) -> AsyncIterator[list[Row]]:
        while True:
            page = await self._queue.get()
            if isinstance(page, BaseException):
                raise CassandraUnavailable(f"{self._what}: {type(page).__name__}: {page}") from page
            yield page
            if not self._future.has_more_pages:
                return
            self._future.start_fetching_next_page()


@dataclass
class CqlSession:
    """A connected driver session with the store's statements prepared by name."""

    cluster: Any
    session: Any
    timeout: float
    statements: dict[str, Any]
    limit: asyncio.Semaphore
    keyspace: str = ""  # the one its statements name (set by prepare)

    async def rows(self, name: str, *params: Any, limit: int | None = None) -> list[Row]:
        """The rows the statement selects (up to limit), page by page; the partitions read are bounded."""
        found: list[Row] = []
        async with contextlib.aclosing(self.pages(name, *params)) as pages:
            async for page in pages:
                found.extend(page)
                if limit is not None and len(found) >= limit:
                    return found[:limit]
        return found

    async def pages(self, name: str, *params: Any) -> AsyncGenerator[list[Row], None]:
        async with self.limit:
            bound = self.statements[name].bind(params)
            bound.fetch_size = FETCH_SIZE
            future = self.session.execute_async(bound, timeout=self.timeout)
            async for page in Pages(future, asyncio.get_running_loop(), name):
                yield page

    async def run(self, name: str, *params: Any) -> None:
        """A write (or a read whose rows do not matter)."""
        async for _ in self.pages(name, *params):
            pass

    async def each(self, name: str, params: Iterable[Sequence[Any]]) -> None:
        """The statement once per parameter tuple, a bounded number in flight."""
        await gather_bounded(params, lambda p: self.run(name, *p))

    async def ddl(self, cql: str) -> None:
        """A schema change, answered only once every live node agrees on the schema.

        Otherwise the next statement, prepared on another coordinator, could find no table.
        """
        what = cql.split("(")[0].strip()
        future = self.session.execute_async(cql, timeout=max(self.timeout, SCHEMA_TIMEOUT_SECONDS))
        async for _ in Pages(future, asyncio.get_running_loop(), what):
            pass
        if getattr(future, "is_schema_agreed", True) is False:
            raise CassandraUnavailable(f"{what}: the cluster's nodes did not agree on the schema within "
                                       f"{SCHEMA_TIMEOUT_SECONDS:g} s; run 'inboxlens migrate' again once all are up")

    async def prepare(self, statements: Mapping[str, str], keyspace: str) -> None:
        """Prepare each statement with its tables named in full (``keyspace.table``).

        The session has no current keyspace: ``USE`` with prepared statements is ambiguous,
        and Cassandra 5 warns about it on every connect.
        """
        loop = asyncio.get_running_loop()
        self.keyspace = keyspace
        for name, cql in statements.items():
            prepared = await loop.run_in_executor(None, self.session.prepare, qualify(cql, keyspace))
            prepared.is_idempotent = True
            self.statements[name] = prepared

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.cluster.shutdown)


async def connect(config: MetricsConfig, keyspace: str | None) -> CqlSession:
    """A session on the configured cluster (in the keyspace, if named), at LOCAL_QUORUM."""
    cluster = _cluster(config)
    try:
        session = await asyncio.get_running_loop().run_in_executor(None, cluster.connect, keyspace)
    except Exception as e:
        await asyncio.get_running_loop().run_in_executor(None, cluster.shutdown)
        message = scrub(f"{type(e).__name__}: {e}", config.cassandra_password)
        raise CassandraUnavailable(f"cannot connect to Cassandra at {', '.join(config.cassandra_hosts)}: "
                                   f"{message}") from None
    return CqlSession(cluster, session, config.cassandra_timeout_seconds, {}, asyncio.Semaphore(MAX_IN_FLIGHT))


_TABLE_AFTER = re.compile(r"\b(FROM|INTO|UPDATE)\s+(\w+)\b")


def qualify(cql: str, keyspace: str) -> str:
    """``SELECT ... FROM t`` → ``SELECT ... FROM keyspace.t`` (likewise INTO and UPDATE)."""
    return _TABLE_AFTER.sub(lambda m: f"{m[1]} {keyspace_name(keyspace)}.{m[2]}", cql)


def scrub(text: str, secret: str) -> str:
    return text.replace(secret, "<hidden>") if secret else text


def _cluster(config: MetricsConfig) -> Any:
    from cassandra import ConsistencyLevel
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
    from cassandra import ProtocolVersion
    from cassandra.query import dict_factory

    balancing = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.cassandra_local_dc or None))
    profile = ExecutionProfile(load_balancing_policy=balancing, consistency_level=ConsistencyLevel.LOCAL_QUORUM,
                               request_timeout=config.cassandra_timeout_seconds, row_factory=dict_factory)
    auth = (PlainTextAuthProvider(config.cassandra_username, config.cassandra_password)
            if config.cassandra_username else None)
    return Cluster(contact_points=contact_points(config.cassandra_hosts), auth_provider=auth,
                   execution_profiles={EXEC_PROFILE_DEFAULT: profile},
                   # v5 is what Cassandra 4.0 and later speak: no downgrade dance on every connect
                   protocol_version=ProtocolVersion.V5,
                   max_schema_agreement_wait=int(SCHEMA_TIMEOUT_SECONDS),
                   connect_timeout=config.cassandra_timeout_seconds)
