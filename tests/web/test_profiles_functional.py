"""Contact profiles in Settings, on the card and the dashboard: a real web process, vault and PostgreSQL.

Address books are added, removed, synced and imported through the settings page's forms, as a
user would; what a CardDAV sync writes is written as harvest writes it (``rows.put_cards``
with the version bumped), since web never fetches an address book itself. Every password,
URL path and correspondent's address used here is looked for in the web's log.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from inboxlens.db.migrate import migrate
from inboxlens.errors import VaultError
from inboxlens.profiles import rows
from inboxlens.profiles.vcard import Link, Photo, Profile
from inboxlens.vault.client import VaultClient
from inboxlens.web import accounts, books
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import make_vault
from tests.support.webproc import make_web
from tests.web.conftest import (FRIEND, Stack, account_id, api, bearer, connect, csrf_of, new_token, page, providers,
                                seed_metrics)

ALICE = "alice@example.test"
BOB = "bob@example.test"
PASSWORD = "app-pw-" + secrets.token_hex(12)  # random per run: finding it anywhere is a leak
BOOK_PATH = "/dav/alice-" + secrets.token_hex(4) + "/contacts/"
PNG = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(48)
LIMIT = 3
LABEL = "Shelf " + secrets.token_hex(3)  # the CardDAV book's name: not a word any page has otherwise


@pytest.fixture
async def stack(tmp_path: Path, pg_db: str) -> AsyncIterator[Stack]:
    """conftest's stack, with a [profiles] section: 3 books a user, loopback allowed (as for a test Radicale)."""
    async for running in profiles_stack(tmp_path, pg_db, allow_private=True):
        yield running


@pytest.fixture
async def guarded_stack(tmp_path: Path, pg_db: str) -> AsyncIterator[Stack]:
    """The same with the default guard: private and loopback addresses refused."""
    async for running in profiles_stack(tmp_path, pg_db, allow_private=False):
        yield running


async def profiles_stack(tmp_path: Path, pg_db: str, *, allow_private: bool) -> AsyncIterator[Stack]:
    oauth = OAuthProvider(clients={"inboxlens-test": ["web-client-secret-7c1e"]})
    await oauth.start()
    await migrate(pg_db)
    vault = make_vault(tmp_path, providers=providers(oauth))
    await vault.start()
    web = make_web(tmp_path, vault.state_dir, vault.runtime_dir, pg_db, providers(oauth))
    web.slice["config"]["profiles"] = {"max_books_per_user": LIMIT, "allow_private_addresses": allow_private}
    await web.start()
    assert web.process is not None
    await vault.register(web.process.pid, "web")
    yield Stack(oauth, vault, web, pg_db)
    await web.stop()
    await vault.stop()
    await oauth.stop()


async def as_web(stack: Stack) -> VaultClient:
    """A vault client acting as web (the test process registered as a web PID)."""
    await stack.vault.register(os.getpid(), "web")
    return VaultClient(stack.vault.socket)


async def settings(browser: aiohttp.ClientSession) -> tuple[str, str]:
    text = await page(await browser.get("/settings"))
    return text, csrf_of(text)


async def add(browser: aiohttp.ClientSession, **fields: str) -> aiohttp.ClientResponse:
    _, csrf = await settings(browser)
    form = {"label": LABEL, "url": "https://dav.example.test" + BOOK_PATH, "username": "alice",
            "password": PASSWORD, **fields, "csrf_token": csrf}
    return await browser.post("/settings/books", data=form, allow_redirects=False)


async def upload(browser: aiohttp.ClientSession, data: bytes, label: str = "From my phone",
                 csrf: str | None = None) -> aiohttp.ClientResponse:
    if csrf is None:
        _, csrf = await settings(browser)
    form = aiohttp.FormData()
    form.add_field("csrf_token", csrf)
    form.add_field("label", label)
    form.add_field("file", data, filename="contacts.vcf", content_type="text/vcard")
    return await browser.post("/settings/books/import", data=form)


async def fetch(stack: Stack, query: str, *args: Any) -> list[asyncpg.Record]:
    db = await stack.db()
    try:
        return await db.fetch(query, *args)
    finally:
        await db.close()


