"""The card's profile block and its photos, read as web's own database role (profiles/read.py).

Cards are written the way a sync or an import writes them (``rows.put_cards``), public
profiles the way harvest stores them; the reader runs as a role granted exactly what
``db.roles`` gives web, so a query that needs more than that fails here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from inboxlens.db import roles
from inboxlens.db.migrate import migrate
from inboxlens.profiles import read, rows
from inboxlens.profiles.public import address_hash as harvests_hash
from inboxlens.profiles.read import PhotoIds, ProfileCache, address_hash, photo, profile_block
from inboxlens.profiles.vcard import Link, Photo, Profile

PERSON = "Dana.Doe@Example.test".lower()
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
GIF = b"GIF89a" + b"\x01" * 32
KEY = b"k" * 32


@dataclass
class World:
    admin: asyncpg.Pool
    web: asyncpg.Pool
    ids: PhotoIds

    async def user(self, email: str) -> tuple[int, int]:
        """A user with one mailbox: (user id, account id)."""
        user = await self.admin.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", email)
        account = await self.admin.fetchval(
            "INSERT INTO mail_accounts (user_id, address, provider) VALUES ($1, $2, 'test') RETURNING id", user, email)
        return int(user), int(account)

    async def book(self, user: int, label: str, cards: dict[str, Profile], kind: str = "vcf") -> int:
        async with self.admin.acquire() as conn, conn.transaction():
            book = await conn.fetchval(
                "INSERT INTO address_books (user_id, kind, label, url, username) VALUES ($1, $2, $3, $4, $5) "
                "RETURNING id", user, kind, label, None if kind == "vcf" else "https://dav.example.test/b/",
                None if kind == "vcf" else "u")
            await rows.put_cards(conn, book, user, cards)
            await rows.bump_version(conn, user)
        return int(book)

    async def public(self, account: int, source: str, fields: dict[str, object], image: bytes | None = None) -> None:
        await self.admin.execute(
            "INSERT INTO public_profiles (account_id, address_hash, source, found, fields, photo, photo_type) "
            "VALUES ($1, $2, $3, true, $4::jsonb, $5, $6)", account, harvests_hash(PERSON), source,
            json.dumps(fields), image, "image/gif" if image else None)

    async def state(self, account: int) -> asyncpg.Record:
        found = await self.web.fetchrow(read.STAMP, account)
        assert found is not None
        return found


@pytest.fixture
async def world(pg_db: str) -> AsyncIterator[World]:
    await migrate(pg_db)
    role = f"web_{secrets.token_hex(4)}"
    admin = await asyncpg.create_pool(pg_db, min_size=1, max_size=4)
    await admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
    for statement in roles.grant_statements("web", role):
        await admin.execute(statement)

    async def as_web(connection: asyncpg.Connection) -> None:
        await connection.execute(f'SET ROLE "{role}"')

    web = await asyncpg.create_pool(pg_db, min_size=1, max_size=4, setup=as_web)
    try:
        yield World(admin, web, PhotoIds(KEY))
    finally:
        await web.close()
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()


def test_web_hashes_an_address_as_harvest_does():
    for address in ("a@b.test", " Mixed.Case@Example.TEST ", "ünï@x.test"):
        assert address_hash(address) == harvests_hash(address)


async def block(world: World, user: int, account: int, *, public: bool = False) -> dict[str, object] | None:
    return await profile_block(world.web, world.ids, user_id=user, account_id=account, address=PERSON, version=1,
                               public=public)


async def test_books_merge_by_book_then_href_each_field_with_its_source(world: World):
    user, account = await world.user("alice@example.test")
    first = await world.book(user, "Work", {
        "b.vcf": Profile((PERSON,), name="Dana from b", links=(Link("url", "https://dana.example.test/"),)),
        "a.vcf": Profile((PERSON,), name="Dana from a")})
    second = await world.book(user, "Home", {"x.vcf": Profile(
        (PERSON, "other@example.test"), name="Dana at home", organization="Doe & Co", title="Boss",
        photo=Photo("image/png", PNG), links=(Link("url", "https://dana.example.test/"), Link("social", "@dana",
                                                                                              "twitter")))})
    assert first < second
    found = await block(world, user, account)
    assert found is not None
    assert found["name"] == {"value": "Dana from a", "source": {"kind": "vcf", "label": "Work"},
                             "refreshed_at": found["name"]["refreshed_at"]}  # type: ignore[index]
    assert found["organization"]["value"] == "Doe & Co" and found["organization"]["source"]["label"] == "Home"  # type: ignore[index]
    assert found["title"]["source"] == {"kind": "vcf", "label": "Home"}  # type: ignore[index]
    assert [(link["value"], link["source"]["label"]) for link in found["links"]] == [  # type: ignore[attr-defined]
        ("https://dana.example.test/", "Work"), ("@dana", "Home")]
    url = found["photo"]["url"]  # type: ignore[index]
    assert url.startswith("/api/v1/photos/") and "dana" not in url.lower() and "example" not in url.lower()
    assert await photo(world.web, world.ids, user, url.rsplit("/", 1)[1]) == (PNG, "image/png")
    datetime.fromisoformat(found["name"]["refreshed_at"].replace("Z", "+00:00"))  # type: ignore[index]


async def test_nobody_else_sees_a_users_profiles_or_photos(world: World):
    alice, alice_account = await world.user("alice@example.test")
    bob, bob_account = await world.user("bob@example.test")
    await world.book(alice, "Alice's", {"1": Profile((PERSON,), name="Dana", photo=Photo("image/png", PNG))})
    found = await block(world, alice, alice_account)
    assert found is not None and await block(world, bob, bob_account) is None
    opaque = found["photo"]["url"].rsplit("/", 1)[1]  # type: ignore[index]
    assert await photo(world.web, world.ids, bob, opaque) is None  # the id is alice's: 404 for anyone else
    assert await photo(world.web, PhotoIds(b"o" * 32), alice, opaque) is None  # another key made nothing
    forged = opaque[:-2] + ("AA" if opaque[-2:] != "AA" else "BB")
    assert await photo(world.web, world.ids, alice, forged) is None
    assert await photo(world.web, world.ids, alice, "not an id") is None
    # An id sealed for bob naming alice's book (as if bob could make one) still finds nothing.
    book = await world.admin.fetchval("SELECT id FROM address_books WHERE user_id = $1", alice)
    assert await photo(world.web, world.ids, bob, world.ids.make("b", bob, book, PERSON, 1)) is None


async def test_public_profiles_come_after_the_books_and_only_when_opted_in(world: World):
    user, account = await world.user("alice@example.test")
    await world.book(user, "Work", {"1": Profile((PERSON,), name="Dana (book)")})
    await world.public(account, "gravatar", {"name": "Dana G", "organization": "Gravatar Org", "links": [
        {"kind": "url", "value": "https://gravatar.example.test/dana", "label": "Gravatar"}]})
    await world.public(account, "libravatar", {"name": "never shown: Libravatar gives a photo only"}, GIF)
    assert (await block(world, user, account))["organization"] is None  # type: ignore[index]
    found = await block(world, user, account, public=True)
    assert found is not None
    assert found["name"]["value"] == "Dana (book)"  # type: ignore[index]
    assert found["organization"] == {"value": "Gravatar Org", "source": {"kind": "gravatar", "label": "Gravatar"},
                                     "refreshed_at": found["organization"]["refreshed_at"]}  # type: ignore[index]
    assert found["photo"]["source"] == {"kind": "libravatar", "label": "Libravatar"}  # type: ignore[index]
    assert found["links"][0]["source"]["kind"] == "gravatar"  # type: ignore[index]
    opaque = found["photo"]["url"].rsplit("/", 1)[1]  # type: ignore[index]
    await world.admin.execute("UPDATE mail_accounts SET public_profiles = true WHERE id = $1", account)
    assert await photo(world.web, world.ids, user, opaque) == (GIF, "image/gif")
    await world.admin.execute("UPDATE mail_accounts SET public_profiles = false WHERE id = $1", account)
    assert await photo(world.web, world.ids, user, opaque) is None  # opted out: not served, even if a row is left
    only_libravatar = await profile_block(world.web, world.ids, user_id=user, account_id=account, address=PERSON,
                                          version=1, public=True, sources=("libravatar",))
    assert only_libravatar is not None and only_libravatar["organization"] is None  # the admin switched one off


async def test_the_cached_block_follows_the_profile_version(world: World):
    user, account = await world.user("alice@example.test")
    book = await world.book(user, "Work", {"1": Profile((PERSON,), name="Old name")})
    cache = ProfileCache(world.ids)
    async with world.web.acquire() as db:
        assert json.loads(await cache.block_json(db, account, PERSON, await world.state(account)))["name"]["value"] \
            == "Old name"
        await world.admin.execute("UPDATE profile_cards SET fields = '{\"name\": \"Changed behind\"}'")
        kept = json.loads(await cache.block_json(db, account, PERSON, await world.state(account)))
        assert kept["name"]["value"] == "Old name"  # nothing bumped the version: the kept block stands
        async with world.admin.acquire() as conn, conn.transaction():  # a sync: cards and the bump together
            await rows.put_cards(conn, book, user, {"1": Profile((PERSON,), name="New name")})
            await rows.bump_version(conn, user)
        assert json.loads(await cache.block_json(db, account, PERSON, await world.state(account)))["name"]["value"] \
            == "New name"
        await world.admin.execute("UPDATE mail_accounts SET public_profiles = true WHERE id = $1", account)
        assert (await world.state(account))["public_profiles"] is True  # part of the stamp too


async def test_no_profile_is_null(world: World):
    user, account = await world.user("alice@example.test")
    cache = ProfileCache(world.ids)
    assert await cache.block_json(world.web, account, PERSON, await world.state(account)) == "null"


def test_photo_ids_are_stable_opaque_and_bounded():
    ids = PhotoIds(KEY)
    one = ids.make("b", 1, 2, "someone@example.test", 5)
    assert one == ids.make("b", 1, 2, "someone@example.test", 5)  # one URL per photo and version: cacheable
    assert one != ids.make("b", 1, 2, "someone@example.test", 6)
    assert "@" not in one and "someone" not in one and len(one) < read.MAX_PHOTO_ID
    assert ids.read(one) == ["b", 1, 2, "someone@example.test", 5]
    assert ids.read("x" * (read.MAX_PHOTO_ID + 1)) is None and ids.read("é") is None and ids.read("") is None
    longest = ids.make("p", 2**62, 2**62, "a" * 320, "libravatar", 2**62)
    assert len(longest) <= read.MAX_PHOTO_ID


async def test_the_card_reads_the_stamp_with_its_state(world: World):
    """PostgreSQL's card hands its state row (with the profile stamp) to the extra step, on its connection."""
    from inboxlens.metrics.model import AccountRef, InsightSettings
    from inboxlens.metrics.postgres.store import PgMetricsStore
    from tests.web.conftest import raw

    user, account = await world.user("alice@example.test")
    store = PgMetricsStore(world.admin, InsightSettings())
    now = datetime.now(timezone.utc)
    await store.write_raw([raw(account, "alice@example.test", "<m1@x>", now - timedelta(days=1),
                               received_from=PERSON)])
    await store.aggregate(AccountRef(account, "alice@example.test", "UTC"))
    seen = []

    async def extra(db: asyncpg.Connection, state: asyncpg.Record) -> str:
        seen.append((state["user_id"], state["profile_version"], state["public_profiles"]))
        return "x"

    card, added = await store.card_with(account, PERSON, now=now, extra=extra)
    assert card is not None and added == "x" and seen == [(user, 0, False)]
    assert await store.card_with(account, "nobody@x.test", now=now, extra=extra) == (None, None)
    assert len(seen) == 1  # no card, no extra step


