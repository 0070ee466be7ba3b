"""Public profiles against a local Gravatar and Libravatar (tests/support/avatars.py), on a real
PostgreSQL, as harvest's own database role: hash-only requests, people only, opted-in active
mailboxes only, the cache, the rate limit, failures that harm nothing, the admin's switches."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from inboxlens.config.build import to_dict
from inboxlens.config.schema import ProfilesConfig
from inboxlens.db import roles
from inboxlens.db.migrate import migrate
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.profiles import public
from inboxlens.profiles.public import Lookups, Settings, forget_public_profiles, public_fields, public_photo
from tests.support.avatars import GIF, JPEG, PNG, AvatarService, profile_json

NOW = datetime.now(timezone.utc)
REPO = Path(__file__).resolve().parent.parent.parent
ANN, BOB, CAROL = "Ann.Lee@Example.ORG", "bob@example.net", "carol@example.com"


def hexed(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


@dataclass
class World:
    admin: asyncpg.Pool  # the superuser: seeds what web and the metrics fold would have written
    harvest: asyncpg.Pool  # harvest's role: what the lookups may do
    service: AvatarService

    async def account(self, address: str, *, opted_in: bool = True, status: str = "active") -> int:
        user = await self.admin.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", address)
        return int(await self.admin.fetchval(
            "INSERT INTO mail_accounts (user_id, address, provider, time_zone, public_profiles, status) "
            "VALUES ($1, $2, 'test', 'UTC', $3, $4) RETURNING id", user, address, opted_in, status))

    async def correspondent(self, account: int, address: str, *, received: int = 3, sent: int = 2,
                            automated: int = 0, days_ago: int = 1) -> None:
        """A contacts row as the metrics fold keeps one (lower-cased, automated_received counted)."""
        await self.admin.execute(
            "INSERT INTO contacts (account_id, correspondent, first_contact, last_contact, received, sent, "
            "automated_received, hours) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            account, address.lower(), NOW - timedelta(days=400), NOW - timedelta(days=days_ago), received, sent,
            automated, [0] * 24)

    def lookups(self, config: ProfilesConfig | None = None, **bounds: Any) -> Lookups:
        settings = Settings.of(config or self.service.config(), **{"timeout": 2.0, **bounds})
        return Lookups(self.harvest, PgMetricsStore(self.harvest), settings)

    async def round(self, lookups: Lookups) -> int:
        async with public._session(lookups.settings.timeout) as session:
            return await lookups.round(session, asyncio.Event())

    async def rows(self, account: int | None = None) -> dict[tuple[str, str], asyncpg.Record]:
        found = await self.admin.fetch("SELECT * FROM public_profiles WHERE account_id = coalesce($1, account_id)",
                                       account)
        return {(bytes(r["address_hash"]).hex(), r["source"]): r for r in found}

    def asked(self) -> set[str]:
        """The hashes any request named."""
        return {r.raw_path.split("?")[0].rsplit("/", 1)[1] for r in self.service.requests}


@pytest.fixture
async def world(pg_db: str) -> AsyncIterator[World]:
    await migrate(pg_db)
    role = f"harvest_{secrets.token_hex(4)}"
    admin = await asyncpg.create_pool(pg_db, min_size=1, max_size=4)
    await admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
    for statement in roles.grant_statements("harvest", role):
        await admin.execute(statement)

    async def as_harvest(connection: asyncpg.Connection) -> None:
        await connection.execute(f'SET ROLE "{role}"')

    harvest = await asyncpg.create_pool(pg_db, min_size=1, max_size=4, setup=as_harvest)
    assert await harvest.fetchval("SELECT current_user") == role
    service = await AvatarService().start()
    try:
        yield World(admin, harvest, service)
    finally:
        await service.stop()
        await harvest.close()
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


def no_trace_of(addresses: tuple[str, ...], texts: list[str]) -> None:
    for text in texts:
        assert "@" not in text
        for address in addresses:
            assert address.lower() not in text.lower() and address.split("@")[0].lower() not in text.lower()


async def test_only_hashes_leave_and_each_source_answers_as_documented(world: World,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = world.service
    s.profiles[hexed(ANN)] = profile_json(hexed(ANN), name="Ann \x07Lee\u202e", links=[
        {"label": "Blog", "url": "https://ann.example/blog"}, {"label": "x" * 999, "url": "ftp://nope"}])
    s.gravatar_images[hexed(ANN)] = JPEG
    s.libravatar_images[hexed(BOB)] = PNG
    account = await world.account("me@example.test")
    for who in (ANN, BOB, CAROL):
        await world.correspondent(account, who)

    assert await world.round(world.lookups()) == 6  # three people, two sources

    # What left: GETs whose path and query hold a hash and the documented parameters, nothing else.
    assert len(s.requests) == 9  # per person: profile, Gravatar avatar, Libravatar avatar
    assert world.asked() == {hexed(ANN), hexed(BOB), hexed(CAROL)}
    for seen in s.requests:
        assert seen.method == "GET"
        assert {k.lower() for k, _ in seen.headers} <= {"host", "user-agent", "accept", "accept-encoding"}
        assert dict(seen.headers)["User-Agent"] == "InboxLens"
        assert seen.raw_path.endswith(("?d=404&s=200",)) == (seen.service != "profile")
    no_trace_of((ANN, BOB, CAROL, "me@example.test"),
                [r.raw_path for r in s.requests] + [v for r in s.requests for _, v in r.headers])

    rows = await world.rows(account)
    ann = rows[hexed(ANN), "gravatar"]
    assert ann["found"] and ann["photo_type"] == "image/jpeg" and bytes(ann["photo"]) == JPEG
    fields = (await public_fields(world.admin, account, ANN))[0]["fields"]
    assert fields == {"name": "Ann Lee", "organization": "Acme", "title": "Chemist", "links": [
        {"kind": "url", "value": "https://gravatar.com/ann", "label": "Gravatar"},
        {"kind": "social", "value": "https://social.example/@ann", "label": "Mastodon"},
        {"kind": "url", "value": "https://ann.example/blog", "label": "Blog"}]}  # hidden and javascript: dropped
    assert "gravatar.com/avatar" not in str(fields)  # the third party's avatar URL is never kept
    assert not rows[hexed(ANN), "libravatar"]["found"]
    assert rows[hexed(BOB), "libravatar"]["found"] and rows[hexed(BOB), "libravatar"]["photo_type"] == "image/png"
    assert not rows[hexed(BOB), "gravatar"]["found"]
    assert not rows[hexed(CAROL), "gravatar"]["found"] and not rows[hexed(CAROL), "libravatar"]["found"]

    # The reader for web: found rows only, Gravatar first; the photo by (mailbox, address, source).
    assert [r["source"] for r in await public_fields(world.admin, account, ANN)] == ["gravatar"]
    assert [(r["source"], r["has_photo"]) for r in await public_fields(world.admin, account, " bob@EXAMPLE.net")] \
        == [("libravatar", True)]
    assert await public_fields(world.admin, account, CAROL) == []
    assert await public_photo(world.admin, account, ANN, "gravatar") == (JPEG, "image/jpeg")
    assert await public_photo(world.admin, account, ANN, "libravatar") is None

    logged = [r.getMessage() for r in caplog.records]
    assert any("2 found, 4 not found, 0 failed" in m for m in logged)
    no_trace_of((ANN, BOB, CAROL), logged)
    assert not any(hexed(a) in m for m in logged for a in (ANN, BOB, CAROL))


async def test_only_people_are_looked_up(world: World) -> None:
    account = await world.account("me@example.test")
    person = "dana@example.org"
    machines = ["news@shop.example",  # mostly automated mail (List-Id, Precedence, ...) per the fold
                "no-reply@bank.example", "noreply2@x.example", "do_not_reply@x.example", "info@x.example",
                "support+ticket@x.example", "account-notifications@x.example", "owner-list@x.example",
                "list-request@x.example", "mailer-daemon@x.example", "postmaster@x.example", "not an address"]
    await world.correspondent(account, person, received=5)
    await world.correspondent(account, machines[0], received=10, automated=9)
    for address in machines[1:]:
        await world.correspondent(account, address)

    await world.round(world.lookups())
    assert world.asked() == {hexed(person)}


async def test_only_opted_in_active_mailboxes_are_looked_up(world: World) -> None:
    asked = "erin@example.org"
    for n, (opted_in, status) in enumerate(((True, "active"), (False, "active"), (True, "disconnected"),
                                            (True, "reauth_required"), (True, "error"))):
        account = await world.account(f"mailbox{n}@example.test", opted_in=opted_in, status=status)
        await world.correspondent(account, asked if n == 0 else f"person{n}@example.org")
    await world.round(world.lookups())
    assert world.asked() == {hexed(asked)}


async def test_every_mailbox_gets_its_turn(world: World) -> None:
    """A round reads mailboxes from where the last one stopped until its batch is full."""
    people = [f"person{n}@example.org" for n in range(3)]
    for n, person in enumerate(people):
        await world.correspondent(await world.account(f"mailbox{n}@example.test"), person)
    lookups = world.lookups(batch=2)  # one person's two sources
    for n, person in enumerate(people):
        world.service.requests.clear()
        assert await world.round(lookups) == 2
        assert world.asked() == {hexed(person)}
    assert await world.round(lookups) == 0


async def test_the_cache_is_honoured_and_stale_rows_are_asked_again(world: World) -> None:
    account = await world.account("me@example.test")
    world.service.libravatar_images[hexed(BOB)] = GIF
    await world.correspondent(account, ANN)
    await world.correspondent(account, BOB, days_ago=0)  # the strongest (the most recent)
    lookups = world.lookups()
    assert await world.round(lookups) == 4
    assert len(world.service.requests) == 6

    assert await world.round(lookups) == 0  # hits and misses alike are cached
    assert len(world.service.requests) == 6

    await world.admin.execute("UPDATE public_profiles SET fetched_at = now() - interval '8 days' "
                              "WHERE address_hash = $1 AND source = 'libravatar'", bytes.fromhex(hexed(BOB)))
    assert await world.round(lookups) == 1
    assert [(r.service, hexed(BOB) in r.raw_path) for r in world.service.requests[6:]] == [("libravatar", True)]
    assert (await world.rows(account))[hexed(BOB), "libravatar"]["fetched_at"] > NOW

    # Not refreshed in twice the cache time (the person left the strongest, or a source was down): gone.
    await world.admin.execute("UPDATE public_profiles SET fetched_at = now() - interval '15 days' "
                              "WHERE address_hash = $1", bytes.fromhex(hexed(ANN)))
    world.service.requests.clear()
    await world.round(world.lookups(scan=1))  # Ann is no longer among the strongest considered
    assert {k[0] for k in await world.rows(account)} == {hexed(BOB)}


async def test_the_rate_limit_spaces_every_request(world: World) -> None:
    account = await world.account("me@example.test")
    for n in range(10):
        await world.correspondent(account, f"person{n}@example.org")
    lookups = world.lookups(world.service.config(public_lookups_per_minute=120))  # one each 0.5 s
    stopping = asyncio.Event()
    started = asyncio.get_running_loop().time()
    task = asyncio.create_task(lookups.run(stopping))
    await world.service.wait_for(4)
    stopping.set()
    await public.stop(task)
    arrivals = [r.at for r in world.service.requests]
    assert len(arrivals) >= 4 and asyncio.get_running_loop().time() - started >= 1.45
    assert all(b - a >= 0.45 for a, b in zip(arrivals, arrivals[1:])), arrivals


@pytest.mark.parametrize("service, fault, stored", [
    ("profile", "500", None), ("profile", "429", None), ("profile", "slow", None), ("profile", "huge", None),
    ("profile", "garbage", None), ("profile", "array", None), ("profile", "gzip", None),
    ("gravatar", "500", None), ("gravatar", "nonimage", (True, None)), ("gravatar", "huge", (True, None)),
    ("gravatar", "self-redirect", (True, "image/jpeg")),
    ("libravatar", "429", None), ("libravatar", "slow", None), ("libravatar", "nonimage", (False, None)),
    ("libravatar", "huge", (False, None)), ("libravatar", "self-redirect", (True, "image/png")),
])
async def test_failures_harm_nothing(world: World, caplog: pytest.LogCaptureFixture, service: str, fault: str,
                                     stored: tuple[bool, str | None] | None) -> None:
    """A failing source stores nothing and rests (the other goes on); an answer that is no photo
    we can show counts as no photo. No exception leaves the round."""
    source = "libravatar" if service == "libravatar" else "gravatar"
    other = "gravatar" if source == "libravatar" else "libravatar"
    s = world.service
    account = await world.account("me@example.test")
    await world.correspondent(account, ANN, received=9, sent=9)  # the strongest: asked first
    await world.correspondent(account, BOB, received=1, sent=0, days_ago=30)
    s.profiles[hexed(ANN)] = profile_json(hexed(ANN))
    s.gravatar_images[hexed(ANN)] = JPEG
    s.libravatar_images[hexed(ANN)] = PNG
    s.faults[service, hexed(ANN)] = fault
    lookups = world.lookups(timeout=0.5)

    await world.round(lookups)
    rows = await world.rows(account)
    if stored is None:
        assert (hexed(ANN), source) not in rows
        assert (hexed(BOB), source) not in rows  # the source rests: not asked again this round
        assert lookups._rests(source) and not lookups._rests(other)
        assert (hexed(ANN), other) in rows and (hexed(BOB), other) in rows  # the other went on
        if fault == "429":
            assert lookups.resting[source][1] == 120  # its Retry-After
        assert any(f"{source} is unavailable" in r.getMessage() for r in caplog.records)
    else:
        row = rows[hexed(ANN), source]
        assert (row["found"], row["photo_type"]) == stored
    assert not any(r.exc_info for r in caplog.records)

    if stored is None:  # the loop goes on: once the source is back, the lookup is made and stored
        del s.faults[service, hexed(ANN)]
        lookups.resting.clear()
        await world.round(lookups)
        assert (await world.rows(account))[hexed(ANN), source]["found"]


async def test_a_redirect_elsewhere_is_not_followed_and_counts_as_none(world: World) -> None:
    world.service.hand_on = True  # Libravatar hands an unknown hash on to Gravatar
    account = await world.account("me@example.test")
    await world.correspondent(account, CAROL)
    await world.round(world.lookups(world.service.config(gravatar=False)))
    assert [r.service for r in world.service.requests] == ["libravatar"]
    assert not (await world.rows(account))[hexed(CAROL), "libravatar"]["found"]


async def test_a_source_the_admin_switched_off_is_never_asked_and_its_rows_go(world: World) -> None:
    account = await world.account("me@example.test")
    await world.correspondent(account, ANN)
    world.service.profiles[hexed(ANN)] = profile_json(hexed(ANN))
    await world.round(world.lookups())
    assert {k[1] for k in await world.rows(account)} == {"gravatar", "libravatar"}

    world.service.requests.clear()
    await world.admin.execute("UPDATE public_profiles SET fetched_at = now() - interval '8 days'")
    await world.round(world.lookups(world.service.config(gravatar=False)))
    assert {r.service for r in world.service.requests} == {"libravatar"}
    assert {k[1] for k in await world.rows(account)} == {"libravatar"}

    world.service.requests.clear()
    await world.round(world.lookups(world.service.config(libravatar=False)))
    assert {r.service for r in world.service.requests} == {"profile", "gravatar"}
    assert {k[1] for k in await world.rows(account)} == {"gravatar"}
    assert public.start(world.service.config(gravatar=False, libravatar=False), world.harvest,
                        PgMetricsStore(world.harvest), asyncio.Event()) is None


async def test_a_change_bumps_the_owners_version_and_the_opt_out_deletes(world: World) -> None:
    account = await world.account("me@example.test")
    other = await world.account("you@example.test")
    for mailbox in (account, other):
        await world.correspondent(mailbox, ANN)
    owner = await world.admin.fetchval("SELECT user_id FROM mail_accounts WHERE id = $1", account)
    version = "SELECT coalesce((SELECT version FROM profile_versions WHERE user_id = $1), 0)"
    await world.round(world.lookups())
    bumped = await world.admin.fetchval(version, owner)
    assert bumped >= 1

    async with world.admin.acquire() as conn:  # as web does it
        await forget_public_profiles(conn, account)
    assert await world.admin.fetchval("SELECT public_profiles FROM mail_accounts WHERE id = $1", account) is False
    assert await world.rows(account) == {}
    assert len(await world.rows(other)) == 2  # another mailbox's opt-in is its own
    assert await world.admin.fetchval(version, owner) > bumped

    # A lookup in flight when the owner opted out stores nothing (the mailbox row is checked under lock).
    world.service.requests.clear()
    async with world.harvest.acquire() as conn:
        await public._store(conn, public.Work(account, bytes(32), "gravatar"), public.Answer(True))
    assert await world.rows(account) == {}


async def test_stopping_interrupts_a_request_in_flight(world: World) -> None:
    account = await world.account("me@example.test")
    await world.correspondent(account, ANN)
    world.service.faults["profile", hexed(ANN)] = "slow"
    stopping = asyncio.Event()
    task = public.start(world.service.config(), world.harvest, PgMetricsStore(world.harvest), stopping)
    assert task is not None
    await world.service.wait_for(1)
    stopping.set()
    started = asyncio.get_running_loop().time()
    await public.stop(task, grace=1.0)
    assert task.done() and asyncio.get_running_loop().time() - started < 1.5
    assert await world.rows(account) == {}


async def test_two_nodes_take_turns(world: World) -> None:
    """The advisory lock: while one harvest node looks up, another's round does nothing."""
    account = await world.account("me@example.test")
    await world.correspondent(account, ANN)
    async with world.harvest.acquire() as holder:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", public.LOCK_KEY)
        assert await world.round(world.lookups()) == 0
        await holder.execute("SELECT pg_advisory_unlock($1)", public.LOCK_KEY)
    assert world.service.requests == []
    assert await world.round(world.lookups()) == 2