def vcard(name: str, email: str, extra: str = "") -> str:
    return f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nEMAIL:{email}\r\n{extra}END:VCARD\r\n"


def clean_log(stack: Stack, *secrets_: str) -> None:
    log = stack.web.log()
    assert "Traceback" not in log
    for secret in (PASSWORD, BOOK_PATH, FRIEND, *secrets_):
        assert secret.lower() not in log.lower(), f"{secret!r} in the web log"


async def test_adding_a_book_seals_its_password_in_the_vault_and_nowhere_else(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        response = await add(browser)
        assert response.status == 303 and response.headers["Location"].startswith("/settings")
        text, _ = await settings(browser)
    [book] = await fetch(stack, "SELECT b.*, s.next_run_at <= now() AS due FROM address_books b "
                                "JOIN address_book_sync s ON s.book_id = b.id")
    assert (book["kind"], book["label"], book["username"], book["due"]) == ("carddav", LABEL, "alice", True)
    assert f'data-book="{book["id"]}"' in text and LABEL in text and "pending" in text
    assert PASSWORD not in text
    vault = await as_web(stack)
    try:
        assert await vault.token_state(f"book:{book['id']}") == "ok"  # stored, under the book's key
    finally:
        await vault.close()
    dump = await fetch(stack, "SELECT row_to_json(t)::text AS r FROM (SELECT * FROM address_books UNION ALL "
                              "SELECT * FROM address_books) t")
    assert all(PASSWORD not in r["r"] for r in dump)
    vault_files = b"".join(p.read_bytes() for p in Path(stack.vault.state_dir).rglob("*") if p.is_file())
    assert PASSWORD.encode() not in vault_files  # sealed, not plaintext, in the vault's store too
    clean_log(stack)


@pytest.mark.parametrize("fields, says", [
    ({"url": "http://dav.example.test/book/"}, "https://"),
    ({"url": "https://alice:pw@dav.example.test/book/"}, "own fields"),
    ({"url": "https://dav.example.test/" + "x" * 2100}, "2048"),
    ({"url": "ftp://dav.example.test/"}, "https://"),
    ({"label": ""}, "name"),
    ({"password": ""}, "app password"),
    ({"username": "a\nb"}, "user name"),
])
async def test_a_bad_book_is_refused_with_a_clear_message_and_nothing_added(stack: Stack, fields: dict[str, str],
                                                                            says: str):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        response = await add(browser, **fields)
        text = await page(response)
    assert response.status == 400 and says in text and "Nothing was added" in text
    assert await fetch(stack, "SELECT id FROM address_books") == []
    clean_log(stack)


async def test_a_server_whose_name_does_not_resolve_is_refused_at_add_time(guarded_stack: Stack):
    """The wiring, end to end (.invalid never resolves, RFC 6761); a name that resolves only to
    private addresses gets the same answer: see the next test, with a resolver that says so."""
    async with guarded_stack.browser() as browser:
        await connect(guarded_stack, browser, ALICE)
        response = await add(browser, url="https://dav.invalid/book/")
        text = await page(response)
        assert response.status == 400 and "cannot reach" in text and "Nothing was added" in text
        assert "/book/" not in text  # the origin only: a path may hold an address
        # Names the system resolver cannot even encode (an empty label, one over 63 characters).
        for odd in ("https://dav..example/book/", f"https://{'d' * 64}.example/book/"):
            response = await add(browser, url=odd)
            assert response.status == 400 and "cannot reach" in await page(response), odd
    assert await fetch(guarded_stack, "SELECT id FROM address_books") == []
    clean_log(guarded_stack)


async def test_a_user_at_the_limit_makes_the_server_resolve_nothing(guarded_stack: Stack):
    async with guarded_stack.browser() as browser:
        await connect(guarded_stack, browser, ALICE)
        conn = await asyncpg.connect(guarded_stack.dsn)
        try:
            await conn.execute("INSERT INTO address_books (user_id, kind, label) SELECT id, 'vcf', 'Imported ' || n "
                               "FROM users, generate_series(1, $1) n", LIMIT)
        finally:
            await conn.close()
        response = await add(browser, url="https://dav.invalid/book/")  # would be "cannot reach" if looked up
        text = await page(response)
    assert response.status == 400 and f"at most {LIMIT}" in text and "cannot reach" not in text


BOOK_URL = "https://dav.example.test/alice/book/"


def hang_lookups(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Semaphore]:
    """Every add-time lookup hangs until the event is set (then answers a public address), and
    REACH_SECONDS is 0.2: returns the event and a semaphore released once per lookup that ran."""
    release, entered = threading.Event(), threading.Semaphore(0)

    def hanging(host: str, port: int, family: int, kind: int) -> list[Any]:
        entered.release()
        assert release.wait(30), "never released"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(books, "_getaddrinfo", hanging)
    monkeypatch.setattr(books, "REACH_SECONDS", 0.2)
    return release, entered


async def lookups_finished() -> None:
    for _ in range(100):
        if books._Lookups.running == 0:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the lookups' threads did not give their places back")


async def test_lookups_at_add_time_are_bounded_and_one_that_hangs_holds_one_thread(monkeypatch: pytest.MonkeyPatch):
    """A hanging name holds one of LOOKUPS threads past REACH_SECONDS; past LOOKUPS the answer is
    Busy at once (nothing queues behind them), and once they return the next lookup runs."""
    release, entered = hang_lookups(monkeypatch)
    try:
        given_up = await asyncio.gather(*(books.reach_problem(BOOK_URL, False) for _ in range(books.LOOKUPS)))
        assert all(problem is not None and "cannot reach" in problem for problem in given_up)  # timed out
        assert books._Lookups.running == books.LOOKUPS  # ...and their threads still wait on the resolver
        with pytest.raises(books.Busy):
            await books.reach_problem(BOOK_URL, False)
    finally:
        release.set()
    for _ in range(books.LOOKUPS):
        assert entered.acquire(timeout=5)
    assert not entered.acquire(timeout=0.1), "the refused lookup ran after all"
    await lookups_finished()
    assert await books.reach_problem(BOOK_URL, False) is None  # the bound is free again; the answer is used


async def test_one_user_has_one_lookup_at_a_time_and_a_thread_that_cannot_start_frees_its_place(
        monkeypatch: pytest.MonkeyPatch):
    release, _ = hang_lookups(monkeypatch)
    try:
        assert await books.reach_problem(BOOK_URL, False, owner=7) is not None  # given up on; its thread still runs
        with pytest.raises(books.Busy, match="last server you named"):
            await books.reach_problem(BOOK_URL, False, owner=7)
        assert await books.reach_problem(BOOK_URL, False, owner=8) is not None  # another user is not held up
    finally:
        release.set()
    await lookups_finished()

    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        for _ in range(books.LOOKUPS + 1):
            with pytest.raises(books.Busy, match="cannot check"):
                await books.reach_problem(BOOK_URL, False, owner=7)
    assert books._Lookups.running == 0 and not books._Lookups.owners
    assert await books.reach_problem(BOOK_URL, False, owner=7) is None


class Resolver(AbstractResolver):
    """Answers every name with ``addresses`` (none: does not resolve), after ``delay`` seconds."""

    def __init__(self, *addresses: str, delay: float = 0.0) -> None:
        self.addresses, self.delay = addresses, delay

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        await asyncio.sleep(self.delay)
        if not self.addresses:
            raise OSError(-2, "Name or service not known")
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
                for a in self.addresses]

    async def close(self) -> None:
        pass


