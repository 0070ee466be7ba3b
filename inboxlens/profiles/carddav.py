"""A CardDAV client (RFC 6352) for one address book: what changed since the last sync.

The user gives the address book's own URL (no discovery), a user name and an app password; or,
for Google's CardDAV, the mail account's OAuth access token (``AddressBook.with_bearer``).
``sync(book, state)``:

* the first time, or when the server no longer knows the sync token: PROPFIND Depth 1 lists
  every card with its ETag (and checks that the URL is an address book); the cards whose ETag
  differs from ``state.etags`` are fetched, the ones no longer listed are deleted;
* with a sync token (the server lists ``sync-collection`` among its reports): REPORT
  sync-collection (RFC 6578) names what changed and what was deleted since that token.

Changed cards are fetched with REPORT addressbook-multiget, ``batch`` hrefs at a time. The
result (profiles by href, deleted hrefs, the new state) is for the caller to apply in one
transaction: a sync that fails raises a ``ContactsError`` and has changed nothing, and the old
state stays good for the next try.

The password goes only into each request's Authorization header, built for that request; it
is in no repr, log line or exception (``request`` raises outside its ``except`` blocks, so no
library exception, which may quote a request, hangs on ours). Redirects are not followed (the
header would go along): the user gives the address book's own URL. Plain http only to a
loopback address. Without a session of the caller's, requests go through ``egress.session``:
addresses that are not globally routable are refused at connect time unless
``allow_private_addresses``, and "refused" reads like "cannot connect". Answers are untrusted: each is read up to a byte bound within a timeout,
and XML with a DOCTYPE is refused (no DAV server needs one; entities are how XML bombs work).
Messages name the server by scheme, host and port only: an address book's path, and each
card's href, often hold their owner's address.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote, urljoin, urlsplit
from xml.parsers import expat

import aiohttp

from inboxlens.profiles import egress
from inboxlens.profiles.errors import (AddressBookBroken, AddressBookRefused, AddressBookUnavailable, BadVCard,
                                       NotAnAddressBook)
from inboxlens.profiles.vcard import DEFAULT_LIMITS as VCARD_LIMITS
from inboxlens.profiles.vcard import Profile, VCardLimits, parse_card

log = logging.getLogger(__name__)
DAV = "{DAV:}"
CARDDAV = "{urn:ietf:params:xml:ns:carddav}"
_XML = 'application/xml; charset="utf-8"'


@dataclass(frozen=True)
class CardDavLimits:
    """Bounds on what one server may make a sync wait for or hold."""

    timeout: float = 30.0  # one request, from connecting to its answer's last byte
    listing_bytes: int = 16 * 1024 * 1024  # a PROPFIND or sync-collection answer
    batch: int = 25  # hrefs per addressbook-multiget
    batch_bytes: int = 32 * 1024 * 1024  # one multiget answer: batch x vCard card_bytes, and room
    cards: int = 20_000  # in one address book
    sync_rounds: int = 20  # truncated (507) sync-collection answers followed before giving up
    vcard: VCardLimits = VCARD_LIMITS


DEFAULT_LIMITS = CardDavLimits()


@dataclass(frozen=True)
class AddressBook:
    """Where and as whom; ``NotAnAddressBook`` at once for a URL or user name that cannot work.

    ``bearer``: an OAuth access token (Google's CardDAV), sent instead of user name and password.
    """

    url: str
    username: str
    password: str = field(repr=False)
    bearer: str = field(default="", repr=False)

    @classmethod
    def with_bearer(cls, url: str, access_token: str) -> "AddressBook":
        return cls(url, "", "", access_token)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if parts.scheme not in ("https", "http") or not host or parts.username is not None:
            raise NotAnAddressBook("an address book's URL is https://host/path (no user name in it)")
        if parts.scheme == "http" and not _loopback(host):
            raise NotAnAddressBook("an address book's URL must be https (plain http only to this machine)")
        if self.bearer and (not self.bearer.isascii() or not self.bearer.isprintable() or " " in self.bearer):
            raise NotAnAddressBook("an access token is printable ASCII without spaces")
        if not self.bearer and (not self.username or ":" in self.username or not self.username.isprintable()):
            raise NotAnAddressBook("a CardDAV user name is printable and holds no ':'")

    def authorization(self) -> str:
        """The Authorization header's value, built for each request and kept nowhere."""
        if self.bearer:
            return "Bearer " + self.bearer
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        return f"{parts.scheme}://{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


@dataclass(frozen=True)
class SyncState:
    """What the last sync saw: the server's sync token ("" for none) and every card's ETag by href."""

    token: str = ""
    etags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncResult:
    """Apply together: replace ``changed``, delete ``deleted``, keep ``state`` for the next sync.

    ``skipped``: hrefs whose card brought no profile, and why (an unreadable card is also in
    ``deleted``: it no longer says what it said). ``dropped``: values left out, by reason.
    ``full``: the changes come from a whole listing, not from sync-collection.
    """

    changed: Mapping[str, Profile]
    deleted: frozenset[str]
    skipped: Mapping[str, str]
    dropped: Mapping[str, int]
    state: SyncState
    full: bool


async def sync(book: AddressBook, state: SyncState | None = None, *, limits: CardDavLimits = DEFAULT_LIMITS,
               session: aiohttp.ClientSession | None = None, use_sync_collection: bool = True,
               allow_private_addresses: bool = False) -> SyncResult:
    """What changed in ``book`` since ``state`` (everything, without one); see the module's docstring.
    ``session``: the caller's, built with ``egress.session`` (else one is made for this sync)."""
    state = state or SyncState()
    async with _session(session, allow_private_addresses, limits.timeout) as http:
        dav = CardDavClient(book, http, limits)
        changes = await dav.changes_since(state.token) if state.token and use_sync_collection else None
        if changes is None:
            listed, token = await dav.list_cards()
            gone, etags = set(state.etags) - set(listed), dict(listed)
        else:
            listed, gone, token = changes
            etags = {href: etag for href, etag in {**state.etags, **listed}.items() if href not in gone}
        wanted = sorted(href for href, etag in listed.items() if not etag or state.etags.get(href) != etag)
        result = await _fetch(dav, wanted, gone, etags, token if use_sync_collection else "", changes is None)
    log.info("address book at %s: %d changed, %d deleted, %d skipped (%s)", book.origin, len(result.changed),
             len(result.deleted), len(result.skipped), "full listing" if result.full else "sync-collection")
    return result


async def _fetch(dav: CardDavClient, wanted: list[str], gone: set[str], etags: dict[str, str], token: str,
                 full: bool) -> SyncResult:
    changed: dict[str, Profile] = {}
    skipped: dict[str, str] = {}
    dropped: dict[str, int] = {}
    for start in range(0, len(wanted), dav.limits.batch):
        batch = wanted[start:start + dav.limits.batch]
        found, missing = await dav.multiget(batch)
        gone |= missing
        for href in batch:
            if href in found:
                etags[href] = found[href][0] or etags.get(href, "")
                try:
                    card = parse_card(found[href][1], dav.limits.vcard)
                except BadVCard as e:
                    skipped[href] = e.reason
                    gone.add(href)  # its ETag stays known: it is read again only once it changes
                    continue
                changed[href] = card.profile
                for reason in card.dropped:
                    dropped[reason] = dropped.get(reason, 0) + 1
            elif href not in missing:
                skipped[href] = "the server did not return the card"
                etags.pop(href, None)  # unknown again: asked for next time
    for href in gone - set(skipped):
        etags.pop(href, None)
    return SyncResult(changed, frozenset(gone), skipped, dropped, SyncState(token, etags), full)


@asynccontextmanager
async def _session(given: aiohttp.ClientSession | None, allow_private: bool,
                   timeout: float) -> AsyncIterator[aiohttp.ClientSession]:
    if given is not None:
        yield given
        return
    async with egress.session(allow_private=allow_private, limit=2, timeout=timeout) as own:
        yield own


@dataclass(frozen=True)
class _Answer:
    """One DAV:response: its href (a path), status, and the properties a 2xx propstat gave."""

    href: str
    status: int
    props: Mapping[str, ET.Element]


class CardDavClient:
    """The requests of a sync, each bounded; they raise ``ContactsError``s only."""

    def __init__(self, book: AddressBook, session: aiohttp.ClientSession, limits: CardDavLimits) -> None:
        self.book, self.session, self.limits = book, session, limits
        self.url = book.url if book.url.endswith("/") else book.url + "/"
        self.path = urlsplit(self.url).path

    async def list_cards(self) -> tuple[dict[str, str], str]:
        """Every card's ETag by href, and the sync token when the server offers sync-collection."""
        props = "".join(f"<D:{p}/>" for p in ("resourcetype", "getetag", "sync-token", "supported-report-set"))
        status, body = await self.request("PROPFIND", f'<D:propfind xmlns:D="DAV:"><D:prop>{props}</D:prop>'
                                          "</D:propfind>", "1", self.limits.listing_bytes)
        self.judge(status, "PROPFIND")
        answers = self.answers(_parse_xml(body, self.book.origin))
        book = next((a for a in answers if self.is_book(a.href)), None)
        kinds = book.props.get(f"{DAV}resourcetype") if book else None
        if kinds is None or kinds.find(f"{CARDDAV}addressbook") is None:
            raise NotAnAddressBook(f"the URL at {self.book.origin} is not a CardDAV address book")
        cards = {a.href: (a.props[f"{DAV}getetag"].text or "").strip() for a in answers
                 if not self.is_book(a.href) and f"{DAV}getetag" in a.props and not _is_collection(a)}
        return self.bounded(cards), _sync_token(book.props) if book else ""

    async def changes_since(self, token: str) -> tuple[dict[str, str], set[str], str] | None:
        """Changed cards' ETags by href, deleted hrefs and the new token; None when the token is not
        good any more or the server will not answer sync-collection (then list everything)."""
        changed: dict[str, str] = {}
        gone: set[str] = set()
        for _ in range(self.limits.sync_rounds):
            status, body = await self.request("REPORT", _sync_collection(token), "0", self.limits.listing_bytes)
            if (status in (403, 409) and b"valid-sync-token" in body) or status in (400, 404, 405, 415, 501):
                return None
            self.judge(status, "REPORT sync-collection")
            tree, truncated = _parse_xml(body, self.book.origin), False
            for answer in self.answers(tree):
                if self.is_book(answer.href):
                    truncated |= answer.status == 507
                elif answer.status == 404:
                    gone.add(answer.href)
                    changed.pop(answer.href, None)
                elif f"{DAV}getetag" in answer.props and not _is_collection(answer):
                    changed[answer.href] = (answer.props[f"{DAV}getetag"].text or "").strip()
                    gone.discard(answer.href)
            token = (tree.findtext(f"{DAV}sync-token") or "").strip()
            if not truncated:
                return self.bounded(changed), gone, token
        raise AddressBookBroken(f"{self.book.origin} truncated sync-collection {self.limits.sync_rounds} times")

    async def multiget(self, hrefs: list[str]) -> tuple[dict[str, tuple[str, str]], set[str]]:
        """(ETag, vCard text) by href for the cards the server returned, and the hrefs it says are gone."""
        status, body = await self.request("REPORT", _multiget(hrefs), "1", self.limits.batch_bytes)
        self.judge(status, "REPORT addressbook-multiget")
        asked = {unquote(href): href for href in hrefs}
        found: dict[str, tuple[str, str]] = {}
        missing: set[str] = set()
        for answer in self.answers(_parse_xml(body, self.book.origin)):
            href = asked.get(unquote(answer.href))
            data = answer.props.get(f"{CARDDAV}address-data")
            if href is not None and answer.status == 404:
                missing.add(href)
            elif href is not None and data is not None:
                etag = answer.props.get(f"{DAV}getetag")
                found[href] = ((etag.text or "").strip() if etag is not None else "", data.text or "")
        return found, missing

    async def request(self, method: str, body: str, depth: str, bound: int) -> tuple[int, bytes]:
        """One request's status and body (at most ``bound`` bytes), within the timeout."""
        headers = {"Authorization": self.book.authorization(), "Depth": depth, "Content-Type": _XML,
                   "Accept-Encoding": "identity"}
        failure = ""
        try:
            async with asyncio.timeout(self.limits.timeout):
                async with self.session.request(method, self.url, data=body.encode(), headers=headers,
                                                allow_redirects=False) as answer:
                    return answer.status, await self.read(answer, bound)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, aiohttp.InvalidUrlClientError):
            # One message whatever the cause (refused here, no such name, no route, a port that drops
            # packets), so a URL's owner cannot map the network behind InboxLens by its errors.
            failure = egress.cannot_connect(self.book.url)
        except TimeoutError:
            failure = f"{self.book.origin} did not answer within {self.limits.timeout:g} s"
        except aiohttp.ClientError as e:
            failure = f"the connection to {self.book.origin} failed ({type(e).__name__})"
        raise AddressBookUnavailable(failure)

    async def read(self, answer: aiohttp.ClientResponse, bound: int) -> bytes:
        data = bytearray()
        if (answer.content_length or 0) <= bound:
            async for chunk in answer.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > bound:
                    break
        if (answer.content_length or 0) > bound or len(data) > bound:
            raise AddressBookBroken(f"{self.book.origin} answered with more than {bound} bytes")
        return bytes(data)

    def judge(self, status: int, what: str) -> None:
        """Raise unless ``status`` is 207 Multi-Status, naming whose fault it is."""
        origin = self.book.origin
        if status in (401, 403):
            raise AddressBookRefused(f"{origin} refused the user name or app password (HTTP {status})")
        if status == 429 or status >= 500:
            raise AddressBookUnavailable(f"{origin} answered HTTP {status} to {what}; try again later")
        if 300 <= status < 400:
            raise NotAnAddressBook(f"{origin} redirects the address book's URL (HTTP {status}): give the new one")
        if status in (404, 405, 501):
            raise NotAnAddressBook(f"{origin} has no address book at that URL (HTTP {status} to {what})")
        if status != 207:
            raise AddressBookBroken(f"{origin} answered HTTP {status} to {what}, not 207 Multi-Status")

    def answers(self, multistatus: ET.Element) -> list[_Answer]:
        """The multistatus's responses whose href is the address book or a resource in it."""
        found = []
        for response in multistatus.iterfind(f"{DAV}response"):  # direct children: nesting costs nothing
            props, status = {}, _status(response.findtext(f"{DAV}status"))
            for propstat in response.iterfind(f"{DAV}propstat"):
                if 200 <= _status(propstat.findtext(f"{DAV}status")) < 300:
                    props.update({p.tag: p for p in propstat.iterfind(f"{DAV}prop/*")})
                    status = status or 200
            for href in response.iterfind(f"{DAV}href"):
                path = self.member_path(href.text or "")
                if path is not None:
                    found.append(_Answer(path, status, props))
        return found

    def member_path(self, href: str) -> str | None:
        """``href``'s path when it is the address book or inside it, on the same server."""
        parts, own = urlsplit(urljoin(self.url, href.strip())), urlsplit(self.url)
        inside = unquote(parts.path).startswith(unquote(self.path))
        return parts.path if parts.netloc == own.netloc and (inside or self.is_book(parts.path)) else None

    def is_book(self, path: str) -> bool:
        return unquote(path).rstrip("/") == unquote(self.path).rstrip("/")

    def bounded(self, cards: dict[str, str]) -> dict[str, str]:
        if len(cards) > self.limits.cards:
            raise AddressBookBroken(f"the address book at {self.book.origin} lists over {self.limits.cards} cards")
        return cards


