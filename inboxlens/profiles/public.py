"""Public profiles (issue 17.4): Gravatar and Libravatar, asked by the SHA-256 of an address.

Opt-in per mailbox (``mail_accounts.public_profiles``, off by default), each source
switchable by the admin (``profiles.gravatar``, ``profiles.libravatar``). Only harvest runs
``Lookups`` (a task beside its Scheduler, ``start``/``stop``); web reads what it stored
(``public_fields``, ``public_photo``) and turns the opt-in off (``forget_public_profiles``).

What leaves the machine: an HTTPS GET per source and person carrying the hex SHA-256 of the
lower-cased, stripped address, a fixed User-Agent, no cookie, nothing else. Who is asked
about: the strongest correspondents of each opted-in, active mailbox that are people
(``is_person``: not a machine sender by the metrics' ``automated`` flag, not a no-reply or
role address). Each answer is cached per (mailbox, hash, source) for
``profiles.public_cache_days``, a miss as long as a hit. Requests are paced by one token
bucket (``profiles.public_lookups_per_minute``) and, across harvest nodes, by a PostgreSQL
advisory lock: one node looks up at a time.

Untrusted input: the services' answers, each read within ``TIMEOUT`` and a size bound
(JSON 64 KiB, a photo 256 KiB, JPEG/PNG/GIF by its bytes), never decompressed, a redirect
followed only within the source's own origin. A failing source (timeout, 429, 5xx, an
answer over its bound or malformed) is backed off and nothing is stored. Log lines hold
counts only: never an address or a hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from yarl import URL

from inboxlens.config.schema import ProfilesConfig
from inboxlens.errors import InboxLensError
from inboxlens.metrics.model import Relationship
from inboxlens.metrics.store import MetricsStore
from inboxlens.profiles.errors import ContactsError
from inboxlens.profiles.match import normalise_address

log = logging.getLogger("inboxlens.profiles.public")

SOURCES = ("gravatar", "libravatar")  # public_profiles.source, in the card's precedence
TIMEOUT = 10.0  # seconds for one request, connect to last byte
MAX_JSON = 64 * 1024
MAX_PHOTO = 256 * 1024  # public_profiles.photo's bound
MAX_TEXT = 256  # characters of a name, organisation, title or label
MAX_URL = 2048
MAX_LINKS = 32
MAX_REDIRECTS = 2  # within the source's own origin only
USER_AGENT = "InboxLens"  # the same for every request: nothing about the user or the mailbox
LOCK_KEY = 0x1B0_17_4  # pg advisory lock: one harvest node looks up at a time
BACKOFF_INITIAL, BACKOFF_MAX = 60.0, 3600.0  # seconds a failing source rests, doubling
_IMAGES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF87a", "image/gif"),
           (b"GIF89a", "image/gif"))

# Role and machine local parts: a shared mailbox or a program, not a person. Compared after
# lower-casing, dropping a +tag and reading '.' and '_' as '-'.
ROLES = frozenset("""
    abuse accounting accounts admin administrator alerts alert billing bounce bounces calendar careers
    contact customerservice digest enquiries feedback hello help helpdesk hostmaster hr info inquiries
    invoice invoices jobs legal list listserv mail mailer-daemon majordomo marketing media news newsletter
    notification notifications office orders postmaster press privacy reply root sales security service
    support team updates webmaster""".split())
_MACHINE = re.compile(r"(?:^|-)(?:no-?reply|do-?not-?reply|notifications?|bounces?)\d*(?:-|$)"
                      r"|^owner-|-(?:owner|request|bounces)$")
_SEPARATORS = str.maketrans("._", "--")


class SourceUnavailable(ContactsError):
    """A public source failed (unreachable, timed out, 429, 5xx, an answer over a bound or malformed)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def address_hash(address: str) -> bytes:
    """SHA-256 of the lower-cased, stripped address: all a public source ever sees (as hex)."""
    return hashlib.sha256(address.strip().lower().encode()).digest()


def is_person(relationship: Relationship) -> bool:
    """Whether a correspondent may be looked up: a person's own address, not a machine or a role."""
    address = normalise_address(relationship.correspondent)
    if relationship.automated or address is None:
        return False
    local = address.rpartition("@")[0].partition("+")[0].translate(_SEPARATORS)
    return local not in ROLES and _MACHINE.search(local) is None