async def test_reach_problem_judges_what_the_name_resolves_to_now(monkeypatch: pytest.MonkeyPatch):
    url = "https://dav.example.test/alice/book/"
    assert await books.reach_problem(url, False, Resolver("93.184.215.14")) is None
    assert await books.reach_problem(url, False, Resolver("10.0.0.1", "93.184.215.14")) is None  # one usable
    refused = await books.reach_problem(url, False, Resolver("10.0.0.1", "169.254.169.254"))
    unresolved = await books.reach_problem(url, False, Resolver())
    assert refused == unresolved  # one message: no telling which internal names exist
    assert refused is not None and "https://dav.example.test:443" in refused and "/alice/" not in refused
    assert await books.reach_problem(url, True, Resolver()) is None  # allowed: harvest's guard decides
    assert await books.reach_problem("https://10.1.2.3/b/", False, Resolver("93.184.215.14")) is not None
    monkeypatch.setattr(books, "REACH_SECONDS", 0.05)
    assert await books.reach_problem(url, False, Resolver("93.184.215.14", delay=5)) is not None  # bounded


async def test_plain_http_to_this_machine_only_when_private_addresses_are_allowed():
    assert books.url_problem("http://127.0.0.1:5232/alice/book/", allow_private=True) is None
    assert books.url_problem("http://[::1]:5232/alice/book/", allow_private=True) is None
    assert books.url_problem("http://localhost:5232/b/", allow_private=True) is None
    assert "https://" in str(books.url_problem("http://127.0.0.1:5232/b/", allow_private=False))
    assert "https://" in str(books.url_problem("http://192.168.1.2/b/", allow_private=True))
    for private in ("https://10.0.0.1/b/", "https://169.254.169.254/b/", "https://[fd00::1]/b/",
                    "https://localhost/b/", "https://127.0.0.1/b/", "https://0.0.0.0/b/"):
        assert "private" in str(books.url_problem(private, allow_private=False)), private
        assert books.url_problem(private, allow_private=True) is None, private
    assert books.url_problem("https://dav.example.test/b/", allow_private=False) is None
    assert books.url_problem("https://dav.example.test:99999/b/", allow_private=False) is not None
    assert books.url_problem("https://dav.example.test/b/?x=1", allow_private=False) is not None


