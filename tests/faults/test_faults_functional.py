"""The fault table (issue 12.12): each row breaks one thing while ``inboxlens serve`` runs as root
and checks what must hold afterwards, within a stated recovery bound.

One service for the module (a real ``serve``: supervisor, vault, web, harvest and the embedded
PostgreSQL), the local OAuth provider (tests/support/oauth_provider.py) and Dovecot validating
XOAUTH2 (tests/support/dovecot.py). Every row connects its own mailbox through the web, so its
counts are its own. Rows run in table order; each one waits until the service has recovered.

Every wait polls a process table, a log line, an HTTP answer or database state against a
deadline; nothing sleeps and hopes. Recovery is measured with time.monotonic() from the moment
the fault is injected (or cleared, for a provider outage) until the invariant holds again.
``INBOXLENS_FAULTS_REPORT=path.json`` writes the measured times there (docs/reliability.md) and
the service's log beside it (path.log).

The provider issues 60 s access tokens and the vault refreshes 120 s before expiry, so every
``get`` is a refresh: the provider rows and the vault rows exercise the refresh path every time.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from inboxlens.supervisor import plan as supervisor
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.maildir import realistic_messages
from tests.support.oauth_provider import OAuthProvider
from tests.test_end_to_end_functional import SECRET, provider_env
from tests.test_supervisor_functional import Service, children_of, postmaster, role_of

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.heavy,
              pytest.mark.skipif(os.geteuid() != 0, reason="the supervisor's root mode needs root")]

REPO = Path(__file__).resolve().parents[2]
POLL = 0.02  # between looks at a process table, a log or the database (every wait has a deadline)
BIG = 800  # messages in a mailbox a sync must be caught in the middle of (batches of 25)
BATCH = 25
KILL_AT = 100  # stored raw rows: the sync is under way, far from done


class Loop:
    """An event loop in a thread: the OAuth provider lives across the module's tests in it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class LoggedService(Service):
    """Service with serve's stderr (and so every child's log) in a file: rows wait for log lines,
    and a busy harvest cannot fill an undrained pipe and block the service."""

    def start(self) -> None:
        self.log_path = self.base / "serve.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "inboxlens", "serve"], env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> tuple[int, str]:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return self.process.returncode, self.log()


def until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(POLL)