@dataclass(frozen=True)
class Settings:
    """``ProfilesConfig``'s public-profile keys, and the bounds of a round."""

    sources: tuple[str, ...]  # the admin's switched-on sources, in SOURCES' order
    gravatar_api_url: str
    gravatar_avatar_url: str
    libravatar_avatar_url: str
    cache: timedelta
    per_minute: int
    timeout: float = TIMEOUT
    batch: int = 20  # lookups (mailbox, person, source) a round
    scan: int = 200  # correspondents of each mailbox considered, strongest first
    pause: float = 1.0  # seconds between rounds that had work
    idle: float = 300.0  # seconds between rounds that found none

    @classmethod
    def of(cls, config: ProfilesConfig, **bounds: Any) -> Settings:
        sources = tuple(s for s in SOURCES if getattr(config, s))
        return cls(sources, config.gravatar_api_url.rstrip("/"), config.gravatar_avatar_url.rstrip("/"),
                   config.libravatar_avatar_url.rstrip("/"), timedelta(days=config.public_cache_days),
                   config.public_lookups_per_minute, **bounds)


class TokenBucket:
    """``per_minute`` requests a minute, at most ``capacity`` at once, for the whole process."""

    def __init__(self, per_minute: float, capacity: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.capacity, self.clock = per_minute / 60.0, capacity, clock
        self.tokens, self.stamp = capacity, clock()

    def delay(self) -> float:
        """Seconds until a token is free (0: take it now)."""
        now = self.clock()
        self.tokens, self.stamp = min(self.capacity, self.tokens + (now - self.stamp) * self.rate), now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    async def take(self, stopping: asyncio.Event) -> bool:
        """Wait for a token; False (and none taken) when ``stopping`` was set first."""
        while (wait := self.delay()) > 0:
            if await _stopped(stopping, wait):
                return False
        self.tokens -= 1
        return not stopping.is_set()


@dataclass(frozen=True)
class Answer:
    """What one source said about one hash."""

    found: bool
    fields: dict[str, Any] = field(default_factory=dict)
    photo: bytes | None = None
    photo_type: str | None = None


@dataclass(frozen=True)
class Work:
    account_id: int
    hash: bytes
    source: str


class Lookups:
    """The loop harvest runs: rounds of bounded batches until ``stopping``."""

    def __init__(self, pool: asyncpg.Pool, metrics: MetricsStore, settings: Settings,
                 bucket: TokenBucket | None = None) -> None:
        self.pool, self.metrics, self.settings = pool, metrics, settings
        self.bucket = bucket or TokenBucket(settings.per_minute)
        self.resting: dict[str, tuple[float, float]] = {}  # source: (monotonic until, last backoff)
        self.cursor = 0  # the last mailbox a round read: the next round starts after it

    async def run(self, stopping: asyncio.Event) -> None:
        async with _session(self.settings.timeout) as session:
            while not stopping.is_set():
                try:
                    asked = await self.round(session, stopping)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, InboxLensError) as e:
                    log.warning("public profiles: a round failed (%s); trying again later", type(e).__name__)
                    asked = 0
                await _stopped(stopping, self.settings.pause if asked else self.settings.idle)

    async def round(self, session: aiohttp.ClientSession, stopping: asyncio.Event) -> int:
        """One batch under the advisory lock; returns how many lookups were stored."""
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                return 0  # another harvest node is looking up
            try:
                await self._purge(conn)
                work = await self._candidates(conn)
                return await self._ask_all(conn, session, work, stopping)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)

    async def _purge(self, conn: asyncpg.Connection) -> None:
        """What a switched-off source brought, and rows no round refreshed in twice the cache time."""
        off = [s for s in SOURCES if s not in self.settings.sources]
        await conn.execute("DELETE FROM public_profiles WHERE source = ANY($1::text[]) "
                           "OR fetched_at < now() - $2::interval", off, 2 * self.settings.cache)

    async def _candidates(self, conn: asyncpg.Connection) -> list[Work]:
        """Up to ``batch`` lookups not cached, taking each mailbox's strongest people in turn.

        Mailboxes are read from where the last round stopped (by id, wrapping around) until
        the batch is full, so a round costs a few mailboxes' reads however many opted in."""
        sources = [s for s in self.settings.sources if not self._rests(s)]
        if not sources:
            return []
        accounts = await conn.fetch("SELECT id FROM mail_accounts WHERE public_profiles AND status = 'active' "
                                    "ORDER BY id <= $1, id", self.cursor)
        queues: list[list[Work]] = []
        for account in accounts:
            if sum(map(len, queues)) >= self.settings.batch:
                break
            self.cursor = int(account["id"])
            queues.append(await self._wanted(conn, self.cursor, sources))
        return list(_interleave(queues))[:self.settings.batch]

    async def _wanted(self, conn: asyncpg.Connection, account_id: int, sources: list[str]) -> list[Work]:
        people = await self.metrics.relationships(account_id, now=datetime.now(timezone.utc), order="strength",
                                                  limit=self.settings.scan)
        hashes = list(dict.fromkeys(address_hash(r.correspondent) for r in people if is_person(r)))
        fresh = {(bytes(r["address_hash"]), r["source"]) for r in await conn.fetch(
            "SELECT address_hash, source FROM public_profiles WHERE account_id = $1 "
            "AND address_hash = ANY($2::bytea[]) AND fetched_at > now() - $3::interval",
            account_id, hashes, self.settings.cache)}
        return [Work(account_id, h, s) for h in hashes for s in sources if (h, s) not in fresh]

    async def _ask_all(self, conn: asyncpg.Connection, session: aiohttp.ClientSession, work: list[Work],
                       stopping: asyncio.Event) -> int:
        asked: dict[tuple[bytes, str], Answer] = {}  # one request per person and source a round
        counts = {"found": 0, "missing": 0, "failed": 0}
        for item in work:
            if stopping.is_set() or self._rests(item.source):
                continue
            key = (item.hash, item.source)
            if key not in asked:
                try:
                    asked[key] = await self._ask(session, item, stopping)
                except SourceUnavailable as e:
                    if not stopping.is_set():
                        self._rest(item.source, e.retry_after)
                        counts["failed"] += 1
                    continue
                self.resting.pop(item.source, None)
            await _store(conn, item, asked[key])
            counts["found" if asked[key].found else "missing"] += 1
        if any(counts.values()):
            log.info("public profiles: %(found)d found, %(missing)d not found, %(failed)d failed", counts)
        return counts["found"] + counts["missing"]

    async def _ask(self, session: aiohttp.ClientSession, item: Work, stopping: asyncio.Event) -> Answer:
        fetch = _Fetch(session, self.bucket, stopping)
        hexed = item.hash.hex()
        if item.source == "libravatar":
            photo = await fetch.image(f"{self.settings.libravatar_avatar_url}/{hexed}")
            return Answer(photo is not None, {}, *(photo or (None, None)))
        document = await fetch.json(f"{self.settings.gravatar_api_url}/profiles/{hexed}")
        photo = await fetch.image(f"{self.settings.gravatar_avatar_url}/{hexed}")
        fields = gravatar_fields(document) if document is not None else {}
        return Answer(document is not None or photo is not None, fields, *(photo or (None, None)))

    def _rests(self, source: str) -> bool:
        return self.resting.get(source, (0.0, 0.0))[0] > time.monotonic()

    def _rest(self, source: str, retry_after: float | None) -> None:
        last = self.resting.get(source, (0.0, BACKOFF_INITIAL / 2))[1]
        delay = min(BACKOFF_MAX, max(2 * last, retry_after or 0.0))
        self.resting[source] = (time.monotonic() + delay, delay)
        log.warning("public profiles: %s is unavailable; not asked for %d s", source, delay)