async def test_the_book_limit_counts_every_kind(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        assert (await add(browser, label="One")).status == 303
        assert (await upload(browser, vcard("Dana", FRIEND).encode())).status == 200
        assert (await add(browser, label="Three")).status == 303
        refused = await add(browser, label="Four")
        assert refused.status == 400 and f"at most {LIMIT}" in await page(refused)
        refused = await upload(browser, vcard("Dana", FRIEND).encode())
        assert refused.status == 400 and "Nothing was imported" in await page(refused)
    assert len(await fetch(stack, "SELECT id FROM address_books")) == LIMIT


async def test_with_the_vault_down_nothing_is_added_or_removed(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        assert (await add(browser)).status == 303
        [book] = await fetch(stack, "SELECT id FROM address_books")
        await stack.vault.stop()
        refused = await add(browser, label="Second")
        assert refused.status == 503 and "nothing was added" in await page(refused)
        _, csrf = await settings(browser)
        kept = await browser.post(f"/settings/books/{book['id']}/remove", data={"csrf_token": csrf})
        assert kept.status == 503 and "nothing was removed" in await page(kept)
    assert [r["id"] for r in await fetch(stack, "SELECT id FROM address_books")] == [book["id"]]
    clean_log(stack)


async def test_a_commit_that_fails_after_the_vault_stored_the_password_takes_it_back(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
    user = (await fetch(stack, "SELECT id FROM users"))[0]["id"]
    vault = await as_web(stack)
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=2)
    db = await stack.db()
    try:
        kept = await books.add_carddav(pool, vault, user, label="Kept", url="https://dav.example.test/b/",
                                       username="u", password=PASSWORD, limit=LIMIT)
        assert await vault.token_state(books.secret_id(kept)) == "ok"  # the check below can see a secret
        await db.execute("""
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'commit refused'; END $$;
            CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON address_book_sync DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION refuse();""")
        with pytest.raises(asyncpg.PostgresError):
            await books.add_carddav(pool, vault, user, label="Lost", url="https://dav.example.test/c/",
                                    username="u", password=PASSWORD, limit=LIMIT)
        lost = await db.fetchval("SELECT pg_sequence_last_value(pg_get_serial_sequence('address_books', 'id'))")
        assert lost == kept + 1
        assert await vault.token_state(books.secret_id(lost)) == "missing"  # set, then forgotten again
        assert [r["label"] for r in await db.fetch("SELECT label FROM address_books")] == ["Kept"]
        await db.execute("DROP TRIGGER refuse ON address_book_sync")
        await stack.vault.stop()
        with pytest.raises(VaultError):
            await books.add_carddav(pool, vault, user, label="No vault", url="https://dav.example.test/d/",
                                    username="u", password=PASSWORD, limit=LIMIT)
        assert [r["label"] for r in await db.fetch("SELECT label FROM address_books")] == ["Kept"]
    finally:
        await db.close()
        await pool.close()
        await vault.close()


async def sync_cards(stack: Stack, book: int, user: int, cards: dict[str, Profile]) -> None:
    """What harvest's sync writes: the cards and the version bump, in one transaction."""
    db = await stack.db()
    try:
        async with db.transaction():
            await rows.put_cards(db, book, user, cards)
            await rows.bump_version(db, user)
    finally:
        await db.close()


async def alice_with_book(stack: Stack, browser: aiohttp.ClientSession) -> tuple[int, int, int, str]:
    """Alice's account, user, CardDAV book and API token; her friend has a card with a photo in it."""
    await connect(stack, browser, ALICE)
    token = await new_token(browser)
    account = await account_id(stack, ALICE)
    await seed_metrics(stack, account, ALICE)
    assert (await add(browser)).status == 303
    [row] = await fetch(stack, "SELECT id, user_id FROM address_books")
    await sync_cards(stack, row["id"], row["user_id"], {"https://dav.example.test" + BOOK_PATH + "bob.vcf": Profile(
        (FRIEND,), name="Bob Friend", organization="Friends Inc", title="Pal", photo=Photo("image/png", PNG),
        links=(Link("url", "https://bob.example.test/", "home"),))})
    return account, row["user_id"], row["id"], token


class DiesAfterSet:
    """A vault client whose ``set`` stores, then "web dies": the add's own clean-up never runs."""

    def __init__(self, vault: VaultClient) -> None:
        self.vault = vault

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vault, name)

    async def set(self, *args: Any) -> Any:
        await self.vault.set(*args)
        raise SystemExit("web died")  # not an Exception: nothing in add_carddav may catch it


async def test_a_password_left_by_an_add_that_died_mid_way_is_forgotten_by_the_sweep(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
    user = (await fetch(stack, "SELECT id FROM users"))[0]["id"]
    vault = await as_web(stack)
    pool = await asyncpg.create_pool(stack.dsn, min_size=1, max_size=3)
    try:
        kept = await books.add_carddav(pool, vault, user, label="Kept", url="https://dav.example.test/b/",
                                       username="u", password=PASSWORD, limit=LIMIT)
        assert await pool.fetchval("SELECT count(*) FROM book_pending") == 0  # a finished add leaves no mark
        with pytest.raises(SystemExit):
            await books.add_carddav(pool, DiesAfterSet(vault), user, label="Lost",  # type: ignore[arg-type]
                                    url="https://dav.example.test/c/", username="u", password=PASSWORD, limit=LIMIT)
        lost = await pool.fetchval("SELECT book_id FROM book_pending")
        assert lost == kept + 1 and await vault.token_state(books.secret_id(lost)) == "ok"  # the orphan
        assert [r["label"] for r in await pool.fetch("SELECT label FROM address_books")] == ["Kept"]
        # A mark whose book did commit (its unmarking failed) is only unmarked: the password stays.
        await pool.execute("INSERT INTO book_pending (book_id) VALUES ($1)", kept)

        assert await accounts.forget_orphans(pool, vault, older=timedelta(0), kind=books.PENDING) == [lost]

        assert await vault.token_state(books.secret_id(lost)) == "missing"
        assert await vault.token_state(books.secret_id(kept)) == "ok"
        assert await vault.token_state(str(await account_id(stack, ALICE))) == "ok"  # another kind's entry: untouched
        assert await pool.fetchval("SELECT count(*) FROM book_pending") == 0
    finally:
        await pool.close()
        await vault.close()


async def test_the_running_web_sweeps_book_passwords_whose_add_never_committed(stack: Stack):
    """The wiring: web's chore (every 10 s, marks older than 30 s) forgets such a password."""
    vault = await as_web(stack)
    db = await stack.db()
    try:
        orphan = 1_000_000 + secrets.randbelow(1000)  # no book has this id
        key = await vault.public_key()
        await vault.set(books.secret_id(orphan), books.PROVIDER, key.seal(books.secret_id(orphan), books.PROVIDER,
                                                                          PASSWORD))
        await db.execute("INSERT INTO book_pending (book_id, created_at) VALUES ($1, now() - interval '1 minute')",
                         orphan)
        for _ in range(100):  # up to 20 s: two sweeps and then some
            if await vault.token_state(books.secret_id(orphan)) == "missing":
                break
            await asyncio.sleep(0.2)
        assert await vault.token_state(books.secret_id(orphan)) == "missing"
        assert await db.fetchval("SELECT count(*) FROM book_pending") == 0
        assert "forgot the password of address book" in stack.web.log()
        clean_log(stack)
    finally:
        await db.close()
        await vault.close()


async def test_the_card_and_the_dashboard_show_the_profile_with_its_sources(stack: Stack):
    async with stack.browser() as browser:
        account, user, book, token = await alice_with_book(stack, browser)
        async with aiohttp.ClientSession(stack.web.url) as client:
            response, body = await api(client, "GET", f"/accounts/{account}/correspondents/{FRIEND}", token)
        assert response.status == 200 and body["card"]["relationship"]["correspondent"] == FRIEND
        profile = body["profile"]
        source = {"kind": "carddav", "label": LABEL}
        assert profile["name"]["value"] == "Bob Friend" and profile["name"]["source"] == source
        assert profile["organization"]["value"] == "Friends Inc" and profile["title"]["value"] == "Pal"
        assert profile["links"] == [{"kind": "url", "value": "https://bob.example.test/", "label": "home",
                                     "source": source, "refreshed_at": profile["name"]["refreshed_at"]}]
        photo_url = profile["photo"]["url"]
        assert "bob" not in photo_url and "friend" not in photo_url
        # the dashboard's correspondent view, with the logged-in session
        view = await browser.get(f"/dashboard/{account}/correspondents/{FRIEND}")
        text = await page(view)
        assert view.status == 200 and 'data-field="name">Bob Friend' in text and f"from {LABEL}" in text
        assert f'src="{photo_url}"' in text and 'href="https://bob.example.test/"' in text
        dashboard = await page(await browser.get(f"/dashboard/{account}"))
        assert f'href="/dashboard/{account}/correspondents/{FRIEND}"' in dashboard
        # the photo, with the session (the dashboard's <img>) and with the token (the extension)
        seen = await browser.get(photo_url)
        assert seen.status == 200 and await seen.read() == PNG
        async with aiohttp.ClientSession(stack.web.url) as client:
            seen = await client.get(photo_url, headers=bearer(token))
            assert seen.status == 200 and await seen.read() == PNG
            assert seen.headers["Content-Type"] == "image/png"
            assert seen.headers["Cache-Control"].startswith("private")
            assert seen.headers["X-Content-Type-Options"] == "nosniff"
            nobody = await client.get(photo_url)
            assert nobody.status == 401
            forged = await client.get(photo_url[:-3] + "AAA", headers=bearer(token))
            assert forged.status == 404
    clean_log(stack, "Bob Friend")


async def test_a_sync_shows_at_the_next_read_and_a_removed_book_takes_its_profiles(stack: Stack):
    async with stack.browser() as browser:
        account, user, book, token = await alice_with_book(stack, browser)
        path = f"/accounts/{account}/correspondents/{FRIEND}"
        async with aiohttp.ClientSession(stack.web.url) as client:
            _, body = await api(client, "GET", path, token)
            assert body["profile"]["name"]["value"] == "Bob Friend"
            await sync_cards(stack, book, user, {"https://dav.example.test" + BOOK_PATH + "bob.vcf": Profile(
                (FRIEND,), name="Robert Friend")})
            _, body = await api(client, "GET", path, token)
            assert body["profile"]["name"]["value"] == "Robert Friend" and body["profile"]["photo"] is None
            _, csrf = await settings(browser)
            sync = await browser.post(f"/settings/books/{book}/sync", data={"csrf_token": csrf},
                                      allow_redirects=False)
            assert sync.status == 303
            removed = await browser.post(f"/settings/books/{book}/remove", data={"csrf_token": csrf},
                                         allow_redirects=False)
            assert removed.status == 303
            _, body = await api(client, "GET", path, token)
            assert body["profile"] is None
    assert await fetch(stack, "SELECT 1 FROM address_books UNION ALL SELECT 1 FROM profile_cards "
                              "UNION ALL SELECT 1 FROM profile_addresses UNION ALL SELECT 1 FROM address_book_sync") == []
    vault = await as_web(stack)
    try:
        assert await vault.token_state(f"book:{book}") == "missing"
    finally:
        await vault.close()
    clean_log(stack)


async def test_nobody_else_reaches_a_users_books_profiles_or_photos(stack: Stack):
    async with stack.browser() as browser:
        account, user, book, alice_token = await alice_with_book(stack, browser)
        async with aiohttp.ClientSession(stack.web.url) as client:
            _, body = await api(client, "GET", f"/accounts/{account}/correspondents/{FRIEND}", alice_token)
        photo_url = body["profile"]["photo"]["url"]
    async with stack.browser() as bob:
        await connect(stack, bob, BOB)
        bob_token = await new_token(bob)
        bob_account = await account_id(stack, BOB)
        await seed_metrics(stack, bob_account, BOB)  # bob writes to the same friend
        async with aiohttp.ClientSession(stack.web.url) as client:
            _, body = await api(client, "GET", f"/accounts/{bob_account}/correspondents/{FRIEND}", bob_token)
            assert body["profile"] is None  # alice's address book is hers
            assert (await client.get(photo_url, headers=bearer(bob_token))).status == 404
        _, csrf = await settings(bob)
        for action in ("remove", "sync"):
            response = await bob.post(f"/settings/books/{book}/{action}", data={"csrf_token": csrf})
            assert response.status == 404
        assert (await bob.post(f"/settings/public/{account}", data={"csrf_token": csrf, "public": "on"})).status == 404
        assert (await bob.get(f"/dashboard/{account}/correspondents/{FRIEND}")).status == 404
        assert LABEL not in (await settings(bob))[0]
    assert len(await fetch(stack, "SELECT 1 FROM address_books")) == 1
    assert (await fetch(stack, "SELECT public_profiles FROM mail_accounts WHERE id = $1", account))[0][0] is False


async def test_a_vcf_import_shows_what_it_kept_and_a_bad_file_writes_nothing(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        token = await new_token(browser)
        account = await account_id(stack, ALICE)
        await seed_metrics(stack, account, ALICE)
        good = (vcard("Bob From File", FRIEND.upper(), "ORG:File Org\r\nNOTE:not kept\r\n")
                + vcard("No address", "not-an-address") + vcard("Carol", "carol@corp.test")).encode()
        response = await upload(browser, good, label="Phone export")
        text = await page(response)
        assert response.status == 200 and 'data-imported="2"' in text and "Phone export" in text
        assert "Cards left out" in text
        async with aiohttp.ClientSession(stack.web.url) as client:
            _, body = await api(client, "GET", f"/accounts/{account}/correspondents/{FRIEND}", token)
        assert body["profile"]["name"] == {"value": "Bob From File", "source": {"kind": "vcf", "label": "Phone export"},
                                           "refreshed_at": body["profile"]["name"]["refreshed_at"]}
        assert (await fetch(stack, "SELECT count(*) FROM profile_cards"))[0][0] == 2
        before = await fetch(stack, "SELECT count(*) AS n FROM address_books")
        for data, status, says in [
                (b"not a vcard", 400, "cannot be imported"),
                (vcard("Only", "not-an-address").encode(), 400, "No card in this file"),
                (b"BEGIN:VCARD\r\n" + b"X" * (16 * 1024 * 1024), 413, "over 16 MiB")]:
            refused = await upload(browser, data)
            assert refused.status == status and says in await page(refused) and "nothing was imported" in \
                await page(refused)
        refused = await upload(browser, good, csrf="forged")
        assert refused.status == 403
        empty = await browser.post("/settings/books/import", data={"csrf_token": (await settings(browser))[1]})
        assert empty.status == 400
    assert await fetch(stack, "SELECT count(*) AS n FROM address_books") == before
    clean_log(stack, "Bob From File", "carol@corp.test")


async def test_public_profiles_are_off_by_default_and_off_deletes_them(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        token = await new_token(browser)
        account = await account_id(stack, ALICE)
        await seed_metrics(stack, account, ALICE)
        text, csrf = await settings(browser)
        assert "SHA-256" in text and f'data-public="{account}"' in text and "Turn on" in text
        on = await browser.post(f"/settings/public/{account}", data={"csrf_token": csrf, "public": "on"},
                                allow_redirects=False)
        assert on.status == 303
        db = await stack.db()
        try:
            assert await db.fetchval("SELECT public_profiles FROM mail_accounts WHERE id = $1", account) is True
            from inboxlens.profiles.public import address_hash
            await db.execute("INSERT INTO public_profiles (account_id, address_hash, source, found, fields, photo, "
                             "photo_type) VALUES ($1, $2, 'gravatar', true, '{\"name\": \"Bob G\"}', $3, 'image/png')",
                             account, address_hash(FRIEND), PNG)  # as harvest stores a lookup
        finally:
            await db.close()
        async with aiohttp.ClientSession(stack.web.url) as client:
            _, body = await api(client, "GET", f"/accounts/{account}/correspondents/{FRIEND}", token)
            assert body["profile"]["name"]["source"] == {"kind": "gravatar", "label": "Gravatar"}
            photo_url = body["profile"]["photo"]["url"]
            assert (await client.get(photo_url, headers=bearer(token))).status == 200
            off = await browser.post(f"/settings/public/{account}", data={"csrf_token": csrf, "public": "off"},
                                     allow_redirects=False)
            assert off.status == 303
            _, body = await api(client, "GET", f"/accounts/{account}/correspondents/{FRIEND}", token)
            assert body["profile"] is None
            assert (await client.get(photo_url, headers=bearer(token))).status == 404
    assert await fetch(stack, "SELECT 1 FROM public_profiles") == []


async def test_disconnect_deletes_the_profiles_the_mailbox_brought(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, ALICE)
        account = await account_id(stack, ALICE)
        user = (await fetch(stack, "SELECT user_id FROM mail_accounts WHERE id = $1", account))[0][0]
        assert (await upload(browser, vcard("Kept", "kept@example.test").encode())).status == 200
        db = await stack.db()
        try:
            from inboxlens.profiles.public import address_hash
            google = await db.fetchval("INSERT INTO address_books (user_id, kind, label, url, account_id) VALUES "
                                       "($1, 'google', 'Google', 'https://www.googleapis.com/carddav/v1/x/', $2) "
                                       "RETURNING id", user, account)
            await db.execute("INSERT INTO address_book_sync (book_id) VALUES ($1)", google)
            await rows.put_cards(db, google, user, {"g1": Profile((FRIEND,), name="From Google")})
            await db.execute("UPDATE mail_accounts SET public_profiles = true WHERE id = $1", account)
            await db.execute("INSERT INTO public_profiles (account_id, address_hash, source, found) VALUES "
                             "($1, $2, 'gravatar', false)", account, address_hash(FRIEND))
            version = await db.fetchval("SELECT version FROM profile_versions WHERE user_id = $1", user)
        finally:
            await db.close()
        _, csrf = await settings(browser)
        confirm = await page(await browser.get(f"/accounts/{account}/disconnect"))
        assert "contact profiles this mailbox brought" in confirm
        done = await browser.post(f"/accounts/{account}/disconnect", data={"csrf_token": csrf})
        text = await page(done)
        assert done.status == 200 and "1 address book(s) and 1 public profile(s)" in text
    assert [r["kind"] for r in await fetch(stack, "SELECT kind FROM address_books")] == ["vcf"]
    assert await fetch(stack, "SELECT 1 FROM public_profiles") == []
    assert [r["href"] for r in await fetch(stack, "SELECT href FROM profile_cards")] == ["vcf:1"]
    assert (await fetch(stack, "SELECT version FROM profile_versions WHERE user_id = $1", user))[0][0] > version
