"""Google contacts end to end: connect with "also use my contacts" (the contacts scope added to the
same grant, at the local OAuth provider), the address book web adds at the callback, and harvest's
sync with a Bearer access token from the vault, against a Bearer-checking proxy before Radicale."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from inboxlens.config.schema import ProfilesConfig
from inboxlens.db.migrate import migrate
from inboxlens.vault.client import VaultClient
from tests.profiles.books import Books, harvest_pool
from tests.profiles.test_carddav_functional import ANN, LATIN_1
from tests.support.carddav_bearer import BearerCardDav
from tests.support.oauth_provider import OAuthProvider
from tests.support.radicale import Radicale
from tests.support.vaultproc import VaultProcess, make_vault
from tests.support.webproc import WebProcess, make_web

CLIENT_ID, CLIENT_SECRET = "inboxlens-test", "google-client-secret-5d2b"
SCOPE = ProfilesConfig().google_contacts_scope
_mailboxes = iter(range(1_000_000))


@dataclass
class Google:
    oauth: OAuthProvider
    vault: VaultProcess
    web: WebProcess
    proxy: BearerCardDav
    books: Books
    address: str

    async def connect(self, query: str) -> str:
        self.oauth.login = self.address
        async with aiohttp.ClientSession(self.web.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(f"/connect/google?tz=UTC{query}") as answer:
                assert answer.status == 200, await answer.text()
                return await answer.text()

    async def book(self) -> asyncpg.Record | None:
        return await self.books.db.fetchrow(
            "SELECT b.*, a.address FROM address_books b JOIN mail_accounts a ON a.id = b.account_id "
            "WHERE a.address = $1", self.address)


def google_provider(oauth: OAuthProvider) -> dict[str, Any]:
    """The built-in "google" provider, pointed at the local OAuth provider (its scopes and offline
    parameters as for Google: access_type=offline, prompt=consent)."""
    return {"authorization_url": oauth.authorize_url, "token_url": oauth.token_url,
            "userinfo_url": oauth.userinfo_url, "revocation_url": oauth.revoke_url, "issuer": oauth.issuer,
            "client_id": CLIENT_ID, "client_secrets": [CLIENT_SECRET]}


@pytest.fixture
async def google(tmp_path: Path, pg_db: str, radicale: Radicale) -> AsyncIterator[Google]:
    address = f"me{next(_mailboxes)}-{os.getpid()}@gmail.test"
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await oauth.start()
    await migrate(pg_db)
    book_url = radicale.mkbook("alice", f"google-{next(_mailboxes)}")
    assert radicale.put(book_url, "ann.vcf", ANN) == 201
    assert radicale.put(book_url, "zoe.vcf", LATIN_1.encode("latin-1"), charset="iso-8859-1") == 201
    proxy = await BearerCardDav(oauth.introspect_url, SCOPE, radicale, "alice", book_url, address).start()
    providers = {"google": google_provider(oauth)}
    vault = make_vault(tmp_path, providers=providers)
    await vault.start()
    web = make_web(tmp_path, vault.state_dir, vault.runtime_dir, pg_db, providers)
    web.slice["config"]["profiles"] = {"google_carddav_url": proxy.url_template}
    await web.start()
    assert web.process is not None
    await vault.register(web.process.pid, "web")
    await vault.register(os.getpid(), "harvest")
    db = await asyncpg.create_pool(pg_db, min_size=1, max_size=3)
    harvest = await harvest_pool(pg_db)
    client = VaultClient(vault.socket)
    yield Google(oauth, vault, web, proxy, Books(db, harvest, vault, client), address)
    await client.close()
    await harvest.close()
    await db.close()
    await web.stop()
    await vault.stop()
    await proxy.stop()
    await oauth.stop()


async def test_connect_with_contacts_adds_googles_book_and_harvest_syncs_it_with_a_bearer(google, caplog):
    caplog.set_level(logging.DEBUG)
    page = await google.connect("&contacts=1")
    assert "also use my contacts" in page  # the dashboard offers it
    book = await google.book()
    assert book is not None and (book["kind"], book["label"], book["username"]) == ("google", "Google contacts", None)
    assert book["url"] == google.proxy.url_template.replace("{address}", google.address)
    google.books.user_id = book["user_id"]
    assert await google.books.syncer().once() == 1
    state = await google.books.state(book["id"])
    assert (state["last_error"], state["cards"]) == (None, 2)
    assert await google.books.addresses(book["id"]) == {"ann@example.org", "ann.lee@work.example",
                                                          "zoe@example.org"}
    assert google.proxy.refused == 0 and google.proxy.requests >= 2
    assert google.oauth.refresh_grants == 1  # the vault refreshed the mailbox's one grant
    await google.connect("&contacts=1")  # reconnecting adds no second book
    assert await google.books.db.fetchval("SELECT count(*) FROM address_books WHERE account_id = $1",
                                          book["account_id"]) == 1
    logged = caplog.text + google.web.log() + google.vault.log()
    assert google.address not in caplog.text and "/principals/" not in logged


async def test_connect_without_contacts_asks_no_more_and_adds_no_book(google):
    await google.connect("")
    assert await google.book() is None
    assert await google.books.db.fetchval("SELECT count(*) FROM mail_accounts WHERE address = $1",
                                          google.address) == 1


async def test_a_grant_without_the_contacts_scope_is_refused_by_the_server(google):
    """A Google book on a mailbox whose grant lacks the scope: the server refuses the token (even
    after the vault refreshes it), and the owner reads why."""
    await google.connect("")
    account, user = await google.books.db.fetchrow("SELECT id, user_id FROM mail_accounts WHERE address = $1",
                                                   google.address)
    book = await google.books.db.fetchval(
        "INSERT INTO address_books (user_id, kind, label, url, account_id) VALUES ($1, 'google', 'G', $2, $3) "
        "RETURNING id", user, google.proxy.url_template.replace("{address}", google.address), account)
    await google.books.db.execute("INSERT INTO address_book_sync (book_id) VALUES ($1)", book)
    await google.books.syncer().once()
    state = await google.books.state(book)
    assert "refused" in state["last_error"] and state["failures"] == 1 and state["cards"] == 0
    assert google.proxy.refused == 2  # the first token, then the one the vault refreshed