@dataclass
class World:
    base: Path
    loop: Loop
    oauth: OAuthProvider
    dovecot: Dovecot
    service: LoggedService
    results: dict[str, float] = field(default_factory=dict)
    base_account: int | None = None  # one connected, harvested mailbox the vault and provider rows ask about
    _mailboxes: int = 0

    # -- the service's parts

    @property
    def dsn(self) -> str:
        return f"postgresql://inboxlens-db@/postgres?host={self.service.base / 'run' / 'pg'}"

    @property
    def vault_socket(self) -> Path:
        return self.service.base / "run" / "vault" / "vault.sock"

    def pid(self, role: str) -> int | None:
        assert self.service.process is not None
        found = [pid for pid, c in children_of(self.service.process.pid).items() if role_of(c) == role]
        return found[0] if found else None

    def replaced(self, role: str, old: int) -> int | None:
        """The new pid of ``role`` once the supervisor logged it started (ready), else None."""
        pid = self.pid(role)
        if pid in (None, old):
            return None
        return pid if f"{role} started (pid {pid})" in self.service.log() else None

    def http(self, path: str) -> int | None:
        try:
            if path == "/healthz":
                return self.service.health()[0]
            import urllib.error
            import urllib.request
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.service.port}{path}", timeout=5) as answer:
                    return answer.status
            except urllib.error.HTTPError as e:
                return e.code
        except (OSError, ValueError):
            return None

    def kill(self, pid: int) -> float:
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    # -- the database (as the service's superuser role, over its socket)

    def sql(self, query: str, *args: Any) -> Any:
        async def ask() -> Any:
            db = await asyncpg.connect(self.dsn, timeout=5)
            try:
                return await db.fetchrow(query, *args)
            finally:
                await db.close()
        return self.loop.run(ask(), 30)

    def counts(self, account: int) -> tuple[int, int, int]:
        row = self.sql("SELECT (SELECT count(*) FROM message_index WHERE account_id = $1) AS indexed, "
                       "(SELECT coalesce(sum(received + sent), 0) FROM account_daily WHERE account_id = $1) AS daily, "
                       "(SELECT count(*) FROM raw_headers WHERE account_id = $1) AS raw", account)
        return int(row["indexed"]), int(row["daily"]), int(row["raw"])

    def state(self, account: int) -> asyncpg.Record:
        return self.sql("SELECT a.status, h.failures, h.last_error, h.lease_owner, "
                        "(h.lease_owner IS NULL OR h.lease_expires_at < now()) AS lease_free, "
                        "h.next_run_at > now() AS backs_off, a.last_sync_at IS NOT NULL AS synced "
                        "FROM mail_accounts a LEFT JOIN harvest_state h ON h.account_id = a.id WHERE a.id = $1", account)

    # -- a user connecting a mailbox through the web, as a browser does

    def mailbox(self, count: int) -> tuple[str, int]:
        """A new address with ``count`` generated messages; returns it and how many harvest must count."""
        self._mailboxes += 1
        address = f"fault{self._mailboxes}@example.test"
        messages = realistic_messages(address, count=count, seed=100 + self._mailboxes)
        self.dovecot.deliver(address, messages)
        return address, len([m for m in messages if m.folder in ("INBOX", "Sent")])

    async def _connect(self, address: str) -> None:
        self.oauth.login = address
        async with aiohttp.ClientSession(f"http://127.0.0.1:{self.service.port}",
                                         cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         timeout=aiohttp.ClientTimeout(total=60)) as browser:
            page = await browser.get("/connect/test?tz=Europe/Berlin")
            text = await page.text()
            assert page.status == 200 and address in text, page.status

    def connect(self, address: str) -> int:
        self.loop.run(self._connect(address), 90)
        return int(self.sql("SELECT id FROM mail_accounts WHERE address = $1", address)["id"])

    # -- callers of the vault, under the service's uids

    def vault(self, account: int, op: str = "get") -> dict[str, Any]:
        role = "harvest" if op == "get" else "web"
        user = pwd.getpwnam(supervisor.USERS[role])
        done = subprocess.run([sys.executable, "-m", "tests.faults.vault_get", str(self.vault_socket), str(account), op],
                              user=user.pw_uid, group=user.pw_gid,
                              extra_groups=[grp.getgrnam(supervisor.SHARED_GROUP).gr_gid], cwd=REPO,
                              env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.splitlines()[-1])

    def gets(self, account: int) -> bool:
        return self.vault(account) == {"ok": True}

    def harvest_once(self, account: int) -> subprocess.CompletedProcess[str]:
        return self.service.cli("harvest", "--once", str(account))

    # -- harvest

    def kill_mid_sync(self, account: int, pid_of: Callable[[], int | None]) -> tuple[float, int]:
        """Once the sync of ``account`` is under way (``when_under_way``), SIGKILL what ``pid_of``
        names; returns when, and how many rows were stored by then."""
        def kill() -> float:
            pid = pid_of()
            assert pid is not None
            return self.kill(pid)
        return self.when_under_way(account, kill)

    def when_under_way(self, account: int, act: Callable[[], float]) -> tuple[float, int]:
        """Wait until the service's harvest has stored KILL_AT raw rows of ``account`` (its sync is
        under way, in batches of BATCH), then ``act`` (which says when it acted); returns that time
        and how many rows were stored by then."""
        async def watch() -> tuple[float, int]:
            db = await asyncpg.connect(self.dsn, timeout=5)
            try:
                deadline = time.monotonic() + 60
                while (stored := await db.fetchval("SELECT count(*) FROM raw_headers WHERE account_id = $1",
                                                   account)) < KILL_AT:
                    assert time.monotonic() < deadline, "the service's harvest never started the sync"
                    await asyncio.sleep(0.002)
                return act(), int(stored)
            finally:  # ``act`` may have killed the very server this watcher is connected to
                try:
                    await db.close(timeout=5)
                except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    db.terminate()
        return self.loop.run(watch(), 90)

    def harvested(self, account: int, wanted: int, seconds: float) -> None:
        """Until the account's counts are a clean harvest's: every message indexed once, the daily
        rollups summing to the mailbox, the raw rows folded away. A sync that recorded a failure
        backs off for a minute: then run the next one now, as `inboxlens harvest --once` does."""
        deadline = time.monotonic() + seconds
        while (got := self.counts(account)) != (wanted, wanted, 0):
            assert got[0] <= wanted and got[1] <= wanted, f"counted twice: {got} for {wanted} messages"
            row = self.state(account)
            if row["lease_free"] and row["backs_off"]:
                done = self.harvest_once(account)
                assert done.returncode == 0, done.stderr[-2000:]
            assert time.monotonic() < deadline, f"not a clean harvest within {seconds} s: {got} for {wanted}"
            time.sleep(POLL * 5)