class _Fetch:
    """GETs to one source for one lookup: paced, bounded, same-origin redirects only."""

    def __init__(self, session: aiohttp.ClientSession, bucket: TokenBucket, stopping: asyncio.Event) -> None:
        self.session, self.bucket, self.stopping = session, bucket, stopping

    async def json(self, url: str) -> dict[str, Any] | None:
        """The JSON object at url, or None when the source has none (404, an off-origin redirect)."""
        body = await self._get(url, {}, MAX_JSON, oversized_is_missing=False)
        if body is None:
            return None
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise SourceUnavailable("not JSON") from None
        if not isinstance(document, dict):
            raise SourceUnavailable("not a JSON object")
        return document

    async def image(self, url: str) -> tuple[bytes, str] | None:
        """(bytes, media type) of a JPEG, PNG or GIF within MAX_PHOTO; None for none (or another kind)."""
        body = await self._get(url, {"d": "404", "s": "200"}, MAX_PHOTO, oversized_is_missing=True)
        kind = next((t for magic, t in _IMAGES if body is not None and body.startswith(magic)), None)
        return None if body is None or kind is None else (body, kind)

    async def _get(self, url: str, params: dict[str, str], limit: int, *, oversized_is_missing: bool) -> bytes | None:
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            if not await self.bucket.take(self.stopping):
                raise SourceUnavailable("stopping")
            try:
                async with self.session.get(url, params=params, allow_redirects=False) as answer:
                    if answer.status in (301, 302, 303, 307, 308):
                        url, params = str(answer.url.join(URL(answer.headers.get("Location", "")))), {}
                        if _origin(url) != origin:
                            return None  # elsewhere (Libravatar hands unknown hashes on to Gravatar)
                        continue
                    return await _body(answer, limit, oversized_is_missing)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                raise SourceUnavailable(type(e).__name__) from None
        return None


