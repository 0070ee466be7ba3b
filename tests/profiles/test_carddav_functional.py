"""CardDAV sync against a real Radicale on loopback, seeded with awkward vCards; and fakes for
what Radicale never does (hostile XML, huge answers, a server that never answers)."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import count

import pytest
from aiohttp import web

from inboxlens.errors import InboxLensError
from inboxlens.profiles import carddav
from inboxlens.profiles.carddav import AddressBook, CardDavLimits, SyncResult, SyncState
from inboxlens.profiles.errors import (AddressBookBroken, AddressBookRefused, AddressBookUnavailable, ContactsError,
                                       NotAnAddressBook)
from inboxlens.profiles.match import CardRef, match, merge
from tests.profiles.conftest import PASSWORD
from tests.support.pg_tcp import free_port
from tests.support.radicale import Radicale

JPEG = b"\xff\xd8\xff\xe0" + bytes(60)
ADDRESSES = ("ann@example.org", "ann.lee@work.example", "zoe@example.org", "big@example.org", "url@example.org")
_books = count()


def card(uid: str, *lines: str) -> bytes:
    return "\r\n".join(["BEGIN:VCARD", "VERSION:3.0", f"UID:{uid}", *lines, "END:VCARD", ""]).encode()


ANN = card("ann", "FN:Ann Lee", "N:Lee;Ann;;;", "ORG:Acme;Research", "TITLE:Chemist",
           "EMAIL;TYPE=work:Ann@Example.ORG", "EMAIL;TYPE=home:ann.lee@WORK.example", "EMAIL:ann@example.org",
           f"PHOTO;ENCODING=b;TYPE=JPEG:{base64.b64encode(JPEG).decode()}", "URL:https://ann.example/",
           "X-SOCIALPROFILE;TYPE=mastodon:https://social.example/@ann", "IMPP:xmpp:ann@example.org",
           "NOTE:met at the conference; owes me lunch", "TEL:+1 555 0100")
BIG = card("big", "FN:Big Photo", "EMAIL:big@example.org",
           "PHOTO;ENCODING=b;TYPE=JPEG:" + base64.b64encode(JPEG + bytes(300 * 1024)).decode())
BY_URL = card("url", "FN:Photo Link", "EMAIL:url@example.org", "PHOTO;VALUE=uri:https://photos.example/u.jpg")
NO_ADDRESS = card("none", "FN:Nobody", "EMAIL:not an address")
MALFORMED = b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:bad\r\nFN Bad\r\nEND:VCARD\r\n"
LATIN_1 = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:zoe\r\nFN:Zoë Müller\r\nEMAIL:zoe@example.org\r\nEND:VCARD\r\n"


def seed(radicale: Radicale) -> str:
    """A fresh address book of alice's with the awkward cards; returns its URL."""
    url = radicale.mkbook("alice", f"contacts-{next(_books)}")
    for name, vcard in (("ann.vcf", ANN), ("big.vcf", BIG), ("url.vcf", BY_URL), ("none.vcf", NO_ADDRESS)):
        assert radicale.put(url, name, vcard) == 201
    assert radicale.put(url, "zoe.vcf", LATIN_1.encode("latin-1"), charset="iso-8859-1") == 201
    # Radicale reads every card with vobject and refuses what it cannot: no server hands it on.
    assert radicale.put(url, "bad.vcf", MALFORMED) == 400
    return url


def sync(*args: object, **kwargs: object) -> Awaitable[SyncResult]:
    """carddav.sync, allowed to reach this machine (Radicale and the fakes listen on loopback)."""
    return carddav.sync(*args, allow_private_addresses=True, **kwargs)  # type: ignore[arg-type]


def book(url: str, password: str = PASSWORD) -> AddressBook:
    return AddressBook(url, "alice", password)


def names(result: SyncResult) -> dict[str, str]:
    return {href.rpartition("/")[2]: profile.name for href, profile in result.changed.items()}


