"""inboxlens.db.embedded against real PostgreSQL servers: lifecycle, isolation, migrations."""

from __future__ import annotations

import asyncio
import os
import pwd
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

import inboxlens.db.embedded
import inboxlens.db.migrate
import pytest

from inboxlens.db.embedded import EmbeddedPostgres, PgError, postgres_bin, stop_stale
from inboxlens.db.migrate import MIGRATION_LOCK_KEY, migrate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def own_pg(pg_base_dir: Path, pg_run_as: str | None, pg_superuser_map: tuple[str, ...]) -> Iterator[EmbeddedPostgres]:
    """A server of this module's own, which its tests stop, kill and restart."""
    root = Path(tempfile.mkdtemp(dir=pg_base_dir))
    os.chmod(root, 0o711)
    server = EmbeddedPostgres(root / "data", root / "sock", run_as=pg_run_as, superuser_map=pg_superuser_map)
    server.start()
    yield server
    server.stop()
    assert not server.is_running()


async def fetchval(dsn: str, query: str) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


def wait_exit(pid: int, timeout: float = 10.0) -> None:
    fd = os.pidfd_open(pid)
    try:
        assert select.select([fd], [], [], timeout)[0], f"pid {pid} did not exit"
    finally:
        os.close(fd)


# -- lifecycle ------------------------------------------------------------------------------