async def _body(answer: aiohttp.ClientResponse, limit: int, oversized_is_missing: bool) -> bytes | None:
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise SourceUnavailable(f"HTTP {answer.status}", _retry_after(answer.headers.get("Retry-After")))
    if answer.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise SourceUnavailable("compressed although asked not to be")
    body = bytearray()
    async for chunk in answer.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            if oversized_is_missing:
                return None
            raise SourceUnavailable("answer over its bound")
    return bytes(body)


def _retry_after(value: str | None) -> float | None:
    return min(float(value), BACKOFF_MAX) if value is not None and value.isdigit() else None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


def _session(timeout: float) -> aiohttp.ClientSession:
    """No cookies, no proxy from the environment, no compression, one fixed set of headers."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout), cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
        connector=aiohttp.TCPConnector(limit=4), trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"})


# --- Gravatar's profile (REST API v3, GET /profiles/{sha256}), as the card shows it ---------------

def gravatar_fields(document: dict[str, Any]) -> dict[str, Any]:
    """name, organization, title and links from a profile; every value checked, anything else dropped.

    Never its avatar_url: the photo is fetched by harvest and served by InboxLens."""
    fields: dict[str, Any] = {}
    for name, key in (("name", "display_name"), ("organization", "company"), ("title", "job_title")):
        if value := _text(document.get(key)):
            fields[name] = value
    links = list(_links(document))
    if links:
        fields["links"] = links
    return fields


def _links(document: dict[str, Any]) -> Iterator[dict[str, str]]:
    seen: set[str] = set()
    candidates: list[tuple[str, Any, Any]] = [("url", document.get("profile_url"), "Gravatar")]
    for kind, key, label in (("social", "verified_accounts", "service_label"), ("url", "links", "label")):
        entries = document.get(key)
        for entry in entries[:MAX_LINKS] if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("is_hidden") is not True:
                candidates.append((kind, entry.get("url"), entry.get(label)))
    for kind, url, label in candidates:
        value = _url(url)
        if value is not None and value not in seen and len(seen) < MAX_LINKS:
            seen.add(value)
            yield {"kind": kind, "value": value, "label": _text(label) or ""}


def _text(value: Any) -> str | None:
    """A short single line of text, or None; control and format characters dropped."""
    if not isinstance(value, str):
        return None
    kept = "".join(" " if c.isspace() else c for c in value if unicodedata.category(c)[0] != "C" or c.isspace())
    return " ".join(kept.split())[:MAX_TEXT] or None


def _url(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in value):
        return None
    try:
        parts = urlsplit(value)
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and parts.username is None
    except ValueError:
        return None
    return value if valid else None


# --- PostgreSQL ------------------------------------------------------------------------------

async def _store(conn: asyncpg.Connection, item: Work, answer: Answer) -> None:
    """The answer, only while the mailbox is opted in and active (its row locked against an opt-out)."""
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM mail_accounts WHERE id = $1 AND public_profiles AND status = 'active' "
                               "FOR SHARE", item.account_id) is None:
            return
        await conn.execute(
            """INSERT INTO public_profiles (account_id, address_hash, source, found, fields, photo, photo_type,
                                           fetched_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, now())
               ON CONFLICT (account_id, address_hash, source) DO UPDATE SET found = excluded.found,
                   fields = excluded.fields, photo = excluded.photo, photo_type = excluded.photo_type,
                   fetched_at = excluded.fetched_at""",
            item.account_id, item.hash, item.source, answer.found, json.dumps(answer.fields), answer.photo,
            answer.photo_type)


async def forget_public_profiles(conn: asyncpg.Connection, account_id: int) -> None:
    """Turn a mailbox's opt-in off and delete what it brought, in one transaction (web calls it)."""
    async with conn.transaction():
        await conn.execute("UPDATE mail_accounts SET public_profiles = false WHERE id = $1", account_id)
        await conn.execute("DELETE FROM public_profiles WHERE account_id = $1", account_id)