async def test_harvest_runs_the_lookups_and_stops_cleanly(world: World, pg_db: str, tmp_path: Path) -> None:
    """The real harvest process: it looks up beside its Scheduler and exits 0 on SIGTERM."""
    account = await world.account("me@example.test")
    await world.correspondent(account, ANN)
    world.service.profiles[hexed(ANN)] = profile_json(hexed(ANN))
    config = to_dict(world.service.config())
    slice_ = {"config": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run"),
                         "database": {"dsn": pg_db}, "profiles": config, "harvest": {"tick_seconds": 3600}}}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "inboxlens.harvest", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/")
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    process.stdin.write(json.dumps(slice_).encode() + b"\n")
    await process.stdin.drain()
    lines: list[bytes] = []
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
        async with asyncio.timeout(30):  # until the round's log line: its rows are committed
            while not lines or b"public profiles:" not in lines[-1]:
                lines.append(await process.stderr.readline())
                assert lines[-1], b"".join(lines).decode()
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    log = (b"".join(lines) + await process.stderr.read()).decode()
    assert code == 0, log
    assert "public profiles: 1 found, 1 not found, 0 failed" in log
    assert (await world.rows(account))[hexed(ANN), "gravatar"]["found"]
    assert len(world.service.requests) == 3
    no_trace_of((ANN,), [log])