# ---------------------------------------------------------------------------------------------
# The rows. Each returns the measured recovery time in seconds.
# ---------------------------------------------------------------------------------------------

def base_account(world: World) -> int:
    """One connected, harvested mailbox the vault rows ask about."""
    if world.base_account is None:
        address, _ = world.mailbox(5)
        account = world.connect(address)
        until(lambda: world.state(account)["synced"], 30, "the first sync of the base account")
        world.base_account = account
    return world.base_account


def vault_idle(world: World) -> float:
    account = base_account(world)
    assert world.gets(account)
    grants = world.oauth.refresh_grants
    old = world.pid("vault")
    assert old is not None
    killed = world.kill(old)
    until(lambda: world.replaced("vault", old), 30, "the vault restarted")
    until(lambda: world.gets(account), 30, "a get after the restart")
    recovered = time.monotonic() - killed
    # The new vault had no cache: it refreshed with the stored (rotated) refresh token, and the
    # provider saw no replay (a replay would revoke the grant and the get would say reauth).
    assert world.oauth.refresh_grants > grants
    assert world.vault(account, "token_state") == {"state": "ok"}
    return recovered


def vault_mid_refresh(world: World) -> float:
    account = base_account(world)
    grants = world.oauth.refresh_grants
    world.oauth.delay = 30  # the refresh hangs at the provider
    user = pwd.getpwnam(supervisor.USERS["harvest"])
    waiting = subprocess.Popen([sys.executable, "-m", "tests.faults.vault_get", str(world.vault_socket), str(account),
                                "get"], user=user.pw_uid, group=user.pw_gid,
                               extra_groups=[grp.getgrnam(supervisor.SHARED_GROUP).gr_gid], cwd=REPO,
                               env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: world.oauth.refresh_grants > grants, 30, "the refresh reached the provider")
        old = world.pid("vault")
        assert old is not None
        killed = world.kill(old)
        out, err = waiting.communicate(timeout=30)
        assert "unavailable" in json.loads(out.splitlines()[-1]), err[-2000:]
    finally:
        world.oauth.delay = 0
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait(10)
    until(lambda: world.replaced("vault", old), 30, "the vault restarted")
    until(lambda: world.gets(account), 30, "a get after the restart")
    recovered = time.monotonic() - killed
    assert world.vault(account, "token_state") == {"state": "ok"}
    return recovered