def _parse_xml(body: bytes, origin: str) -> ET.Element:
    """``body`` as a tree ({namespace}name tags); a DOCTYPE or malformed XML is the server's fault."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = _refuse_doctype
    depth, elements = [0], [0]

    def start(name: str, _attributes: object) -> None:
        depth[0] += 1
        elements[0] += 1
        if depth[0] > MAX_XML_DEPTH or elements[0] > MAX_XML_ELEMENTS:
            raise _Refused
        builder.start(_clark(name), {})

    def end(name: str) -> None:
        depth[0] -= 1
        builder.end(_clark(name))
    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, builder.data
    try:
        parser.Parse(body, True)
        return builder.close()
    except (expat.ExpatError, _Refused, AssertionError):
        pass
    raise AddressBookBroken(f"{origin} answered with malformed XML (or a DOCTYPE, or nesting or elements "
                            f"past {MAX_XML_DEPTH} or {MAX_XML_ELEMENTS:,})")


MAX_XML_DEPTH = 32  # a multistatus nests 6 deep
MAX_XML_ELEMENTS = 500_000  # a listing of 20,000 cards holds about 10 a card


class _Refused(Exception):
    """Raised inside expat to stop at a DOCTYPE or past a bound; never leaves ``_parse_xml``."""


def _refuse_doctype(*_: object) -> None:
    raise _Refused


def _clark(name: str) -> str:
    namespace, space, local = name.rpartition(" ")
    return f"{{{namespace}}}{local}" if space else name


def _status(line: str | None) -> int:
    """The code of an HTTP status line ("HTTP/1.1 404 Not Found" -> 404); 0 for none."""
    words = (line or "").split()
    return int(words[1]) if len(words) > 1 and words[1].isdigit() and len(words[1]) == 3 else 0


def _is_collection(answer: _Answer) -> bool:
    kinds = answer.props.get(f"{DAV}resourcetype")
    return kinds is not None and kinds.find(f"{DAV}collection") is not None


def _sync_token(props: Mapping[str, ET.Element]) -> str:
    """The address book's sync token, when it names sync-collection among its reports."""
    reports = props.get(f"{DAV}supported-report-set")
    offered = reports is not None and any(True for _ in reports.iter(f"{DAV}sync-collection"))
    token = props.get(f"{DAV}sync-token")
    return (token.text or "").strip() if offered and token is not None else ""


def _sync_collection(token: str) -> str:
    return ('<D:sync-collection xmlns:D="DAV:"><D:sync-token>' + _escape(token) + "</D:sync-token>"
            "<D:sync-level>1</D:sync-level><D:prop><D:getetag/></D:prop></D:sync-collection>")


def _multiget(hrefs: Iterable[str]) -> str:
    refs = "".join(f"<D:href>{_escape(href)}</D:href>" for href in hrefs)
    return ('<C:addressbook-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">'
            f"<D:prop><D:getetag/><C:address-data/></D:prop>{refs}</C:addressbook-multiget>")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