class CardOnly:
    """A metrics store with ``card`` alone (as Cassandra's): the stamp is then read on its own."""

    def __init__(self, store: object) -> None:
        self.store = store

    async def card(self, account_id: int, correspondent: str, *, now: datetime) -> object:
        return await self.store.card(account_id, correspondent, now=now)  # type: ignore[attr-defined]


async def test_the_card_answer_carries_the_profile_with_either_kind_of_store(world: World):
    from inboxlens.metrics.model import AccountRef, InsightSettings
    from inboxlens.metrics.postgres.store import PgMetricsStore
    from inboxlens.web.api.views import card_with_profile
    from tests.web.conftest import raw

    user, account = await world.user("alice@example.test")
    store = PgMetricsStore(world.web, InsightSettings())
    now = datetime.now(timezone.utc)
    await PgMetricsStore(world.admin, InsightSettings()).write_raw(
        [raw(account, "alice@example.test", "<m1@x>", now - timedelta(days=1), received_from=PERSON)])
    await PgMetricsStore(world.admin, InsightSettings()).aggregate(AccountRef(account, "alice@example.test", "UTC"))
    for kind in (store, CardOnly(store)):
        cache = ProfileCache(world.ids)
        card, text = await card_with_profile(kind, world.web, cache, account, PERSON, now)  # type: ignore[arg-type]
        assert card is not None and text == "null"
        await world.book(user, f"Book for {type(kind).__name__}", {"1": Profile((PERSON,), name="Dana")})
        card, text = await card_with_profile(kind, world.web, cache, account, PERSON, now)  # type: ignore[arg-type]
        assert json.loads(str(text))["name"]["value"] == "Dana"
        assert await card_with_profile(kind, world.web, cache, account, "nobody@x.test", now) == (None, None)  # type: ignore[arg-type]
        await world.admin.execute("DELETE FROM address_books")
