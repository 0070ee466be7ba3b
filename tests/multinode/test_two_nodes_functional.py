"""Two ``inboxlens serve`` nodes on one PostgreSQL and one Cassandra (issue 15.3): any node serves
any user, harvest leases spread the accounts, and a node that dies mid-harvest leaves its accounts
to the other, with every message counted once in Cassandra.

Each node is a whole service as root (supervisor, vault, web, harvest under their own uids), with
its own state and runtime directories and web port on 127.0.0.1. They share what docs/scaling.md
shares: a PostgreSQL server on a loopback TCP port with a password (tests/support/pg_tcp.py) for
accounts, sessions, leases, checkpoints and the vault's tokens (``token_store = "postgres"``), and
an Apache Cassandra node for the metrics (``metrics.backend = "cassandra"``: the one .ci/run or
tests/conftest.py started, a keyspace of this module's own, created by ``inboxlens migrate``);
and the tests' OAuth provider and Dovecot (the fault suite's world: tests/faults). Node B gets node
A's keyset and cookie-signing key the way an admin gives them: ``inboxlens keys export`` on A,
``inboxlens keys import`` on B.

A rotation on node A reaches node B the same way (export, stop B, import, start B), and both
nodes then rewrap the shared token store at once.

Each harvester may run one sync at a time (``harvest.max_connections = 1``), so a node that is
busy leaves the next due account to the other; the test makes a node busy deterministically by
holding a SHARE lock on ``mailbox_checkpoints``, which a sync's first checkpoint write waits for.
The lease is the shortest allowed (30 s), so a dead node's account is free again within 30 s of
its last stored batch.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
from cassandra.cluster import Cluster as CassandraCluster

from inboxlens.supervisor import plan as supervisor
from tests.conftest import TEST_PG_USER
from tests.faults.test_faults_functional import LoggedService, Loop, until
from tests.support.dovecot import Dovecot, require_dovecot
from tests.support.maildir import realistic_messages
from tests.support.oauth_provider import OAuthProvider
from tests.support.osusers import ensure_user
from tests.support.pg_tcp import TcpPostgres
from tests.test_end_to_end_functional import SECRET, provider_env
from tests.test_supervisor_functional import children_of, role_of
from tests.web.conftest import bearer, new_token

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.heavy,
              pytest.mark.skipif(os.geteuid() != 0, reason="the supervisor's root mode needs root")]

REPO = Path(__file__).resolve().parents[2]
BATCH = 25
LEASE = 30  # harvest.lease_seconds: the minimum the config allows
BIG = 400  # messages in the mailbox node A is killed in the middle of
KILL_AT = 50  # messages of it stored (harvest_state.messages_seen): A's sync is under way, far from done
SYNCED = re.compile(r"inboxlens-harvest\[\d+\] INFO inboxlens\.harvest: account (\d+): (\d+) new message\(s\)")


class Node(LoggedService):
    """One node's ``inboxlens serve``, in a session of its own so that it can die as a whole."""

    def __init__(self, name: str, base: Path, dsn: str, cassandra: Metrics) -> None:
        base.mkdir(mode=0o711)
        super().__init__(base, dsn)
        self.name = name
        self.env.update({"INBOXLENS_VAULT__TOKEN_STORE": "postgres", "INBOXLENS_VAULT__TOKEN_STORE_DSN": dsn,
                         "INBOXLENS_METRICS__BACKEND": "cassandra",
                         "INBOXLENS_METRICS__CASSANDRA_HOSTS": cassandra.contact,
                         "INBOXLENS_METRICS__CASSANDRA_KEYSPACE": cassandra.keyspace,
                         "INBOXLENS_METRICS__CASSANDRA_REPLICATION_FACTOR": "1"})

    def start(self) -> None:
        self.log_path = self.base / "serve.log"
        with open(self.log_path, "a") as log:  # a restart adds to the node's log
            self.process = subprocess.Popen([sys.executable, "-m", "inboxlens", "serve"], env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                            start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pid(self, role: str) -> int:
        assert self.process is not None
        return next(pid for pid, c in children_of(self.process.pid).items() if role_of(c) == role)

    def lease_owner(self) -> str:
        """What its harvester writes into ``harvest_state.lease_owner`` (scheduler.owner_name)."""
        return f"{os.uname().nodename}:{self.pid('harvest')}"

    def processes(self) -> list[int]:
        """The supervisor and everything under it (each child runs in a session of its own)."""
        assert self.process is not None
        return [self.process.pid, *descendants(self.process.pid)]

    def crash(self, processes: list[int]) -> None:
        """The node's machine stops at once: every process of the node is stopped first, so none
        can see another die and clean up, then SIGKILLed."""
        assert self.process is not None
        for pid in processes:
            os.kill(pid, signal.SIGSTOP)
        for pid in processes:
            os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def vault_get(self, account: int) -> dict[str, Any]:
        """Ask this node's vault for an access token as its harvest does; how it went, never the token."""
        user = pwd.getpwnam(supervisor.USERS["harvest"])
        socket = self.base / "run" / "vault" / "vault.sock"
        done = subprocess.run([sys.executable, "-m", "tests.faults.vault_get", str(socket), str(account), "get"],
                              user=user.pw_uid, group=user.pw_gid,
                              extra_groups=[grp.getgrnam(supervisor.SHARED_GROUP).gr_gid], cwd=REPO,
                              env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(json.loads(done.stdout.splitlines()[-1]))

    def synced(self) -> list[tuple[int, int]]:
        """(account, new messages) for every sync this node's harvest finished, in order."""
        return [(int(a), int(n)) for a, n in SYNCED.findall(self.log())]


class Metrics:
    """What the nodes folded, read from Cassandra the way an operator's cqlsh would (whole-table
    reads: the keyspace is this module's own and small)."""

    def __init__(self, contact: str) -> None:
        self.contact = contact
        self.keyspace = f"inboxlens_nodes_{os.getpid()}"
        host, _, port = contact.rpartition(":") if ":" in contact else (contact, "", "9042")
        self.cluster = CassandraCluster([host], port=int(port), protocol_version=5)
        self.session: Any = None

    def open(self) -> None:
        self.session = self.cluster.connect(self.keyspace)

    def counts(self, account: int) -> tuple[int, int, int]:
        """(messages indexed and complete, sum of the daily rollups, raw rows not folded yet)."""
        indexed = sum(1 for r in self.session.execute("SELECT account_id, complete FROM message_index")
                      if r.account_id == account and r.complete)
        daily = sum(r.received + r.sent for r in self.session.execute(
            "SELECT account_id, received, sent FROM day_rollups") if r.account_id == account)
        raw = sum(1 for r in self.session.execute("SELECT account_id FROM raw_rows") if r.account_id == account)
        return indexed, daily, raw

    def close(self) -> None:
        try:  # also when a test failed before open(): migrate may have made the keyspace
            session = self.session or self.cluster.connect()
            session.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}", timeout=60)
        finally:
            self.cluster.shutdown()


def descendants(pid: int) -> list[int]:
    found = []
    for child in children_of(pid):
        found += [child, *descendants(child)]
    return found


@dataclass
class Cluster:
    loop: Loop
    pg: TcpPostgres
    oauth: OAuthProvider
    dovecot: Dovecot
    a: Node
    b: Node
    metrics: Metrics
    mailboxes: dict[int, int] = field(default_factory=dict)  # account -> messages harvest must count
    user: dict[str, Any] = field(default_factory=dict)  # the user of the first test: cookie, token, account

    def sql(self, query: str, *args: Any) -> Any:
        async def ask() -> Any:
            db = await asyncpg.connect(self.pg.dsn, timeout=5)
            try:
                return await db.fetch(query, *args)
            finally:
                await db.close()
        return self.loop.run(ask(), 30)

    def mailbox(self, count: int) -> tuple[str, int]:
        address = f"node{len(self.mailboxes) + 1}-{count}@example.test"
        messages = realistic_messages(address, count=count, seed=300 + len(self.mailboxes))
        self.dovecot.deliver(address, messages)
        return address, len([m for m in messages if m.folder in ("INBOX", "Sent")])

    async def _connect(self, node: Node, address: str, jar: aiohttp.CookieJar) -> None:
        self.oauth.login = address
        async with aiohttp.ClientSession(node.url, cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=60)) as browser:
            page = await browser.get("/connect/test?tz=Europe/Berlin")
            assert page.status == 200 and address in await page.text(), page.status

    def jar(self) -> aiohttp.CookieJar:
        """A browser's cookies (made in the loop the requests run in)."""
        async def make() -> aiohttp.CookieJar:
            return aiohttp.CookieJar(unsafe=True)
        return self.loop.run(make())

    def connect(self, node: Node, count: int, jar: aiohttp.CookieJar | None = None) -> int:
        """A new mailbox of ``count`` messages, connected through ``node``'s web as a browser does."""
        address, wanted = self.mailbox(count)
        self.loop.run(self._connect(node, address, self.jar() if jar is None else jar), 90)  # empty: falsy
        account = int(self.sql("SELECT id FROM mail_accounts WHERE address = $1", address)[0]["id"])
        self.mailboxes[account] = wanted
        return account

    def counts(self, account: int) -> tuple[int, int, int]:
        return self.metrics.counts(account)

    def stored(self, account: int) -> int:
        """Messages harvest stored for the account so far (its checkpointed batches)."""
        return int(self.sql("SELECT messages_seen FROM harvest_state WHERE account_id = $1", account)[0]["messages_seen"])

    def harvested(self, account: int, seconds: float) -> None:
        """Until the account's counts are a clean harvest's: every message indexed once, the daily
        rollups summing to the mailbox, the raw rows folded away; never more than the mailbox."""
        wanted = self.mailboxes[account]

        def clean() -> bool:
            got = self.counts(account)
            assert got[0] <= wanted and got[1] <= wanted, f"counted twice: {got} for {wanted} messages"
            return got == (wanted, wanted, 0)
        until(clean, seconds, f"a clean harvest of account {account} ({wanted} messages)")
        # A sync logs its end after the fold and the lease's release: wait for the line too.
        until(lambda: any(account == a for node in (self.a, self.b) for a, _ in node.synced()), 10,
              f"the end of account {account}'s sync in a node's log")

    def connect_and(self, node: Node, count: int, rows: int, act: Callable[[], None]) -> int:
        """Connect a new mailbox through ``node`` and ``act`` as soon as ``rows`` of its messages
        are stored; watched from before the connect (one connection, polled every 2 ms), since a
        harvester that has room starts the sync within a tick of the callback."""
        address, wanted = self.mailbox(count)

        async def watch() -> None:
            db = await asyncpg.connect(self.pg.dsn, timeout=5)
            try:
                deadline = time.monotonic() + 60
                while (await db.fetchval("SELECT h.messages_seen FROM harvest_state h JOIN mail_accounts m "
                                         "ON m.id = h.account_id WHERE m.address = $1", address) or 0) < rows:
                    assert time.monotonic() < deadline, f"the sync of {address} never got under way"
                    await asyncio.sleep(0.002)
                act()
            finally:
                await db.close()
        watching = self.loop.submit(watch())
        self.loop.run(self._connect(node, address, self.jar()), 90)
        watching.result(90)
        account = int(self.sql("SELECT id FROM mail_accounts WHERE address = $1", address)[0]["id"])
        self.mailboxes[account] = wanted
        return account

    def leases(self) -> dict[int, str | None]:
        rows = self.sql("SELECT account_id, lease_owner FROM harvest_state")
        return {r["account_id"]: r["lease_owner"] for r in rows}

    def hold_syncs(self) -> asyncpg.Connection:
        """Every sync waits at its first checkpoint write (a new mailbox's checkpoint row, or a
        stored batch's) until ``let_syncs_go``, holding its lease."""
        async def hold() -> asyncpg.Connection:
            db = await asyncpg.connect(self.pg.dsn, timeout=5)
            await db.execute("BEGIN; LOCK TABLE mailbox_checkpoints IN SHARE MODE")
            return db
        return self.loop.run(hold())

    def let_syncs_go(self, lock: asyncpg.Connection) -> None:
        self.loop.run(lock.close())

    def syncs_waiting(self) -> int:
        return int(self.sql("SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND query LIKE '%mailbox_checkpoints%' AND pid <> pg_backend_pid()")[0]["n"])