async def test_restart_keeps_data_and_start_is_idempotent(own_pg: EmbeddedPostgres, pg_run_as: str | None):
    dsn = own_pg.start()
    pid = own_pg.pid
    role = pg_run_as or pwd.getpwuid(os.geteuid()).pw_name
    assert dsn == own_pg.dsn == f"postgresql://{role}@/postgres?host={own_pg.socket_dir}"
    assert await fetchval(dsn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is True
    assert own_pg.start() == dsn and own_pg.pid == pid  # reused, not restarted
    connection = await asyncpg.connect(dsn)
    await connection.execute("CREATE TABLE IF NOT EXISTS survivor (x int); INSERT INTO survivor VALUES (42)")
    await connection.close()

    own_pg.stop()
    assert not own_pg.is_running() and own_pg.pid is None
    assert not (own_pg.socket_dir / ".s.PGSQL.5432").exists()
    own_pg.stop()  # idempotent

    assert own_pg.start() == dsn and own_pg.pid not in (None, pid)
    assert await fetchval(dsn, "SELECT sum(x) FROM survivor") == 42


def test_release_stops_only_a_server_this_object_started(own_pg: EmbeddedPostgres, pg_run_as: str | None,
                                                        pg_superuser_map: tuple[str, ...]):
    """`inboxlens migrate` beside a running service attaches to its server and must leave it up (issue 12.9)."""
    own_pg.start()
    pid = own_pg.pid
    attached = EmbeddedPostgres(own_pg.data_dir, own_pg.socket_dir, run_as=pg_run_as, superuser_map=pg_superuser_map)
    assert attached.start() == own_pg.dsn and not attached.started_here
    attached.release()
    assert own_pg.pid == pid
    own_pg.stop()
    assert attached.start() and attached.started_here  # now it launched the postmaster itself
    attached.release()
    assert not own_pg.is_running()
    own_pg.start()


async def test_start_after_the_postmaster_was_killed(own_pg: EmbeddedPostgres):
    own_pg.start()
    pid = own_pg.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_exit(pid)
    assert (own_pg.data_dir / "postmaster.pid").exists() and not own_pg.is_running()

    dsn = own_pg.start()  # clears the stale pid file, the killed server's orphans and socket lock
    assert own_pg.pid not in (None, pid)
    assert await fetchval(dsn, "SELECT 1") == 1


def postgres_in(data_dir: Path) -> list[int]:
    """Live postgres processes working in data_dir (the postmaster and its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == str(data_dir) \
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def test_stop_without_time_to_spare_still_leaves_nothing_running(own_pg: EmbeddedPostgres):
    dsn = own_pg.start()
    busy = await asyncpg.connect(dsn)  # a backend that must go too
    try:
        own_pg.stop(timeout=0)  # no time for a clean shutdown: the SIGKILL path, or a very fast stop
        assert not own_pg.is_running() and postgres_in(own_pg.data_dir) == []
    finally:
        busy.terminate()
    assert await fetchval(own_pg.start(), "SELECT 1") == 1


def test_stop_stale_stops_a_server_whose_owner_was_killed(own_pg: EmbeddedPostgres, pg_run_as: str | None,
                                                         pg_superuser_map: tuple[str, ...]):
    own_pg.stop()
    owner_code = ("import sys; from inboxlens.db.embedded import EmbeddedPostgres as E; "
                  "print(E(*sys.argv[1:3], run_as=sys.argv[3] or None, superuser_map=tuple(sys.argv[4:])).start(),"
                  " flush=True); sys.stdin.read()")
    owner = subprocess.Popen([sys.executable, "-c", owner_code, str(own_pg.data_dir), str(own_pg.socket_dir),
                              pg_run_as or "", *pg_superuser_map], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == own_pg.dsn
    finally:
        owner.kill()
        owner.wait(10)
    assert own_pg.is_running()  # the owner's death left the server behind

    assert stop_stale(own_pg.data_dir) is True
    assert not own_pg.is_running() and postgres_in(own_pg.data_dir) == []
    assert stop_stale(own_pg.data_dir) is False
    assert stop_stale(own_pg.data_dir.parent / "no-such-dir") is False


def test_no_tcp_listener_only_the_unix_socket(own_pg: EmbeddedPostgres):
    own_pg.start()
    pid = own_pg.pid
    sockets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    inodes = {link[len("socket:["):-1] for link in sockets if link.startswith("socket:[")}

    def listening(table: str) -> dict[str, str]:  # inode -> local address, for sockets in LISTEN
        rows = [line.split() for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]]
        return {row[9]: row[1] for row in rows if row[3] == "0A"}

    assert not inodes & (listening("tcp").keys() | listening("tcp6").keys())
    unix = {row[6]: row[7] for row in (line.split() for line in Path("/proc/net/unix").read_text().splitlines()[1:])
            if len(row) == 8}
    assert str(own_pg.socket_dir / ".s.PGSQL.5432") in {unix[i] for i in inodes if i in unix}
    assert (own_pg.socket_dir / ".s.PGSQL.5432").stat().st_mode & 0o777 == 0o777  # the directory gates it
    assert own_pg.socket_dir.stat().st_mode & 0o007 == 0


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="runs a client as another uid")
@pytest.mark.parametrize("through_group", [True, False], ids=["with-socket-group", "without"])
def test_an_unmapped_os_user_cannot_connect_as_superuser(own_pg: EmbeddedPostgres, through_group: bool):
    own_pg.start()
    group = own_pg.socket_dir.stat().st_gid if through_group else 65534  # reach the socket, or not even that
    # The wheel's psql: our interpreter may live where nobody cannot reach it (a pyenv under /root).
    psql = postgres_bin() / "psql"
    role = urlsplit(own_pg.dsn).username
    result = subprocess.run([str(psql), "-X", "-w", "-d", f"host={own_pg.socket_dir} user={role} dbname=postgres",
                             "-c", "SELECT 1"], user="nobody", group=group, extra_groups=[],
                            env={"PATH": "/usr/bin:/bin"}, cwd="/", capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    expected = f'Peer authentication failed for user "{role}"' if through_group else "Permission denied"
    assert expected in result.stderr


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="only root chooses whom the server runs as")
def test_root_must_name_a_user_who_can_reach_the_directories(pg_base_dir: Path, pg_run_as: str):
    with pytest.raises(PgError, match="refuses to run as root"):
        EmbeddedPostgres(pg_base_dir / "x" / "data", pg_base_dir / "x" / "sock")
    private = Path(tempfile.mkdtemp(dir=pg_base_dir))  # 0700 root
    server = EmbeddedPostgres(private / "data", private / "sock", run_as=pg_run_as)
    with pytest.raises(PgError, match=f"cannot traverse {private} .*chmod o\\+x {private}"):
        server.start()
    assert list(private.iterdir()) == []  # refused before creating anything


# -- migrations -----------------------------------------------------------------------------

def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def test_migrate_applies_the_shipped_migrations_once(pg_db: str):
    shipped = sorted(p.stem for p in Path(inboxlens.db.migrate.MIGRATIONS_DIR).glob("*.sql"))
    assert shipped[0] == "001_foundation"
    assert await migrate(pg_db) == shipped
    assert await migrate(pg_db) == []
    connection = await asyncpg.connect(pg_db)
    try:
        rows = await connection.fetch("SELECT version, name, sha256 FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["name"], len(r["sha256"])) for r in rows] == [
            (i + 1, name, 64) for i, name in enumerate(shipped)]
        user = await connection.fetchval("INSERT INTO users (email) VALUES ('a@example.org') RETURNING id")
        await connection.execute("INSERT INTO mail_accounts (user_id, address, provider) "
                                 "VALUES ($1, 'a@x.org', 'gmail')", user)
        assert await connection.fetchval("SELECT status || ' ' || time_zone FROM mail_accounts") == "active UTC"
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("INSERT INTO users (email) VALUES ('B@example.org')")
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute("UPDATE mail_accounts SET status = 'sleeping'")
        await connection.execute("INSERT INTO audit_events (user_id, kind) VALUES ($1, 'signup')", user)
        await connection.execute("DELETE FROM users")
        assert await connection.fetchval("SELECT count(*) FROM mail_accounts") == 0  # cascaded
        assert await connection.fetchval("SELECT count(*) FROM audit_events") == 1  # the trail outlives the user
    finally:
        await connection.close()


async def test_migrate_refuses_a_changed_or_missing_applied_file(pg_db: str, tmp_path: Path):
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (x int);",
                                                  "002_b.sql": "CREATE TABLE b (x int);"})
    assert await migrate(pg_db, directory) == ["001_a", "002_b"]
    (directory / "001_a.sql").write_text("CREATE TABLE a (x bigint);")
    with pytest.raises(PgError, match="001_a was changed"):
        await migrate(pg_db, directory)
    (directory / "001_a.sql").write_text("CREATE TABLE a (x int);")
    (directory / "002_b.sql").unlink()
    with pytest.raises(PgError, match="does not have"):
        await migrate(pg_db, directory)


@pytest.mark.parametrize("names", [("001_a.sql", "003_c.sql"), ("001_a.sql", "001_b.sql"), ("002_b.sql",),
                                   ("001_a.sql", "2-b.sql")], ids=["gap", "duplicate", "not-from-1", "misnamed"])
async def test_migrate_refuses_bad_numbering_before_touching_the_database(tmp_path: Path, names: tuple[str, ...]):
    directory = write_migrations(tmp_path / "m", {name: "SELECT 1;" for name in names})
    unreachable = f"postgresql://nobody@/postgres?host={tmp_path}"  # connecting would fail differently
    with pytest.raises(PgError, match="numbered|named"):
        await migrate(unreachable, directory)


async def test_migrate_failure_rolls_back_that_file_only(pg_db: str, tmp_path: Path):
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (x int);",
                                                  "002_b.sql": "CREATE TABLE b (x int); SELECT 1/0;"})
    with pytest.raises(PgError, match="002_b failed"):
        await migrate(pg_db, directory)
    assert await fetchval(pg_db, "SELECT string_agg(name, ',') FROM schema_migrations") == "001_a"
    assert await fetchval(pg_db, "SELECT to_regclass('b')") is None


async def test_concurrent_migrations_apply_each_file_once(pg_db: str, tmp_path: Path):
    # CREATE TABLE without IF NOT EXISTS: a second application would fail.
    files = {f"00{i}_t{i}.sql": f"CREATE TABLE t{i} (x int);" for i in (1, 2, 3)}
    directory = write_migrations(tmp_path / "m", files)
    holder = await asyncpg.connect(pg_db)
    try:
        # Hold the lock so that every caller is queued on it before any of them proceeds.
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        runs = [asyncio.create_task(migrate(pg_db, directory)) for _ in range(4)]
        await wait_for_lock_waiters(holder, 4)
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        results = await asyncio.gather(*runs)
    finally:
        await holder.close()
    assert sorted(name for result in results for name in result) == ["001_t1", "002_t2", "003_t3"]
    assert sorted(len(result) for result in results) == [0, 0, 0, 3]
    assert await fetchval(pg_db, "SELECT count(*) FROM schema_migrations") == 3


async def wait_for_lock_waiters(connection: asyncpg.Connection, count: int, timeout: float = 10.0) -> None:
    """PostgreSQL has no event for "someone queued on a lock": poll pg_locks, bounded."""
    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = " \
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
    while await connection.fetchval(query) < count:
        assert time.monotonic() < deadline, "the migrate() calls never queued on the lock"
        await asyncio.sleep(0.01)


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a process as another user")
def test_a_process_of_another_user_named_postgres_is_not_taken_for_the_postmaster():
    """Only the data directory's owner can run its postmaster: another local user's process
    called postgres, in that directory and naming it with -D, is not the cluster's."""
    from inboxlens.db.embedded import _is_postgres
    from tests.conftest import TEST_PG_USER
    from tests.support.osusers import ensure_user

    owner, stranger = ensure_user(TEST_PG_USER), ensure_user("inboxlens-t-dev")
    with tempfile.TemporaryDirectory(prefix="inboxlens-fakepg-") as base:  # under /tmp: others may enter
        Path(base).chmod(0o755)
        data = Path(base) / "data"
        data.mkdir(mode=0o755)
        os.chown(data, owner.pw_uid, owner.pw_gid)
        fake = Path(base) / "postgres"  # a shell under the name: its comm is "postgres"
        fake.write_bytes(Path("/bin/sh").read_bytes())
        fake.chmod(0o755)
        for user in (stranger, owner):
            process = subprocess.Popen([str(fake), "-c", "sleep 30; :", "-D", str(data)], cwd=data,
                                       user=user.pw_uid, group=user.pw_gid, extra_groups=[])
            try:
                until = time.monotonic() + 5
                while Path(f"/proc/{process.pid}/comm").read_text().strip() != "postgres":
                    assert time.monotonic() < until
                    time.sleep(0.01)
                assert _is_postgres(process.pid, data) is (user is owner), user.pw_name
            finally:
                process.kill()
                process.wait()