def vault_mid_set(world: World) -> float:
    """The vault dies inside a connect's set: strace holds its first fsync/fdatasync (the token's
    write is in the WAL, not yet synced) and the vault is SIGKILLed there. Web answers 503 and
    commits no account; whatever the WAL kept of the set, web's sweep leaves no token behind for
    an account that does not exist; the user connects again and it works."""
    address, _ = world.mailbox(3)
    old = world.pid("vault")
    assert old is not None
    trace = world.base / "vault-mid-set.strace"
    held = subprocess.Popen(["strace", "-f", "-p", str(old), "-o", str(trace), "-e", "trace=fsync,fdatasync",
                             "-e", "inject=fsync,fdatasync:delay_enter=60000000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: trace.exists() or held.poll() is not None, 10, "strace attached to the vault")
        assert held.poll() is None, held.stderr.read() if held.stderr else ""
        time.sleep(0.2)  # strace writes its file before every thread is attached

        async def connect() -> int:
            world.oauth.login = address
            async with aiohttp.ClientSession(f"http://127.0.0.1:{world.service.port}",
                                             cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             timeout=aiohttp.ClientTimeout(total=60)) as browser:
                page = await browser.get("/connect/test?tz=Europe/Berlin")
                text = await page.text()
                assert "nothing was connected" in text, text[:500]
                return page.status
        browser = world.loop.submit(connect())
        until(lambda: "sync(" in trace.read_text(errors="replace"), 30, "the vault's set held in its sync")
        killed = world.kill(old)
    finally:
        held.kill()
        held.wait(10)
    assert browser.result(30) == 503
    assert world.sql("SELECT count(*) AS n FROM mail_accounts WHERE address = $1", address)["n"] == 0
    pending = world.sql("SELECT account_id FROM connect_pending")
    assert pending is not None, "the connect did not mark its account id before the set"
    orphan = int(pending["account_id"])
    until(lambda: world.replaced("vault", old), 30, "the vault restarted")
    world.results["vault-kill-mid-set: the set survived in the WAL"] = \
        float(world.vault(orphan, "token_state") == {"state": "ok"})
    until(lambda: world.vault(orphan, "token_state") == {"state": "missing"}
          and world.sql("SELECT count(*) AS n FROM connect_pending")["n"] == 0, 60,
          "web's sweep forgot the token of the account that never committed")
    account = world.connect(address)  # the user tries again, and it works
    recovered = time.monotonic() - killed
    assert account != orphan and world.vault(account, "token_state") == {"state": "ok"} and world.gets(account)
    return recovered


def web_idle(world: World) -> float:
    old = world.pid("web")
    assert old is not None and world.http("/healthz") == 200
    killed = world.kill(old)
    until(lambda: world.replaced("web", old) and world.http("/healthz") == 200, 30, "web answering again")
    return time.monotonic() - killed


def web_mid_callback(world: World) -> float:
    address, _ = world.mailbox(3)

    def codes() -> int:
        return sum(r.get("grant_type") == "authorization_code" for r in world.oauth.token_requests)
    before = codes()
    world.oauth.delay = 30  # web's code exchange hangs at the provider, inside /callback
    browser = world.loop.submit(world._connect(address))
    try:
        until(lambda: codes() > before, 30, "web's callback reached the provider's /token")
        old = world.pid("web")
        assert old is not None
        killed = world.kill(old)
        with pytest.raises(aiohttp.ClientError):  # the browser's callback request dies with web
            browser.result(30)
    finally:
        world.oauth.delay = 0
    assert world.sql("SELECT count(*) AS n FROM mail_accounts WHERE address = $1", address)["n"] == 0
    until(lambda: world.replaced("web", old) and world.http("/healthz") == 200, 30, "web answering again")
    account = world.connect(address)  # the user tries again, and it works
    recovered = time.monotonic() - killed
    assert world.sql("SELECT count(*) AS n FROM mail_accounts WHERE address = $1", address)["n"] == 1
    assert world.vault(account, "token_state") == {"state": "ok"} and world.gets(account)
    return recovered


def harvest_idle(world: World) -> float:
    old = world.pid("harvest")
    assert old is not None
    killed = world.kill(old)
    until(lambda: world.replaced("harvest", old), 30, "harvest restarted")
    return time.monotonic() - killed


def harvest_mid_batch_and_mid_fold(world: World) -> float:
    """One SIGKILL of harvest that lands in both phases at once, on two accounts: account A is
    mid-batch (KILL_AT of BIG stored), account B is inside its fold's transaction. B's fold is held
    there deterministically: the test holds a SHARE lock on metrics_state, so the fold's first
    write (its metrics_state row) waits, with B's rows all stored and none folded yet."""
    folding, folding_wanted = world.mailbox(60)
    batching, wanted = world.mailbox(BIG)

    async def hold() -> asyncpg.Connection:
        db = await asyncpg.connect(world.dsn, timeout=5)
        await db.execute("BEGIN; LOCK TABLE metrics_state IN SHARE MODE")
        return db
    lock = world.loop.run(hold())
    try:
        b = world.connect(folding)
        until(lambda: world.sql("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND query LIKE '%INSERT INTO metrics_state%'")["n"] == 1, 30,
              "account B's fold waiting inside its transaction")
        assert world.counts(b) == (0, 0, folding_wanted)  # every row stored, none folded
        a = world.connect(batching)
        old = world.pid("harvest")
        killed, stored = world.kill_mid_sync(a, lambda: old)
        assert stored < wanted
        until(lambda: world.replaced("harvest", old), 30, "harvest restarted")
    finally:
        world.loop.run(lock.close())  # rolls the lock back
    # The killed fold's transaction is gone with its connection: still nothing folded of B.
    assert world.counts(b)[:2] == (0, 0)
    # Both leases lapse (lease_seconds, 30 s: the minimum); the restarted harvest resumes A at its
    # checkpoint and folds B's stored rows.
    world.harvested(a, wanted, 75)
    world.harvested(b, folding_wanted, 75)
    recovered = time.monotonic() - killed
    assert world.state(a)["status"] == world.state(b)["status"] == "active"
    return recovered


def postgres_under_load(world: World) -> float:
    address, wanted = world.mailbox(BIG)
    account = world.connect(address)
    old = postmaster(world.service)
    assert old is not None
    killed, stored = world.kill_mid_sync(account, lambda: old)
    assert stored < wanted
    until(lambda: postmaster(world.service) not in (None, old) and world.http("/readyz") == 200, 45,
          "PostgreSQL restarted and web ready (vault, database, metrics) again")
    recovered = time.monotonic() - killed
    assert world.http("/healthz") == 200
    # Nothing lost, nothing counted twice: the interrupted sync is finished by the next one.
    world.harvested(account, wanted, 60)
    world.results["postgres-kill-under-load (counts clean)"] = round(time.monotonic() - killed, 1)
    return recovered


def imap_drop_mid_fetch(world: World) -> float:
    address, wanted = world.mailbox(BIG)
    account = world.connect(address)
    dropped, stored = _drop_when_under_way(world, account, address)
    assert stored < wanted
    row = until(lambda: (r := world.state(account))["failures"] and r, 30, "the failed sync recorded")
    assert row["last_error"] and row["status"] == "active" and row["lease_free"], dict(row)
    world.harvested(account, wanted, 60)  # the next sync (harvest --once: the backoff is a minute)
    assert world.state(account)["last_error"] is None
    return time.monotonic() - dropped


def _drop_when_under_way(world: World, account: int, address: str) -> tuple[float, int]:
    def drop() -> float:
        at = time.monotonic()
        assert world.dovecot.kick(address) >= 1  # SIGKILL to its imap processes
        return at
    return world.when_under_way(account, drop)


def provider(mode: str) -> Callable[[World], float]:
    def run(world: World) -> float:
        account = base_account(world)
        grants = world.oauth.refresh_grants
        if mode == "slow":
            world.oauth.delay = 0.7  # under the vault's 2 s refresh timeout: slow, but answers
            started = time.monotonic()
            try:
                assert world.gets(account)
            finally:
                world.oauth.delay = 0
            return time.monotonic() - started
        if mode == "server_error":
            world.oauth.fail_mode = "server_error"
        else:
            world.oauth.delay = 30  # past the vault's 2 s refresh timeout, every attempt
        try:
            assert world.vault(account) == {"error": "provider_unavailable"}
            assert world.oauth.refresh_grants - grants == 2  # refresh_attempts = 2, then gave up
            # The sync that needed a token records it; the account is not marked for reconnecting.
            done = world.harvest_once(account)
            assert done.returncode == 0, done.stderr[-2000:]
            row = world.state(account)
            assert row["status"] == "active" and "provider" in (row["last_error"] or ""), dict(row)
            assert world.vault(account, "token_state") == {"state": "ok"}
        finally:
            world.oauth.fail_mode = None
            world.oauth.delay = 0
        cleared = time.monotonic()
        until(lambda: world.gets(account), 30, "a get once the provider answers")
        recovered = time.monotonic() - cleared
        done = world.harvest_once(account)
        assert done.returncode == 0, done.stderr[-2000:]
        row = world.state(account)
        assert row["status"] == "active" and row["last_error"] is None, dict(row)
        return recovered
    return run


@dataclass(frozen=True)
class Fault:
    name: str
    phase: str
    injected: str
    holds: str
    bound: float  # seconds from the fault (or its end, for the provider) until `holds` is true again
    run: Callable[[World], float]


FAULTS = [
    Fault("vault-kill", "idle", "SIGKILL to the vault child",
          "restarted; a stored token still opens: get refreshes with the stored rotated token; token_state ok",
          20, vault_idle),
    Fault("vault-kill-mid-refresh", "mid-refresh (the provider holds /token)", "SIGKILL to the vault child",
          "the caller gets 'unavailable', nothing rotated; after restart get succeeds, token_state ok",
          20, vault_mid_refresh),
    Fault("vault-kill-mid-set", "mid-set (a connect's token written to the WAL, its fsync held by strace)",
          "SIGKILL to the vault child", "web answers 503 and commits no account; restarted; no token is left for "
          "the account id that never committed (web's sweep forgets it if the WAL kept it); the user connects "
          "again: one account, token opens", 60, vault_mid_set),
    Fault("web-kill", "idle", "SIGKILL to the web child", "restarted; /healthz 200", 15, web_idle),
    Fault("web-kill-mid-callback", "mid-callback (the code exchange hangs at the provider)",
          "SIGKILL to the web child", "no half-made account; after restart the user connects again: one account, "
          "token opens", 25, web_mid_callback),
    Fault("harvest-kill", "idle", "SIGKILL to the harvest child", "restarted (ready line logged)", 15, harvest_idle),
    Fault("harvest-kill-mid-batch-and-mid-fold", f"account A mid-batch ({KILL_AT} of {BIG} stored) and account B "
          "inside its fold's transaction, one kill", "SIGKILL to the harvest child",
          "restarted; once the leases lapse A resumes at its checkpoint and B's rows are folded: for both, "
          "message_index and the daily rollups equal the mailbox, raw rows folded away", 75,
          harvest_mid_batch_and_mid_fold),
    Fault("postgres-kill-under-load", f"mid-sync ({KILL_AT} of {BIG} messages stored)",
          "SIGKILL to the embedded postmaster", "restarted; /readyz 200 (then counts equal the mailbox)",
          45, postgres_under_load),
    Fault("imap-drop-mid-fetch", f"mid-FETCH ({KILL_AT} of {BIG} messages stored)",
          "Dovecot's imap processes for the user SIGKILLed", "the account records the error (still active); "
          "the next sync completes with counts equal to the mailbox", 60, imap_drop_mid_fetch),
    Fault("provider-5xx", "refresh", "provider answers 500 to /token",
          "get says provider_unavailable after 2 attempts; token kept (token_state ok), account active, "
          "not reauth; get succeeds once the provider answers", 10, provider("server_error")),
    Fault("provider-timeout", "refresh", "provider holds /token past the 2 s refresh timeout",
          "as for 5xx", 10, provider("timeout")),
    Fault("provider-slow", "refresh", "provider answers /token after 0.7 s",
          "get succeeds (within the timeout)", 5, provider("slow")),
]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    require_dovecot()
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="inboxlens-faults-"))
    base.chmod(0o711)
    loop = Loop()
    oauth = OAuthProvider(clients={"inboxlens-test": [SECRET]}, access_token_ttl=60)
    loop.run(oauth.start())
    dovecot = Dovecot(oauth.introspect_url)
    service = LoggedService(base, None)
    try:
        dovecot.start()
        service.env.update(provider_env(oauth, dovecot))
        service.env.update({
            "INBOXLENS_HARVEST__TICK_SECONDS": "0.5", "INBOXLENS_HARVEST__INTERVAL_SECONDS": "3600",
            "INBOXLENS_HARVEST__FIRST_SYNC_DAYS": "3650", "INBOXLENS_HARVEST__BATCH_SIZE": str(BATCH),
            "INBOXLENS_HARVEST__LEASE_SECONDS": "30",
            "INBOXLENS_VAULT__REFRESH_ATTEMPTS": "2", "INBOXLENS_VAULT__REFRESH_TIMEOUT_SECONDS": "2",
            "INBOXLENS_VAULT__REFRESH_BACKOFF_SECONDS": "0.1"})
        assert service.cli("keys", "init").returncode == 0
        service.start()
        assert "READY=1" in service.notification()
        world = World(base, loop, oauth, dovecot, service)
        yield world
        code, log = service.stop()
        assert code == 0, log[-3000:]
        secrets = {SECRET, *(r.get(k, "") for r in oauth.token_requests for k in ("refresh_token", "code")),
                   *oauth._access}  # every access token it issued, too
        assert len(secrets) > 10 and not [s for s in secrets if s and s in log], "a secret reached the service's log"
        report = os.environ.get("INBOXLENS_FAULTS_REPORT")
        if report:
            Path(report).write_text(json.dumps(world.results, indent=1))
            Path(report).with_suffix(".log").write_text(log)  # the service's log: checked above, no secret
    finally:
        if service.process is not None and service.process.poll() is None:
            service.stop()
        service.notify.close()
        dovecot.stop()
        loop.run(oauth.stop())
        loop.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(world: World, fault: Fault) -> None:
    # Each row starts from a ready service, whatever the row before it left behind.
    until(lambda: world.http("/readyz") == 200, 60, "the service ready before the fault")
    recovered = fault.run(world)
    world.results[fault.name] = round(recovered, 2)
    assert world.http("/healthz") == 200, "the service does not answer after the row"
    assert recovered <= fault.bound, f"{fault.name}: recovered in {recovered:.1f} s, over the stated {fault.bound} s"