def harvest_env() -> dict[str, str]:
    return {"INBOXLENS_HARVEST__TICK_SECONDS": "0.5", "INBOXLENS_HARVEST__INTERVAL_SECONDS": "3600",
            "INBOXLENS_HARVEST__FIRST_SYNC_DAYS": "3650", "INBOXLENS_HARVEST__BATCH_SIZE": str(BATCH),
            "INBOXLENS_HARVEST__LEASE_SECONDS": str(LEASE), "INBOXLENS_HARVEST__MAX_CONNECTIONS": "1"}


def start(node: Node) -> None:
    node.start()
    while "READY=1" not in (said := node.notification()):  # after a restart, the last stop's STOPPING=1 first
        assert "STOPPING=1" in said, node.log()[-3000:]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require_dovecot()
    contact = os.environ.get("INBOXLENS_TEST_CASSANDRA", "").split(",")[0]
    if not contact:  # tests/conftest.py starts a node for this module; in CI one that cannot start fails
        pytest.skip("no Cassandra node: set INBOXLENS_TEST_CASSANDRA=host:port (docs/cassandra.md)")
    import shutil
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="inboxlens-nodes-"))
    base.chmod(0o711)
    loop = Loop()
    pg = TcpPostgres(run_as=ensure_user(TEST_PG_USER).pw_name)
    oauth = OAuthProvider(clients={"inboxlens-test": [SECRET]})
    loop.run(oauth.start())
    dovecot = Dovecot(oauth.introspect_url)
    metrics = Metrics(contact)
    nodes: list[Node] = []
    try:
        dsn = pg.start()
        dovecot.start()
        nodes = [Node("A", base / "a", dsn, metrics), Node("B", base / "b", dsn, metrics)]
        for node in nodes:
            node.env.update({**provider_env(oauth, dovecot), **harvest_env()})
        a, b = nodes
        assert a.cli("keys", "init").returncode == 0
        migrated = a.cli("migrate")  # the shared PostgreSQL database and the Cassandra keyspace
        assert migrated.returncode == 0 and f"cassandra keyspace {metrics.keyspace}" in migrated.stdout, \
            migrated.stderr
        metrics.open()
        start(a)  # its web makes the cookie-signing key
        exported = a.cli("keys", "export", str(base / "keys"))
        assert exported.returncode == 0, exported.stderr
        imported = b.cli("keys", "import", str(base / "keys"))
        assert imported.returncode == 0, imported.stderr
        shutil.rmtree(base / "keys")
        start(b)
        yield Cluster(loop, pg, oauth, dovecot, a, b, metrics)
        code, log = b.stop()
        assert code == 0, log[-3000:]
        secrets = {SECRET, *(r.get(k, "") for r in oauth.token_requests for k in ("refresh_token", "code")),
                   *oauth._access}
        logs = a.log() + log
        assert not [s for s in secrets if s and s in logs], "a secret reached a node's log"
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.stop()
            node.notify.close()
        dovecot.stop()
        loop.run(oauth.stop())
        loop.close()
        pg.stop()
        metrics.close()
        shutil.rmtree(base, ignore_errors=True)


