"""Cassandra for tests: a fresh keyspace on a real cluster, or an in-memory fake driver.

``cassandra_store(hosts, settings)`` creates a keyspace with a random name (replication
factor 1) on the cluster at hosts ("host[,host:port]"), applies cassandra.cql, yields an
open CassandraMetricsStore and drops the keyspace afterwards. The contract suite
(tests/metrics/test_contract.py) runs its shared cases through it when
INBOXLENS_TEST_CASSANDRA is set.

``FakeDb``/``fake_session`` stand in for cassandra-driver's Session where no cluster is:
they know only what the store's statements use and refuse what Cassandra would refuse
(a column the schema file does not have, a wrong bind count, a SELECT, UPDATE or DELETE
that does not name a whole partition key). Result pages come back from another thread,
as the driver's IO thread delivers them, and writes keep a timestamp per cell, so
last-write-wins (``USING TIMESTAMP``) is Cassandra's. ``fail_at`` makes the n-th write
raise, for crash tests.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from inboxlens.config.schema import MetricsConfig
from inboxlens.metrics.cassandra.store import CassandraMetricsStore, migrate_cassandra, open_cassandra
from inboxlens.metrics.cassandra.session import SCHEMA_FILE, CqlSession, connect, schema_statements
from inboxlens.metrics.cassandra.statements import STATEMENTS
from inboxlens.metrics.model import InsightSettings

SKIP_REASON = "set INBOXLENS_TEST_CASSANDRA=host[,host] to run against a Cassandra cluster"


def cluster_config(hosts: str, keyspace: str = "inboxlens") -> MetricsConfig:
    return MetricsConfig(backend="cassandra", cassandra_hosts=tuple(h for h in hosts.split(",") if h),
                         cassandra_keyspace=keyspace, cassandra_replication_factor=1,
                         cassandra_timeout_seconds=30.0)


@asynccontextmanager
async def cassandra_store(hosts: str, settings: InsightSettings) -> AsyncIterator[CassandraMetricsStore]:
    config = cluster_config(hosts, f"inboxlens_test_{secrets.token_hex(6)}")
    await migrate_cassandra(config)
    try:
        store = await open_cassandra(config, settings)
        try:
            yield store
        finally:
            await store.close()
    finally:
        cql = await connect(config, None)
        try:
            await cql.ddl(f"DROP KEYSPACE IF EXISTS {config.cassandra_keyspace}")
        finally:
            await cql.close()


# -- the fake driver --------------------------------------------------------------------------------

@dataclass
class Table:
    columns: list[str]
    partition: list[str]
    clustering: list[str]
    descending: set[str] = field(default_factory=set)
    data: dict[tuple[Any, ...], dict[tuple[Any, ...], dict[str, tuple[Any, int]]]] = field(default_factory=dict)


def load_schema() -> dict[str, Table]:
    tables = {}
    for statement in schema_statements(SCHEMA_FILE.read_text(), "ks"):
        m = re.match(r"CREATE TABLE IF NOT EXISTS ks\.(\w+) \((.*?)\)(\s+WITH .*)?$", statement, re.S)
        assert m, statement
        name, body, options = m.groups()
        columns = [line.split()[0] for line in body.split(",\n") if not line.strip().startswith("PRIMARY KEY")]
        key = re.search(r"PRIMARY KEY \(\((.*?)\)(.*?)\)", body, re.S)
        if key:
            partition, clustering = _names(key.group(1)), _names(key.group(2))
        else:
            partition, clustering = [re.search(r"(\w+) \w+ PRIMARY KEY", body).group(1)], []  # type: ignore[union-attr]
        order = re.search(r"CLUSTERING ORDER BY \((.*?)\)", options or "")
        descending = {p.split()[0] for p in order.group(1).split(",") if "DESC" in p} if order else set()
        tables[name] = Table([c.strip() for c in columns], partition, clustering, descending)
    return tables


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


class FakeDb:
    def __init__(self) -> None:
        self.tables = load_schema()
        self.writes = 0
        self.fail_at: int | None = None  # the write number that raises instead (a crash)
        self._last = 0

    def stamp(self) -> int:
        # The coordinator's clock, as Cassandra stamps a write without USING TIMESTAMP: a
        # counter that ran ahead of it would beat the store's explicit (clock) stamps.
        return time.time_ns() // 1000

    def rows(self, table: str) -> list[dict[str, Any]]:
        t = self.tables[table]
        return [{c: v for c, (v, _) in row.items()} for part in t.data.values() for row in part.values() if row]


class Statement:
    def __init__(self, db: FakeDb, cql: str) -> None:
        self.db, self.cql, self.is_idempotent = db, cql, False
        self.marks = cql.count("?")
        self.run = _compile(db, cql)

    def bind(self, values: Any) -> Bound:
        assert len(values) == self.marks, f"{self.cql}: {len(values)} values for {self.marks} markers"
        return Bound(self, tuple(values))


@dataclass
class Bound:
    prepared: Statement
    values: tuple[Any, ...]
    fetch_size: int = 5000


def _compile(db: FakeDb, cql: str) -> Callable[[tuple[Any, ...]], list[dict[str, Any]]]:
    for pattern, make in _FORMS:
        m = re.fullmatch(pattern, cql)
        if m:
            return make(db, *m.groups())
    raise AssertionError(f"unsupported CQL: {cql}")


def _table(db: FakeDb, name: str, columns: list[str]) -> Table:
    t = db.tables[name]
    unknown = set(columns) - set(t.columns)
    assert not unknown, f"{name} has no column {unknown}"
    return t


def _insert(db: FakeDb, name: str, cols: str, _marks: str, stamp: str | None) -> Callable[..., list[Any]]:
    columns = _names(cols)
    t = _table(db, name, columns)
    assert set(t.partition + t.clustering) <= set(columns), f"INSERT INTO {name} without its whole key"

    def run(values: tuple[Any, ...]) -> list[Any]:
        at = values[-1] if stamp else db.stamp()
        _write(db, t, dict(zip(columns, values)), at)
        return []
    return run


def _write(db: FakeDb, t: Table, row: dict[str, Any], at: int) -> None:
    db.writes += 1
    if db.fail_at is not None and db.writes >= db.fail_at:
        raise ConnectionError("injected crash")
    cells = t.data.setdefault(tuple(row[c] for c in t.partition), {}).setdefault(
        tuple(row[c] for c in t.clustering), {})
    for column, value in row.items():
        if column not in cells or cells[column][1] <= at:
            cells[column] = (None if value == [] else value, at)


def _where(t: Table, text: str) -> tuple[list[tuple[str, str]], Callable[[tuple[Any, ...]], Any]]:
    conds = [tuple(c.split()[:2]) for c in text.split(" AND ")]
    names = [c for c, _ in conds]
    assert set(t.partition) <= {c for c, op in conds if op in ("=", "IN")}, f"not a whole partition key: {text}"
    assert set(names) <= set(t.columns)
    return conds, lambda v: v  # values are consumed in order by the caller


def _matches(t: Table, conds: list[tuple[str, str]], values: tuple[Any, ...]) -> Callable[[dict[str, Any]], bool]:
    def ok(row: dict[str, Any]) -> bool:
        for (column, op), value in zip(conds, values):
            v = row.get(column)
            if not {"=": lambda: v == value, "IN": lambda: v in value, ">=": lambda: v >= value,
                    "<=": lambda: v <= value}[op]():
                return False
        return True
    return ok


def _select(db: FakeDb, cols: str, name: str, where: str) -> Callable[..., list[Any]]:
    t = db.tables[name]
    columns = t.columns if cols == "*" else _names(cols)
    _table(db, name, columns)
    where, _, limit = where.partition(" LIMIT ")
    conds, _ = _where(t, where)

    def run(values: tuple[Any, ...]) -> list[Any]:
        ok = _matches(t, conds, values)
        found = []
        for part in t.data.values():
            for ck in sorted(part, key=lambda k: _order(t, k)):
                row = {c: v for c, (v, _) in part[ck].items()}
                if row and ok(row):
                    found.append({c: row.get(c) for c in columns})
        return found[:int(limit)] if limit else found
    return run


def _order(t: Table, key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_Descending(v) if c in t.descending else v for c, v in zip(t.clustering, key))


@dataclass(frozen=True)
class _Descending:
    """A clustering value in a DESC column: sorts the other way round (numbers, blobs, text)."""

    value: Any

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)


def _update(db: FakeDb, name: str, column: str, value: str, where: str) -> Callable[..., list[Any]]:
    t = _table(db, name, [column])
    conds, _ = _where(t, where)
    assert [c for c, _ in conds] == t.partition + t.clustering, f"UPDATE needs the whole primary key: {where}"

    def run(values: tuple[Any, ...]) -> list[Any]:
        _write(db, t, {**dict(zip((c for c, _ in conds), values)), column: value == "true"}, db.stamp())
        return []
    return run


def _delete(db: FakeDb, name: str, stamp: str | None, where: str) -> Callable[..., list[Any]]:
    t = db.tables[name]
    conds, _ = _where(t, where)

    def run(values: tuple[Any, ...]) -> list[Any]:
        at, values = (values[0], values[1:]) if stamp else (db.stamp(), values)
        db.writes += 1
        if db.fail_at is not None and db.writes >= db.fail_at:
            raise ConnectionError("injected crash")
        ok = _matches(t, conds, values)
        for part in t.data.values():
            for ck, cells in list(part.items()):  # deletes run at once in the driver's threads, as Cassandra's may
                row = {c: v for c, (v, _) in cells.items()}
                if ok(row) and all(ts <= at for _, ts in cells.values()):
                    part.pop(ck, None)  # a row another delete took first: no error, as in Cassandra
        return []
    return run


_FORMS: list[tuple[str, Callable[..., Callable[..., list[Any]]]]] = [
    (r"INSERT INTO (\w+) \((.*?)\) VALUES \((.*?)\)( USING TIMESTAMP \?)?", _insert),
    (r"SELECT (.*?) FROM (\w+) WHERE (.*)", _select),
    (r"UPDATE (\w+) SET (\w+) = (true) WHERE (.*)", lambda db, n, c, v, w: _update(db, n, c, v, w)),
    (r"DELETE FROM (\w+)( USING TIMESTAMP \?)? WHERE (.*)", _delete),
]


# One IO thread for every fake session, as the driver has one event-loop thread that runs every
# callback (a thread per page cost 0.1 ms each: 90,000 of them in one property test).
_IO = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fake-cassandra-io")


class Future:
    """A ResponseFuture: pages delivered by another thread, as the driver's IO thread does."""

    def __init__(self, run: Callable[[], list[Any]], fetch_size: int) -> None:
        self._run, self._fetch_size, self._rows, self._page = run, fetch_size, None, 0
        self._callbacks: list[tuple[Callable[[Any], None], Callable[[BaseException], None]]] = []

    def add_callbacks(self, callback: Callable[[Any], None], errback: Callable[[BaseException], None]) -> None:
        self._callbacks.append((callback, errback))
        self._deliver()

    @property
    def has_more_pages(self) -> bool:
        return self._rows is not None and (self._page + 1) * self._fetch_size < len(self._rows)

    def start_fetching_next_page(self) -> None:
        self._page += 1
        self._deliver()

    def _deliver(self) -> None:
        def work() -> None:
            try:
                if self._rows is None:
                    self._rows = self._run()
            except Exception as e:
                for _, errback in self._callbacks:
                    errback(e)
                return
            start = self._page * self._fetch_size
            for callback, _ in self._callbacks:
                callback(self._rows[start:start + self._fetch_size])
        _IO.submit(work)


class FakeSession:
    def __init__(self, db: FakeDb) -> None:
        self.db = db

    def prepare(self, cql: str) -> Statement:
        # The store names tables in full (keyspace.table); the fake has one keyspace.
        return Statement(self.db, re.sub(r"\b(FROM|INTO|UPDATE) \w+\.(\w+)", r"\1 \2", cql))

    def execute_async(self, bound: Bound, timeout: float) -> Future:
        return Future(lambda: bound.prepared.run(bound.values), bound.fetch_size)


class FakeCluster:
    def __init__(self) -> None:
        self.shut = False

    def shutdown(self) -> None:
        self.shut = True


def fake_session(db: FakeDb, limit: int = 16) -> CqlSession:
    return CqlSession(FakeCluster(), FakeSession(db), 1.0, {}, asyncio.Semaphore(limit))


async def fake_store(db: FakeDb, settings: InsightSettings, now: datetime) -> CassandraMetricsStore:
    """The whole Cassandra store over the fake driver, statements prepared, its clock at ``now``."""
    store = CassandraMetricsStore(fake_session(db), settings, clock=lambda: now)
    await store._cql.prepare(STATEMENTS, "inboxlens")
    return store