@pytest.fixture(autouse=True)
def everything_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def assert_nothing_leaked(caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (PASSWORD, base64.b64encode(f"alice:{PASSWORD}".encode()).decode(), *ADDRESSES):
        assert secret not in logged
        assert all(secret not in text for text in texts)


async def test_full_sync_keeps_what_cards_show_and_counts_what_it_leaves_out(radicale, caplog):
    result = await sync(book(seed(radicale)))
    assert result.full and result.state.token and result.deleted == set(result.skipped)  # it brings nothing
    assert names(result) == {"ann.vcf": "Ann Lee", "big.vcf": "Big Photo", "url.vcf": "Photo Link",
                             "zoe.vcf": "Zoë Müller"}
    ann = next(p for p in result.changed.values() if p.uid == "ann")
    assert ann.emails == ("ann@example.org", "ann.lee@work.example")
    assert (ann.organization, ann.title, ann.photo and ann.photo.data) == ("Acme, Research", "Chemist", JPEG)
    assert {(link.kind, link.value) for link in ann.links} == {  # Radicale reorders properties
        ("url", "https://ann.example/"), ("social", "https://social.example/@ann"), ("impp", "xmpp:ann@example.org")}
    assert "lunch" not in repr(result) and "555" not in repr(result)
    big = next(p for p in result.changed.values() if p.uid == "big")
    assert big.photo is None and result.dropped == {"PHOTO over 262144 bytes": 1}
    photo_link = next(p for p in result.changed.values() if p.uid == "url").photo
    assert photo_link is not None and photo_link.url == "https://photos.example/u.jpg"
    assert list(result.skipped.values()) == ["a card has no usable EMAIL address"]
    assert set(result.state.etags) == set(result.changed) | set(result.skipped)
    assert_nothing_leaked(caplog)


@pytest.mark.parametrize("use_sync_collection", [True, False], ids=["sync-collection", "etags"])
async def test_incremental_sync_after_an_edit_and_a_delete(radicale, use_sync_collection):
    url = seed(radicale)
    first = await sync(book(url), use_sync_collection=use_sync_collection)
    assert bool(first.state.token) is use_sync_collection
    assert radicale.put(url, "ann.vcf", ANN.replace(b"TITLE:Chemist", b"TITLE:Lab head")) == 204
    assert radicale.delete(url, "url.vcf") == 200
    second = await sync(book(url), first.state, use_sync_collection=use_sync_collection)
    assert second.full is not use_sync_collection
    assert [p.title for p in second.changed.values()] == ["Lab head"]
    assert {h.rpartition("/")[2] for h in second.deleted} == {"url.vcf"}
    assert set(second.state.etags) == set(first.state.etags) - second.deleted
    third = await sync(book(url), second.state, use_sync_collection=use_sync_collection)
    assert not third.changed and not third.deleted


async def test_a_sync_token_the_server_forgot_falls_back_to_etags(radicale):
    url = seed(radicale)
    first = await sync(book(url))
    assert radicale.delete(url, "big.vcf") == 200
    again = await sync(book(url), SyncState("http://radicale.org/ns/sync/forgotten", first.state.etags))
    assert again.full and not again.changed and {h.rpartition("/")[2] for h in again.deleted} == {"big.vcf"}
    assert again.state.token and again.state.token != first.state.token


async def test_wrong_password_is_a_clear_error_and_loses_nothing(radicale, caplog):
    url = seed(radicale)
    first = await sync(book(url))
    assert radicale.delete(url, "ann.vcf") == 200
    with pytest.raises(AddressBookRefused, match="refused the user name or app password") as refused:
        await sync(book(url, PASSWORD + "x"), first.state)
    retried = await sync(book(url), first.state)  # the state the failure left alone is still good
    assert {h.rpartition("/")[2] for h in retried.deleted} == {"ann.vcf"}
    assert_nothing_leaked(caplog, str(refused.value), repr(refused.value), repr(book(url)))


async def test_another_users_address_book_is_refused(radicale):
    other = radicale.mkbook("bob", f"bobs-{next(_books)}")
    with pytest.raises(AddressBookRefused):
        await sync(book(other))


async def test_a_url_that_is_no_address_book_says_so(radicale):
    with pytest.raises(NotAnAddressBook, match="not a CardDAV address book"):
        await sync(book(radicale.base_url + "/alice/"))
    with pytest.raises(NotAnAddressBook, match="HTTP 404"):
        await sync(book(radicale.base_url + "/alice/nothing-here/"))


async def test_unreachable_server_is_a_clear_error(caplog):
    with pytest.raises(AddressBookUnavailable, match=r"cannot connect to http://127\.0\.0\.1:\d+") as failed:
        await sync(book(f"http://127.0.0.1:{free_port()}/alice/contacts/"))
    assert failed.value.__context__ is None  # no library exception (which may quote the request) rides along
    assert_nothing_leaked(caplog, str(failed.value))


async def test_a_server_that_never_answers_times_out():
    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()
    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(AddressBookUnavailable, match=r"did not answer within 0\.2 s"):
            await sync(book(f"http://127.0.0.1:{port}/a/"), limits=CardDavLimits(timeout=0.2))


@pytest.mark.parametrize("url, why", [
    ("ftp://dav.example/a/", "https://host/path"), ("http://dav.example/a/", "must be https"),
    ("https://alice:pw@dav.example/a/", "no user name in it")])
def test_urls_that_cannot_work_are_refused_at_once(url, why):
    with pytest.raises(NotAnAddressBook, match=why):
        AddressBook(url, "alice", PASSWORD)
    assert PASSWORD not in repr(AddressBook("https://dav.example/a/", "alice", PASSWORD))


# --- what Radicale never does: a fake server answering one fixed body to everything ----------------
Serve = Callable[[int, bytes], Awaitable[str]]


@pytest.fixture
async def fake() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def serve(status: int, body: bytes) -> str:
        async def answer(_: web.Request) -> web.Response:
            return web.Response(status=status, body=body, content_type="application/xml")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        return f"http://127.0.0.1:{sock.getsockname()[1]}/alice/book/"

    yield serve
    for runner in runners:
        await runner.cleanup()


BOMB = b"""<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>
<multistatus xmlns="DAV:"><response><href>&b;</href></response></multistatus>"""


@pytest.mark.parametrize("status, body, error, why", [
    (207, BOMB, AddressBookBroken, "DOCTYPE"),
    (207, b"<multistatus xmlns='DAV:'><response>", AddressBookBroken, "malformed XML"),
    # 8,000 nested responses took 0.4 s when every response's subtree was walked (quadratic).
    (207, b"<multistatus xmlns='DAV:'>" + b"<response>" * 8000 + b"</response>" * 8000 + b"</multistatus>",
     AddressBookBroken, "nesting or elements past 32"),
    (207, b"<x/>" + b" " * (2 * 1024 * 1024), AddressBookBroken, "more than 1048576 bytes"),
    (200, b"<html/>", AddressBookBroken, "HTTP 200"),
    (503, b"", AddressBookUnavailable, "try again later"),
    (301, b"", NotAnAddressBook, "redirects"),
])
async def test_hostile_or_broken_answers_are_the_servers_fault(fake, status, body, error, why):
    url = await fake(status, body)
    with pytest.raises(error, match=why) as raised:
        await sync(book(url), limits=CardDavLimits(listing_bytes=1024 * 1024))
    assert isinstance(raised.value, ContactsError) and isinstance(raised.value, InboxLensError)


async def test_profiles_from_two_books_merge_and_match_correspondents(radicale):
    first_url, second_url = seed(radicale), radicale.mkbook("alice", f"work-{next(_books)}")
    assert radicale.put(second_url, "ann-work.vcf", card("ann-w", "FN:Dr. A. Lee", "EMAIL:ANN.LEE@work.example",
                                                         "EMAIL:a.lee@lab.example", "TITLE:Head of Lab")) == 201
    first, second = await sync(book(first_url)), await sync(book(second_url))
    cards = {CardRef(1, href): p for href, p in first.changed.items()}
    cards |= {CardRef(2, href): p for href, p in second.changed.items()}
    people = merge(cards)
    found = match(people, ["a.lee@lab.example", "Ann@Example.org", "stranger@example.org"])
    assert set(found) == {"a.lee@lab.example", "Ann@Example.org"}
    ann = found["a.lee@lab.example"]
    assert ann is found["Ann@Example.org"] and len(people) == 4
    assert (ann.profile.name, ann.profile.title) == ("Ann Lee", "Chemist")  # the older book (1) wins
    assert ann.profile.emails == ("ann@example.org", "ann.lee@work.example", "a.lee@lab.example")