async def _status(session: aiohttp.ClientSession, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(path, allow_redirects=False, **kwargs) as answer:
        body = await answer.json() if answer.content_type == "application/json" else await answer.text()
        return answer.status, body


def test_a_user_who_connected_through_one_node_is_served_by_the_other(cluster: Cluster):
    jar = cluster.jar()
    account = cluster.connect(cluster.a, 40, jar)  # the browser logs in on node A
    cookie = next(c for c in jar if c.key == "inboxlens_session")
    tampered = cookie.value[:-1] + ("0" if cookie.value[-1] != "0" else "1")

    async def on_both() -> str:
        async with aiohttp.ClientSession(cluster.a.url, cookie_jar=jar) as at_a, \
                aiohttp.ClientSession(cluster.b.url, cookie_jar=jar) as at_b, \
                aiohttp.ClientSession(cluster.b.url, cookies={"inboxlens_session": tampered}) as forged:
            for browser in (at_a, at_b):
                status, me = await _status(browser, "/api/v1/me")
                assert status == 200 and [a["id"] for a in me["accounts"]] == [account], (status, me)
                assert (await _status(browser, "/settings"))[0] == 200
            assert (await _status(forged, "/settings"))[0] != 200  # B checks the cookie's MAC: not just any id
            assert (await _status(forged, "/api/v1/me"))[0] == 401
            token = await new_token(at_b)  # made on B, with the session A started (and B's CSRF check)
        for node in (cluster.a, cluster.b):
            async with aiohttp.ClientSession(node.url, headers={"Authorization": f"Bearer {token}"}) as extension:
                status, me = await _status(extension, "/api/v1/me")
                assert status == 200 and me["user"]["email"].startswith("node1-"), (node.name, status, me)
        return token
    cluster.user = {"jar": jar, "account": account, "token": cluster.loop.run(on_both())}
    cluster.harvested(account, 30)
    # The numbers are Cassandra's (PostgreSQL's metrics tables stay empty), and both webs read them.
    assert cluster.sql("SELECT (SELECT count(*) FROM raw_headers) + (SELECT count(*) FROM account_daily) "
                       "+ (SELECT count(*) FROM message_index) AS n")[0]["n"] == 0

    async def read(node: Node) -> tuple[list[tuple[str, int, int]], dict[str, Any]]:
        async with aiohttp.ClientSession(node.url, headers=bearer(cluster.user["token"])) as extension:
            status, found = await _status(extension, f"/api/v1/accounts/{account}/correspondents?order=volume")
            assert status == 200 and found["correspondents"], (node.name, status, found)
            people = [(c["correspondent"], c["received"], c["sent"]) for c in found["correspondents"]]
            status, card = await _status(extension, f"/api/v1/accounts/{account}/correspondents/{quote(people[0][0])}")
            assert status == 200, (node.name, status, card)
        relationship = card["card"]["relationship"]
        return people, {k: relationship[k] for k in ("received", "sent", "first_contact", "last_contact")}
    at_a, at_b = cluster.loop.run(read(cluster.a)), cluster.loop.run(read(cluster.b))
    assert at_a == at_b and sum(r + s for _, r, s in at_a[0]) >= at_a[1]["received"] + at_a[1]["sent"] > 0


def test_leases_spread_the_accounts_and_each_is_synced_by_one_node(cluster: Cluster):
    lock = cluster.hold_syncs()
    try:
        accounts = [cluster.connect(cluster.b, 60 + 10 * i) for i in range(4)]
        # One sync at a time per harvester: two accounts are now held in their syncs, one on each
        # node, and the other two wait, leased by no one.
        until(lambda: cluster.syncs_waiting() == 2, 30, "both harvesters held in a sync")
        leases = cluster.leases()
        assert sorted(filter(None, (leases.get(a) for a in accounts))) == sorted(
            [cluster.a.lease_owner(), cluster.b.lease_owner()]), leases
    finally:
        cluster.let_syncs_go(lock)
    for account in accounts:
        cluster.harvested(account, 30)
    by_node = {node.name: [a for a, _ in node.synced()] for node in (cluster.a, cluster.b)}
    assert set(by_node["A"]) & set(accounts) and set(by_node["B"]) & set(accounts), by_node
    for account in [cluster.user["account"], *accounts]:
        syncs = [(node.name, n) for node in (cluster.a, cluster.b) for a, n in node.synced() if a == account]
        assert syncs in ([("A", cluster.mailboxes[account])], [("B", cluster.mailboxes[account])]), (account, syncs)


def test_a_rotation_on_one_node_reaches_the_other_and_both_rewrap_at_once(cluster: Cluster, tmp_path: Path):
    a, b = cluster.a, cluster.b
    rotated = a.cli("keys", "rotate")  # online, through A's vault: A's web and vault seal under key 2 from now
    assert "key 2 is now primary" in rotated.stdout, rotated.stderr
    exported = a.cli("keys", "export", str(tmp_path / "keys"))
    assert exported.returncode == 0, exported.stderr
    refused = b.cli("keys", "import", str(tmp_path / "keys"))  # B's vault holds the keyset while it runs
    assert refused.returncode == 1 and "the vault is running on this node" in refused.stderr
    code, log = b.stop()
    assert code == 0, log[-3000:]
    imported = b.cli("keys", "import", str(tmp_path / "keys"))
    assert imported.returncode == 0 and "imported keys 1, 2 (primary 2)" in imported.stdout, imported.stderr
    start(b)
    # Both nodes rewrap the shared store at once, a token per request so that they meet on every token.
    rewraps = [subprocess.Popen([sys.executable, "-m", "inboxlens", "keys", "rewrap", "--batch", "1"], env=node.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (a, b)]
    for rewrap in rewraps:
        out, err = rewrap.communicate(timeout=60)
        assert rewrap.returncode == 0 and "none left under older keys" in out, (out, err)
    sealed = {r["key_id"]: r["n"] for r in cluster.sql("SELECT key_id, count(*) AS n FROM inboxlens_vault.tokens "
                                                        "GROUP BY key_id")}
    assert sealed == {2: len(cluster.mailboxes)}
    assert "refresh_failed" not in a.cli("keys", "status").stdout
    for account in cluster.mailboxes:  # each vault opens every token, all sealed under key 2 now
        assert a.vault_get(account) == b.vault_get(account) == {"ok": True}, account


def test_a_node_killed_mid_harvest_leaves_its_account_to_the_other(cluster: Cluster):
    a, b = cluster.a, cluster.b
    owner = a.lease_owner()
    node_a = a.processes()
    os.kill(b.pid("harvest"), signal.SIGSTOP)  # B cannot claim: only A syncs the new mailbox
    try:
        # Connected through B (whose web outlives the kill).
        big = cluster.connect_and(b, BIG, KILL_AT, lambda: a.crash(node_a))
        killed = time.monotonic()
        assert cluster.leases()[big] == owner
        stored = cluster.stored(big)
        assert stored < cluster.mailboxes[big], "A finished before it was killed"
    finally:
        os.kill(b.pid("harvest"), signal.SIGCONT)
    cluster.harvested(big, LEASE + 40)
    taken = time.monotonic() - killed
    print(f"\nnode A SIGKILLed with {stored} of {cluster.mailboxes[big]} messages stored; "
          f"node B finished the account {taken:.1f} s later (lease {LEASE} s)")
    assert [n for account, n in a.synced() if account == big] == []  # A died before it finished
    assert [account for account, _ in b.synced()].count(big) == 1
    # A's users are B's now: the session cookie and the API token still work.
    async def served() -> None:
        async with aiohttp.ClientSession(b.url, cookie_jar=cluster.user["jar"]) as browser:
            assert (await _status(browser, "/api/v1/me"))[0] == 200
        async with aiohttp.ClientSession(b.url, headers={"Authorization": f"Bearer {cluster.user['token']}"}) as ext:
            assert (await _status(ext, "/api/v1/me"))[0] == 200
    cluster.loop.run(served())
