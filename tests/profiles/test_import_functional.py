""".vcf import as web's own database role (profiles/imports.py): one book, all its cards, or nothing."""

from __future__ import annotations

import asyncpg
import pytest

from inboxlens.profiles import imports
from inboxlens.profiles.errors import BadVCard
from inboxlens.profiles.vcard import VCardLimits
from inboxlens.web import books
from tests.profiles.test_read_functional import PERSON, World, block, world  # noqa: F401 - the fixture

CARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:{name}\r\nEMAIL:{email}\r\nEND:VCARD\r\n"


def vcf(*cards: tuple[str, str]) -> bytes:
    return "".join(CARD.format(name=n, email=e) for n, e in cards).encode()


async def counts(world: World) -> tuple[int, int, int]:
    return (await world.admin.fetchval("SELECT count(*) FROM address_books"),
            await world.admin.fetchval("SELECT count(*) FROM profile_cards"),
            await world.admin.fetchval("SELECT count(*) FROM profile_addresses"))


async def test_a_file_becomes_one_book_with_all_its_cards(world: World):
    user, account = await world.user("alice@example.test")
    parsed = await imports.parse(vcf(("Dana Doe", PERSON.upper()), ("Eve", "eve@example.test"), ("No mail", "nope"))
                                 + b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Only a name\r\nEND:VCARD\r\n")
    done = await imports.import_vcf(world.web, user, "My file", parsed)
    assert done.cards == 2 and sum(done.skipped.values()) == 2 and await counts(world) == (1, 2, 2)
    assert await world.admin.fetchval("SELECT kind FROM address_books WHERE id = $1", done.book_id) == "vcf"
    assert sorted(await world.admin.fetchval("SELECT array_agg(href) FROM profile_cards")) == ["vcf:1", "vcf:2"]
    assert await world.admin.fetchval("SELECT version FROM profile_versions WHERE user_id = $1", user) == 1
    found = await block(world, user, account)
    assert found is not None and found["name"]["value"] == "Dana Doe"  # type: ignore[index]
    assert found["name"]["source"] == {"kind": "vcf", "label": "My file"}  # type: ignore[index]


async def test_a_failure_half_way_leaves_nothing(world: World):
    user, _ = await world.user("alice@example.test")
    await world.admin.execute("""
        CREATE FUNCTION fail_third() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.href = 'vcf:3' THEN RAISE EXCEPTION 'disk full'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER fail_third BEFORE INSERT ON profile_addresses FOR EACH ROW EXECUTE FUNCTION fail_third();""")
    parsed = await imports.parse(vcf(*((f"P{n}", f"p{n}@example.test") for n in range(5))))
    with pytest.raises(asyncpg.PostgresError):
        await imports.import_vcf(world.web, user, "Half", parsed)
    assert await counts(world) == (0, 0, 0)
    assert await world.admin.fetchval("SELECT count(*) FROM profile_versions") == 0


async def test_a_bad_file_is_refused_whole_before_anything_is_written(world: World):
    with pytest.raises(BadVCard):
        await imports.parse(b"this is not a vCard at all")
    with pytest.raises(BadVCard):
        await imports.parse(vcf(*((f"P{n}", f"p{n}@example.test") for n in range(4))), VCardLimits(cards=3))
    with pytest.raises(BadVCard):
        await imports.parse(b"x" * 101, VCardLimits(file_bytes=100))
    assert await counts(world) == (0, 0, 0)


async def test_the_book_limit_is_checked_in_the_importing_transaction(world: World):
    user, _ = await world.user("alice@example.test")
    parsed = await imports.parse(vcf(("Dana", PERSON)))

    async def limit_one(conn: asyncpg.Connection) -> None:
        await books.lock_and_count(conn, user, 1)

    await imports.import_vcf(world.web, user, "First", parsed, limit_one)
    with pytest.raises(books.BookRefused):
        await imports.import_vcf(world.web, user, "Second", parsed, limit_one)
    assert await counts(world) == (1, 1, 1)


async def test_the_public_switch_and_sync_now_as_web(world: World):
    user, account = await world.user("alice@example.test")
    other, other_account = await world.user("bob@example.test")
    assert await books.set_public(world.web, user, account, True)
    await world.public(account, "gravatar", {"name": "Dana G"})
    assert not await books.set_public(world.web, other, account, False)  # not bob's: nothing happens
    assert await world.admin.fetchval("SELECT count(*) FROM public_profiles") == 1
    version = await world.admin.fetchval("SELECT version FROM profile_versions WHERE user_id = $1", user)
    assert await books.set_public(world.web, user, account, False)
    assert await world.admin.fetchval("SELECT count(*) FROM public_profiles") == 0
    assert await world.admin.fetchval("SELECT public_profiles FROM mail_accounts WHERE id = $1", account) is False
    assert await world.admin.fetchval("SELECT version FROM profile_versions WHERE user_id = $1", user) > version
    book = await world.book(user, "Dav", {}, kind="carddav")
    await world.admin.execute("INSERT INTO address_book_sync (book_id, next_run_at) VALUES ($1, now() + "
                              "interval '1 day')", book)
    assert not await books.sync_now(world.web, other, book)
    assert await books.sync_now(world.web, user, book)
    assert await world.admin.fetchval("SELECT next_run_at <= now() FROM address_book_sync WHERE book_id = $1", book)
