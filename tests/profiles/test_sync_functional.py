"""Harvest's address-book syncs end to end: a real Radicale, a real PostgreSQL (as harvest's role),
a real vault holding the app password; leases, on-demand runs, failures that lose nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web

from inboxlens.db.migrate import migrate
from inboxlens.profiles import sync as books_sync
from inboxlens.service_errors import LeaseLost
from inboxlens.vault.client import VaultClient
from tests.profiles.books import Books, harvest_pool
from tests.profiles.conftest import PASSWORD
from tests.profiles.test_carddav_functional import ANN, BIG, JPEG, LATIN_1, NO_ADDRESS, card
from tests.support.pg_tcp import free_port
from tests.support.radicale import Radicale
from tests.support.vaultproc import make_vault

PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)
ADDRESSES = ("ann@example.org", "ann.lee@work.example", "zoe@example.org", "big@example.org", "url@example.org",
             "gone@example.org")
_names = iter(range(1_000_000))
REPO = str(Path(__file__).resolve().parents[2])


@pytest.fixture
async def photos() -> AsyncIterator[str]:
    """A photo host on loopback: /u.png answers a PNG, anything else 404."""
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/u.png":
            return web.Response(body=PNG, content_type="image/png")
        return web.Response(status=404)
    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def books(tmp_path: Path, pg_db: str, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Books]:
    caplog.set_level(logging.DEBUG)
    await migrate(pg_db)
    vault = make_vault(tmp_path)
    await vault.start()
    db = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    harvest = await harvest_pool(pg_db)
    client = VaultClient(vault.socket)
    user = int(await db.fetchval("INSERT INTO users (email) VALUES ('owner@example.test') RETURNING id"))
    yield Books(db, harvest, vault, client, user)
    await client.close()
    await harvest.close()
    await db.close()
    assert await vault.stop() == 0
    assert PASSWORD not in vault.log()


def seed(radicale: Radicale, photos: str) -> str:
    url = radicale.mkbook("alice", f"synced-{next(_names)}")
    by_url = card("url", "FN:Photo Link", "EMAIL:url@example.org", f"PHOTO;VALUE=uri:{photos}/u.png")
    broken_photo = card("gone", "FN:Gone Photo", "EMAIL:gone@example.org", f"PHOTO;VALUE=uri:{photos}/no.png")
    for name, vcard in (("ann.vcf", ANN), ("big.vcf", BIG), ("url.vcf", by_url), ("gone.vcf", broken_photo),
                        ("none.vcf", NO_ADDRESS)):
        assert radicale.put(url, name, vcard) == 201
    assert radicale.put(url, "zoe.vcf", LATIN_1.encode("latin-1"), charset="iso-8859-1") == 201
    return url


def assert_nothing_leaked(caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (PASSWORD, base64.b64encode(f"alice:{PASSWORD}".encode()).decode(), *ADDRESSES, "/alice/"):
        assert secret not in logged
        assert all(secret not in (text or "") for text in texts)


async def test_a_full_sync_writes_the_cards_their_addresses_and_photos(books, radicale, photos, caplog):
    book = await books.add(seed(radicale, photos), "alice", PASSWORD)
    assert await books.syncer().once() == 1
    cards = await books.cards(book)
    assert set(cards) == {"ann.vcf", "big.vcf", "url.vcf", "gone.vcf", "zoe.vcf"}  # none.vcf has no address
    assert (bytes(cards["ann.vcf"]["photo"]), cards["ann.vcf"]["photo_type"]) == (JPEG, "image/jpeg")
    assert (bytes(cards["url.vcf"]["photo"]), cards["url.vcf"]["photo_type"]) == (PNG, "image/png")  # by URL
    assert cards["gone.vcf"]["photo"] is None and cards["big.vcf"]["photo"] is None  # kept, without a photo
    assert await books.addresses(book) == set(ADDRESSES)
    state = await books.state(book)
    assert (state["cards"], state["failures"], state["last_error"], state["lease_owner"]) == (5, 0, None, None)
    assert state["sync_token"] and state["last_sync_at"] is not None
    assert timedelta(minutes=59) < state["due_in"] <= timedelta(hours=1)
    assert await books.version() == 1
    assert await books.syncer().once() == 0  # not due again for an hour
    assert_nothing_leaked(caplog)


async def test_an_edit_and_a_delete_arrive_by_an_incremental_sync(books, radicale, photos):
    url = seed(radicale, photos)
    book = await books.add(url, "alice", PASSWORD)
    syncer = books.syncer()
    await syncer.once()
    assert radicale.put(url, "ann.vcf", ANN.replace(b"TITLE:Chemist", b"TITLE:Lab head")) == 204
    assert radicale.delete(url, "zoe.vcf") == 200
    await books.due_now(book)  # "Sync now"
    assert await syncer.once() == 1
    cards = await books.cards(book)
    assert cards["ann.vcf"]["fields"].count("Lab head") == 1 and "zoe.vcf" not in cards
    assert "zoe@example.org" not in await books.addresses(book)
    assert (await books.state(book))["cards"] == 4 and await books.version() == 2
    await books.due_now(book)
    await syncer.once()  # nothing changed: the version stays
    assert await books.version() == 2


async def test_a_wrong_password_is_a_clear_error_and_keeps_the_cards(books, radicale, photos, caplog):
    book = await books.add(seed(radicale, photos), "alice", PASSWORD)
    await books.syncer().once()
    await books.store_password(book, PASSWORD + "-wrong")
    await books.due_now(book)
    await books.syncer().once()
    state = await books.state(book)
    assert "refused the user name or app password" in state["last_error"]
    assert state["failures"] == 1 and state["cards"] == 5 and len(await books.cards(book)) == 5
    assert timedelta(minutes=4) < state["due_in"] <= timedelta(minutes=5)  # backs off
    assert await books.version() == 1
    await books.store_password(book, PASSWORD)  # the user enters it again: all is well at the next run
    await books.due_now(book)
    await books.syncer().once()
    state = await books.state(book)
    assert (state["last_error"], state["failures"]) == (None, 0)
    assert_nothing_leaked(caplog, state["last_error"])


async def test_an_unreachable_server_is_a_clear_error_and_loses_nothing(books, radicale, photos, caplog):
    url = seed(radicale, photos)
    book = await books.add(url, "alice", PASSWORD)
    await books.syncer().once()
    port = free_port()
    await books.db.execute("UPDATE address_books SET url = $2 WHERE id = $1", book,
                           f"http://127.0.0.1:{port}/alice/contacts/")
    await books.due_now(book)
    await books.syncer().once()
    await books.due_now(book)
    await books.syncer().once()
    state = await books.state(book)
    assert state["last_error"] == f"cannot connect to http://127.0.0.1:{port}"
    assert state["failures"] == 2 and timedelta(minutes=9) < state["due_in"] <= timedelta(minutes=10)
    assert len(await books.cards(book)) == 5 and await books.addresses(book) == set(ADDRESSES)
    assert_nothing_leaked(caplog)


async def test_loopback_is_refused_without_the_admins_switch(books, radicale, photos):
    book = await books.add(seed(radicale, photos), "alice", PASSWORD)
    await books.syncer(allow_private_addresses=False).once()
    state = await books.state(book)
    assert state["last_error"] == f"cannot connect to http://127.0.0.1:{radicale.port}"
    assert await books.cards(book) == {}


async def test_a_missing_password_says_what_to_do(books, radicale, photos):
    book = await books.add(seed(radicale, photos), "alice", PASSWORD)
    await books.as_web()
    await books.client.forget(f"book:{book}", revoke=False)
    await books.as_harvest()
    await books.syncer().once()
    assert "app password is missing" in (await books.state(book))["last_error"]


async def test_two_syncers_never_sync_one_book_at_once(books, radicale, photos):
    book = await books.add(seed(radicale, photos), "alice", PASSWORD)
    first, second = books.syncer("node-a:1"), books.syncer("node-b:2")
    ran = await asyncio.gather(first.once(), second.once(), first.once(), second.once())
    assert sum(ran) == 1 and await books.version() == 1
    # A lease that ran out (its holder hung) is taken by another syncer; the first one's late
    # result is then refused whole.
    await books.due_now(book)
    [stale] = await books_sync.claim_due(books.harvest, "node-a:1", timedelta(minutes=30), 5)
    assert await books_sync.claim_due(books.harvest, "node-b:2", timedelta(minutes=30), 5) == []
    await books.db.execute("UPDATE address_book_sync SET lease_expires_at = now() - interval '1 s' "
                           "WHERE book_id = $1", book)
    assert await second.once() == 1
    result, changed = await first._fetch(stale)
    with pytest.raises(LeaseLost):
        await books_sync.apply(books.harvest, stale, "node-a:1", result, changed, timedelta(hours=1))
    assert await books.version() == 1 and (await books.state(book))["lease_owner"] is None


async def test_the_loop_takes_a_sync_now_within_a_tick_and_stops_cleanly(books, radicale, photos):
    book = await books.add(seed(radicale, photos), "alice", PASSWORD)
    await books.db.execute("UPDATE address_book_sync SET next_run_at = now() + interval '1 day' WHERE book_id = $1",
                           book)
    stopping = asyncio.Event()
    loop = asyncio.create_task(books.syncer().run(stopping, tick=0.05, drain=5))
    await books.due_now(book)
    async with asyncio.timeout(10):
        while (await books.state(book))["last_sync_at"] is None:
            await asyncio.sleep(0.02)  # polling the database: the loop has no event to wait on here
    stopping.set()
    assert await loop is True
    assert (await books.state(book))["cards"] == 5


async def test_an_interrupted_sync_gives_its_lease_back(books, radicale, photos):
    book = await books.add(seed(radicale, photos), "alice", PASSWORD)
    silent = await asyncio.start_server(lambda r, w: r.read(), "127.0.0.1", 0)  # accepts, never answers
    port = silent.sockets[0].getsockname()[1]
    await books.db.execute("UPDATE address_books SET url = $2 WHERE id = $1", book, f"http://127.0.0.1:{port}/a/")
    syncer = books.syncer()
    async with silent:
        assert await syncer.round() == 1
        assert await syncer.drain(0.2) is False  # interrupted
    state = await books.state(book)
    assert state["lease_owner"] is None and state["failures"] == 0 and state["due_in"] <= timedelta(0)


async def test_the_harvest_process_syncs_books_and_drains_on_sigterm(books, radicale, photos, pg_db, tmp_path):
    """The real child: harvest started with its slice, syncing a book beside its Scheduler;
    SIGTERM stops both, exit 0. Its log names the book by id and counts, nothing more."""
    book = await books.add(seed(radicale, photos), "alice", PASSWORD)
    await books.db.execute("UPDATE address_book_sync SET next_run_at = now() + interval '1 day' WHERE book_id = $1",
                           book)
    log_path = tmp_path / "harvest.log"
    config = {"state_dir": str(books.vault.state_dir), "runtime_dir": str(books.vault.runtime_dir),
              "log_level": "DEBUG", "database": {"dsn": pg_db}, "harvest": {"tick_seconds": 0.1},
              "profiles": {"allow_private_addresses": True}, "supervisor": {"stop_timeout_seconds": 15}}
    with open(log_path, "wb") as log:
        harvest = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "inboxlens.harvest", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=log, cwd="/", env={"PATH": os.environ["PATH"], "PYTHONPATH": REPO})
    assert harvest.stdin is not None and harvest.stdout is not None
    harvest.stdin.write(json.dumps({"config": config}).encode() + b"\n")
    await harvest.stdin.drain()
    assert await asyncio.wait_for(harvest.stdout.readline(), 30) == b"ready\n", log_path.read_text()
    await books.vault.register(harvest.pid, "harvest")  # before the book is due: its first ask is permitted
    await books.due_now(book)
    async with asyncio.timeout(20):
        while (await books.state(book))["last_sync_at"] is None:
            await asyncio.sleep(0.05)  # another process's work: nothing to wait on but the row
    harvest.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(harvest.wait(), 20) == 0
    state = await books.state(book)
    assert (state["cards"], state["last_error"], state["lease_owner"]) == (5, None, None)
    logged = log_path.read_text()
    assert f"address book {book}: 5 changed, 1 deleted, 1 skipped, 5 cards" in logged and "stopped" in logged
    for secret in (PASSWORD, *ADDRESSES, "/alice/", "u.png"):
        assert secret not in logged
