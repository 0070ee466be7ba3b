"""``inboxlens demo``: the dashboard and the API over a generated mailbox, no provider, no mail server.

Privilege: whoever runs it. As root it runs the service in root mode (its own users), else in
development mode, like ``serve``; either way on a state directory of its own,
``<state_dir>-demo`` (``/var/lib/inboxlens-demo``, ``~/.local/state/inboxlens-demo``), never the
real one. Writes there: a keyset, the embedded PostgreSQL with one demo user, one mailbox of
generated header metadata (folded into the metrics store as harvest would), an API token,
and ``demo.json``: the marker web looks for in that directory (and only in one named
``*-demo``) to mark every answer as demo data and to accept the printed one-time sign-in link.
The mailbox is never synced (no provider, its next sync never due). ``--remove`` deletes the
whole demo directory, and only a directory holding the marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import secrets
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from inboxlens.config.schema import Config, DatabaseConfig, MetricsConfig
from inboxlens.metrics.model import AccountRef, RawRow

MARKER = "demo.json"  # web.demo reads it
SUFFIX = "-demo"
EMAIL = "demo@inboxlens.invalid"
ADDRESS = "alex@demo.inboxlens.invalid"
PROVIDER = "demo"
SEED = 20240630
DAYS = 120

_PEOPLE = ["maria.rossi@example.com", "ben@okafor.example.org", "chloe.dubois@example.net", "h.tanaka@corp.example",
           "priya@uni.example", "soren@example.com", "grete.mueller@corp.example", "omar.celik@example.org",
           "zoe.kim@example.net", "tomas@garcia.example"]  # the first write most: a few close contacts, a long tail
_MACHINES = [("news@news.example.com", "weekly.news.example.com"), ("no-reply@git.example.com", None),
             ("alerts@monitor.example.net", None)]


def demo_config(config: Config, port: int | None = None) -> Config:
    """The configuration the demo runs with: its own state, embedded defaults, no provider."""
    state = config.state_dir.with_name(config.state_dir.name + SUFFIX)
    web = dataclasses.replace(config.web, host="127.0.0.1", public_url="", port=port or config.web.port)
    vault = dataclasses.replace(config.vault, token_store="sqlite", token_store_dsn="")
    harvest = dataclasses.replace(config.harvest, tick_seconds=3600.0)
    return dataclasses.replace(config, state_dir=state, runtime_dir=state / "run", database=DatabaseConfig(),
                               metrics=MetricsConfig(), providers={}, web=web, vault=vault, harvest=harvest)


# -- the generated mailbox ----------------------------------------------------------------------

def mailbox(account_id: int, now: datetime, seed: int = SEED) -> list[RawRow]:
    """About a thousand messages over the last ``DAYS`` days: threads both ways, some unanswered, machines."""
    rng = random.Random(seed)
    rows: list[RawRow] = []
    for n in range(DAYS * 6):
        when = now - timedelta(days=DAYS * rng.random(), minutes=rng.randrange(1, 60))
        if rng.random() < 0.25:
            sender, list_id = rng.choice(_MACHINES)
            rows.append(_row(account_id, f"<m{n}@machine.example>", when, sender, ADDRESS, rng,
                             automated=True, list_id=list_id))
            continue
        person = _PEOPLE[min(int(rng.expovariate(0.35)), len(_PEOPLE) - 1)]
        rows += _thread(account_id, n, when, person, now, rng)
    return rows


def _thread(account_id: int, n: int, when: datetime, person: str, now: datetime, rng: random.Random) -> list[RawRow]:
    """A message one way and, mostly, an answer the other way after minutes to days."""
    incoming = rng.random() < 0.6
    first = _row(account_id, f"<t{n}a@{person.split('@')[1]}>", when, *(
        (person, ADDRESS) if incoming else (ADDRESS, person)), rng)
    answer_at = when + timedelta(hours=rng.expovariate(1 / 9))
    if rng.random() < 0.18 or answer_at >= now:
        return [first]  # unanswered: owed (theirs) or awaiting (yours) once old enough
    reply = _row(account_id, f"<t{n}b@reply.example>", answer_at, *((ADDRESS, person) if incoming else
                                                                      (person, ADDRESS)), rng,
                 in_reply_to=first.message_id)
    return [first, reply]


def _row(account_id: int, message_id: str, at: datetime, sender: str, recipient: str, rng: random.Random, *,
         automated: bool = False, list_id: str | None = None, in_reply_to: str | None = None) -> RawRow:
    received = recipient == ADDRESS
    verdict = ("fail" if rng.random() < 0.04 else "pass") if received else None
    return RawRow(account_id, hashlib.sha256(b"demo\0" + message_id.encode()).digest()[:16], "INBOX",
                  rng.randrange(1, 2**31), message_id, (in_reply_to,) if in_reply_to else (), (),
                  "(demo)", sender, None, (recipient,), (), at, at, True, "received" if received else "sent",
                  automated, list_id=list_id, dkim=verdict, spf=verdict, dmarc=verdict,
                  dkim_domains=(sender.split("@")[1],) if verdict == "pass" else ())


# -- putting it in place ----------------------------------------------------------------------

async def seed(dsn: str, api_token: str) -> int:
    """The demo user, its mailbox (folded as harvest would) and API token; the account id. Replaces an earlier one."""
    from inboxlens.metrics.model import InsightSettings
    from inboxlens.metrics.postgres.store import PgMetricsStore
    from inboxlens.web.tokens import digest

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as db, db.transaction():
            await db.execute("DELETE FROM users WHERE email = $1", EMAIL)  # cascades to its account and tokens
            user = await db.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", EMAIL)
            account = await db.fetchval("INSERT INTO mail_accounts (user_id, address, provider, time_zone, "
                                        "last_sync_at) VALUES ($1, $2, $3, 'UTC', now()) RETURNING id",
                                        user, ADDRESS, PROVIDER)
            await db.execute("INSERT INTO harvest_state (account_id, next_run_at, first_sync_done) "
                             "VALUES ($1, 'infinity', true)", account)  # never due: there is nothing to sync
            await db.execute("INSERT INTO api_tokens (user_id, name, token_hash) VALUES ($1, 'demo', $2)",
                             user, digest(api_token))
        store = PgMetricsStore(pool, InsightSettings())
        seen = await store.write_raw(mailbox(int(account), datetime.now(timezone.utc)))
        await store.aggregate(AccountRef(int(account), ADDRESS, "UTC"))
        await pool.execute("UPDATE harvest_state SET messages_seen = $2 WHERE account_id = $1", account, seen)
        return int(account)
    finally:
        await pool.close()


async def store_token(config: Config, account: int) -> None:
    """A sealed placeholder in the vault, so the mailbox shows as connected; no provider would take it."""
    from inboxlens.vault import sealed
    from inboxlens.vault.keyset import Keyset
    from inboxlens.vault.store.sqlite import SqliteTokenStore

    primary = Keyset.load(config.vault_dir).primary
    store = await SqliteTokenStore.open(config.vault_dir / "tokens.sqlite3")
    try:
        placeholder = f"demo-{secrets.token_hex(8)}"
        await store.put(str(account), PROVIDER, primary.id,
                        sealed.seal(primary.public_key, primary.id, str(account), PROVIDER, placeholder))
    finally:
        await store.close()


def write_marker(config: Config, login_code: str) -> None:
    data = {"email": EMAIL, "login_sha256": hashlib.sha256(login_code.encode()).hexdigest()}
    path = config.state_dir / MARKER
    temporary = path.with_name(f".{MARKER}.new")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:  # web reads it; it holds a hash, not the code
        json.dump(data, f)
    os.replace(temporary, path)


def prepare(config: Config) -> tuple[str, str, int]:
    """Keys, database, data and marker of the demo state; the sign-in code, the API token, the account."""
    from inboxlens.supervisor.database import open_database
    from inboxlens.supervisor.plan import make_plan, prepare_directories
    from inboxlens.vault import admin

    plan = make_plan()
    prepare_directories(config, plan)
    admin.init(config, if_missing=True)
    login_code, api_token = secrets.token_urlsafe(24), "ilk_" + secrets.token_urlsafe(32)

    async def go() -> int:
        dsn, server = await open_database(config, plan)
        try:
            return await seed(dsn, api_token)
        finally:
            if server is not None:
                await asyncio.to_thread(server.release)  # serve starts it again, as its own
    account = asyncio.run(go())
    asyncio.run(store_token(config, account))
    prepare_directories(config, plan)  # hands the token store to the vault's user (root mode)
    write_marker(config, login_code)
    return login_code, api_token, account


def run(config: Config, port: int | None, remove: bool) -> int:
    demo = demo_config(config, port)
    if remove:
        return remove_demo(demo)
    from inboxlens.supervisor import serve

    login_code, api_token, account = prepare(demo)
    url = demo.web.base_url
    print(f"InboxLens demo: generated data only (no provider, no mail server), in {demo.state_dir}\n"
          f"  dashboard:  {url}/demo/login?code={login_code}   (one sign-in link, for this run)\n"
          f"  API:        curl -H 'Authorization: Bearer {api_token}' {url}/api/v1/accounts/{account}/correspondents\n"
          f"  remove it:  inboxlens demo --remove   (Ctrl-C stops the demo first)", flush=True)
    return serve(demo)


def remove_demo(demo: Config) -> int:
    """Delete the demo's state directory: only one holding the marker, with the demo stopped."""
    from inboxlens.backup import service_running
    from inboxlens.db.embedded import stop_stale
    from inboxlens.paths import pg_data_dir

    if not demo.state_dir.exists():
        print(f"no demo data at {demo.state_dir}")
        return 0
    if not (demo.state_dir / MARKER).exists():
        print(f"inboxlens demo: {demo.state_dir} holds no {MARKER}: not a demo's state; left alone", file=sys.stderr)
        return 1
    if service_running(demo):
        print("inboxlens demo: the demo is running; stop it (Ctrl-C) and remove it then", file=sys.stderr)
        return 1
    with contextlib.suppress(FileNotFoundError):
        stop_stale(pg_data_dir(demo.state_dir))
    shutil.rmtree(demo.state_dir)
    print(f"removed the demo and all its data ({demo.state_dir})")
    return 0
