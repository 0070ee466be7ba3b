"""Fixtures shared by every test package."""

from __future__ import annotations

# =============================================================================================
# PostgreSQL: pg_dsn (one server for the session) and pg_db (a fresh database per test).
#
# INBOXLENS_TEST_DSN=postgresql://... uses that server instead of an embedded one; its role
# must be allowed to CREATE DATABASE. As root, the embedded server runs as the OS user
# `inboxlens-test-pg` (created if missing) and root is mapped to its superuser role.
# =============================================================================================
import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.support.osusers import ensure_user

from inboxlens.db.embedded import EmbeddedPostgres

TEST_PG_USER = "inboxlens-test-pg"


# =============================================================================================
# Apache Cassandra: a real node for the Cassandra cases of tests/metrics and for tests/multinode.
#
# Every case that needs one is marked heavy, so `make test` (-m "not heavy") starts none.
# INBOXLENS_TEST_CASSANDRA=host[:port][,host...] names a cluster (.ci/run starts one). When it
# is unset and the run includes tests/metrics or tests/multinode, one node is started here on
# 127.0.0.1 and free ports (tests/support/cassandra_node.py: Cassandra from Maven Central on the
# JDK), and stopped at the end. Where it cannot start: in CI that is a failure; elsewhere those cases skip.
# =============================================================================================
def _runs_cassandra(args: list[str]) -> bool:
    """Whether the run includes tests/metrics or tests/multinode (the two-node test's metrics)."""
    paths = [Path(a.split("::")[0]).resolve() for a in args] or [Path(__file__).parent.resolve()]
    for folder in ("metrics", "multinode"):
        needs = (Path(__file__).parent / folder).resolve()
        if any(needs == p or needs in p.parents or p in needs.parents for p in paths):
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("INBOXLENS_TEST_CASSANDRA") or not _runs_cassandra(list(config.args)):
        return
    if str(config.getoption("markexpr", "") or "").strip() == "not heavy":
        return  # make test: every case that needs a real node is heavy (make test-heavy, CI)
    from tests.support.cassandra_node import CassandraNode, NodeError
    from tests.support.pg_tcp import free_port

    node = CassandraNode(tempfile.mkdtemp(prefix="inboxlens-cassandra-"), port=free_port(), storage_port=free_port())
    try:
        node.start()
        node.wait_ready()
    except NodeError as e:
        node.stop()
        shutil.rmtree(node.directory, ignore_errors=True)
        if os.environ.get("CI"):
            raise pytest.UsageError("CI needs a Cassandra node for tests/metrics and tests/multinode "
                                    f"and none started: {e}") from None
        print(f"\nno Cassandra node ({e}): the cluster cases of tests/metrics and tests/multinode will skip")
        return
    os.environ["INBOXLENS_TEST_CASSANDRA"] = node.contact_point
    config.stash[_CASSANDRA] = node


_CASSANDRA = pytest.StashKey["Any"]()


def pytest_unconfigure(config: pytest.Config) -> None:
    node = config.stash.get(_CASSANDRA, None)
    if node is not None:
        node.stop()
        shutil.rmtree(node.directory, ignore_errors=True)
        os.environ.pop("INBOXLENS_TEST_CASSANDRA", None)


@pytest.fixture(scope="session")
def pg_run_as() -> str | None:
    """The OS user embedded test servers run as: a dedicated one as root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    ensure_user(TEST_PG_USER)
    return TEST_PG_USER


@pytest.fixture(scope="session")
def pg_superuser_map() -> tuple[str, ...]:
    return ("root",) if os.geteuid() == 0 else ()


@pytest.fixture(scope="session")
def pg_base_dir() -> Iterator[Path]:
    """A directory the server's OS user can traverse (0711), removed at the end of the session.

    Not under tmp_path_factory: pytest's /tmp/pytest-of-<user> must stay 0700, and every
    pytest session (also a concurrent one) resets it to 0700, cutting a running server off.
    """
    base = Path(tempfile.mkdtemp(prefix="inboxlens-pg-"))
    os.chmod(base, 0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn(pg_base_dir: Path, pg_run_as: str | None, pg_superuser_map: tuple[str, ...]) -> Iterator[str]:
    """A superuser DSN for the session's server (INBOXLENS_TEST_DSN, or an embedded one)."""
    configured = os.environ.get("INBOXLENS_TEST_DSN")
    if configured:
        yield configured
        return
    server = EmbeddedPostgres(pg_base_dir / "session" / "data", pg_base_dir / "session" / "sock",
                              run_as=pg_run_as, superuser_map=pg_superuser_map)
    try:
        dsn = server.start()
        _run_coroutine(_fast(dsn))
        yield dsn
    finally:
        server.stop()
    assert not server.is_running(), "the session's PostgreSQL did not stop"


async def _fast(dsn: str) -> None:
    """The session's throwaway server does not wait for the disk: a test database is created,
    migrated and dropped per test, and nothing of it must outlive a power cut. (The servers that
    `serve` starts in tests, and the product's, keep PostgreSQL's durable defaults.)"""
    connection = await asyncpg.connect(dsn)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            await connection.execute(f"ALTER SYSTEM SET {setting} = off")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()


def dsn_with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _run_coroutine(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run coroutine on a loop of its own in another thread: works inside a running loop too."""
    with ThreadPoolExecutor(1) as executor:
        executor.submit(asyncio.run, coroutine).result()


async def _admin(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def pg_db(pg_dsn: str) -> Iterator[str]:
    """The DSN of a fresh, empty database, dropped after the test.

    A sync fixture on purpose: sync tests, async tests and async fixtures (through
    request.getfixturevalue, which cannot set up an async fixture) can all use it.
    """
    name = f"t_{secrets.token_hex(8)}"
    _run_coroutine(_admin(pg_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield dsn_with_database(pg_dsn, name)
    finally:
        _run_coroutine(_admin(pg_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

# ============================ end of the PostgreSQL section ==================================