async def public_fields(conn: asyncpg.Connection, account_id: int, address: str) -> list[dict[str, Any]]:
    """The sources that found this address for this mailbox, Gravatar first.

    Each: {"source", "fields" (name, organization, title, links), "has_photo", "photo_type",
    "fetched_at"}; the photo itself comes from ``public_photo``."""
    rows = await conn.fetch(
        """SELECT source, fields, photo_type, fetched_at FROM public_profiles
           WHERE account_id = $1 AND address_hash = $2 AND found
           ORDER BY array_position($3::text[], source)""", account_id, address_hash(address), list(SOURCES))
    return [{"source": r["source"], "fields": _jsonb(r["fields"]), "has_photo": r["photo_type"] is not None,
             "photo_type": r["photo_type"], "fetched_at": r["fetched_at"]} for r in rows]


async def public_photo(conn: asyncpg.Connection, account_id: int, address: str,
                       source: str) -> tuple[bytes, str] | None:
    """(bytes, media type) of the photo a source found for this address and mailbox, or None."""
    row = await conn.fetchrow("SELECT photo, photo_type FROM public_profiles WHERE account_id = $1 "
                              "AND address_hash = $2 AND source = $3 AND found AND photo IS NOT NULL",
                              account_id, address_hash(address), source)
    return None if row is None else (bytes(row["photo"]), str(row["photo_type"]))


def _jsonb(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return loaded if isinstance(loaded, dict) else {}


# --- In harvest ------------------------------------------------------------------------------

def start(config: ProfilesConfig, pool: asyncpg.Pool, metrics: MetricsStore,
          stopping: asyncio.Event) -> asyncio.Task[None] | None:
    """The lookup loop as a task (None when the admin switched every source off)."""
    settings = Settings.of(config)
    if not settings.sources:
        return None
    return asyncio.create_task(Lookups(pool, metrics, settings).run(stopping), name="public-profiles")


async def stop(task: asyncio.Task[None] | None, grace: float = 2.0) -> None:
    """After ``stopping`` is set: give a request in flight ``grace`` seconds, then cancel it."""
    if task is None:
        return
    try:
        await asyncio.wait_for(task, grace)
    except (TimeoutError, asyncio.CancelledError):
        pass
    except Exception as e:  # noqa: BLE001 - never let the lookups stop harvest's clean exit
        log.warning("public profiles: stopped with %s", type(e).__name__)


def _interleave(queues: list[list[Work]]) -> Iterator[Work]:
    """The first of each queue, then the second of each, ...: every mailbox gets its turn."""
    for depth in range(max((len(q) for q in queues), default=0)):
        yield from (q[depth] for q in queues if depth < len(q))


async def _stopped(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; whether ``stopping`` was set."""
    try:
        await asyncio.wait_for(stopping.wait(), max(seconds, 0.0))
    except TimeoutError:
        pass
    return stopping.is_set()
