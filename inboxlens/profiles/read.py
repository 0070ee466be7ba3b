"""The card's ``profile`` block (docs/profiles.md, "On the card"): who a correspondent is, and from where.

Read by web only, for one user's card of one correspondent: the user's own address books
(``profile_addresses`` by (user, address), their cards ordered by book id, then href: the
first card with a field gives it), then, only when the mailbox opted in, its public
profiles (Gravatar: name, organisation, title, photo, links; Libravatar: the photo only).
Each field says its source (the book's kind and label, or the service) and when that
source was refreshed. Links are the union in the same order, repeats dropped.

A photo is never linked to where it came from: its URL is InboxLens's own,
``/api/v1/photos/<opaque>``, where the opaque id is the row's key (user, book or mailbox,
address, source) sealed with a key only web holds (``PhotoIds``): it reveals no address, it
cannot be made up or changed (authenticated encryption), and the photo route still checks
that the row belongs to the caller. The profile version is in the sealed text too, so a
sync gives the photo a new URL and a browser's cached copy is not shown for the new one.

``ProfileCache`` keeps each (mailbox, correspondent)'s block as JSON text until the user's
``profile_versions`` row or the mailbox's opt-in changes (the stamp the card's state lookup
reads in the same statement: ``metrics.postgres.insights``): a sync or an import shows at
the next read, and a card whose profiles did not change reads none of these tables.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Sequence

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

# Not imported from profiles.public: that is harvest's module (it holds a session advisory lock
# web's pool must never see: tests/web/test_pool_reset.py); these two must stay equal to its own.
SOURCES = ("gravatar", "libravatar")  # public.SOURCES: public_profiles.source, in the card's precedence


def address_hash(address: str) -> bytes:
    """public.address_hash: SHA-256 of the lower-cased, stripped address (the row's key)."""
    return hashlib.sha256(address.strip().lower().encode()).digest()


FIELDS = ("name", "organization", "title")
MAX_LINKS = 32
MAX_CARDS = 64  # cards of one address read for a block (duplicates across books; more is not a person)
PROFILE_CACHE = 4096  # (mailbox, correspondent) blocks kept by a web process
MAX_PHOTO_ID = 1200  # characters of an opaque photo id (an address of 320 and the rest fit well within)
LABELS = {"gravatar": "Gravatar", "libravatar": "Libravatar"}
PUBLIC_FIELDS = {"gravatar": FIELDS + ("links",), "libravatar": ()}  # what each service may give besides a photo

# The user's cards for one address, in precedence order; the book must be the user's too.
_CARDS = """
SELECT c.book_id, c.href, c.fields, c.photo_type, c.refreshed_at, b.kind, b.label
FROM profile_addresses a
JOIN profile_cards c ON c.book_id = a.book_id AND c.href = a.href
JOIN address_books b ON b.id = a.book_id AND b.user_id = $1
WHERE a.user_id = $1 AND a.address = $2
ORDER BY c.book_id, c.href LIMIT $3
"""
_PUBLIC = """
SELECT source, fields, photo_type, fetched_at FROM public_profiles
WHERE account_id = $1 AND address_hash = $2 AND found AND source = ANY($3::text[])
"""
_BOOK_PHOTO = """
SELECT c.photo, c.photo_type
FROM profile_addresses a
JOIN profile_cards c ON c.book_id = a.book_id AND c.href = a.href
JOIN address_books b ON b.id = a.book_id AND b.user_id = $1
WHERE a.user_id = $1 AND a.book_id = $2 AND a.address = $3 AND c.photo IS NOT NULL
ORDER BY c.href LIMIT 1
"""
_PUBLIC_PHOTO = """
SELECT p.photo, p.photo_type FROM public_profiles p JOIN mail_accounts m ON m.id = p.account_id
WHERE m.user_id = $1 AND m.public_profiles AND p.account_id = $2 AND p.address_hash = $3 AND p.source = $4
  AND p.found AND p.photo IS NOT NULL
"""
# The stamp, for a metrics store that does not read it with the card's state (Cassandra's).
STAMP = """
SELECT a.user_id, a.public_profiles, coalesce(v.version, 0) AS profile_version
FROM mail_accounts a LEFT JOIN profile_versions v ON v.user_id = a.user_id WHERE a.id = $1
"""


class PhotoIds:
    """Opaque photo ids: the row's key sealed (XSalsa20-Poly1305) with web's own key.

    The nonce is a keyed hash of the text, so one photo keeps one URL (a browser caches it)
    until the profile version in the text moves."""

    def __init__(self, key: bytes) -> None:
        self._box = SecretBox(hmac.new(key, b"inboxlens photo ids v1 box", hashlib.sha256).digest())
        self._nonce_key = hmac.new(key, b"inboxlens photo ids v1 nonce", hashlib.sha256).digest()

    def make(self, *parts: Any) -> str:
        text = json.dumps(parts, separators=(",", ":")).encode()
        nonce = hmac.new(self._nonce_key, text, hashlib.sha256).digest()[:SecretBox.NONCE_SIZE]
        return base64.urlsafe_b64encode(bytes(self._box.encrypt(text, nonce))).rstrip(b"=").decode()

    def read(self, opaque: str) -> list[Any] | None:
        """The parts sealed in ``opaque``, or None for anything this key did not make."""
        if not 0 < len(opaque) <= MAX_PHOTO_ID or not opaque.isascii():
            return None
        try:
            sealed = base64.urlsafe_b64decode(opaque + "=" * (-len(opaque) % 4))
            parts = json.loads(self._box.decrypt(sealed))
        except (ValueError, CryptoError):
            return None
        return parts if isinstance(parts, list) else None


def _jsonb(value: Any) -> dict[str, Any]:
    loaded = json.loads(value) if isinstance(value, str) else value
    return loaded if isinstance(loaded, dict) else {}


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class _Block:
    """A profile block being merged: the first source to give a field keeps it."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {name: None for name in (*FIELDS, "photo")}
        self.links: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()

    def take(self, fields: dict[str, Any], wanted: Sequence[str], source: dict[str, str], at: str) -> None:
        for name in FIELDS:
            value = fields.get(name)
            if name in wanted and self.fields[name] is None and isinstance(value, str) and value:
                self.fields[name] = {"value": value, "source": source, "refreshed_at": at}
        links = fields.get("links") if "links" in wanted else None
        for link in links if isinstance(links, list) else []:
            self._link(link, source, at)

    def _link(self, link: Any, source: dict[str, str], at: str) -> None:
        if not isinstance(link, dict) or len(self.links) >= MAX_LINKS:
            return
        kind, value, label = link.get("kind"), link.get("value"), link.get("label", "")
        if kind not in ("url", "social", "impp") or not isinstance(value, str) or not value \
                or (kind, value) in self._seen:
            return
        self._seen.add((kind, value))
        self.links.append({"kind": kind, "value": value, "label": label if isinstance(label, str) else "",
                           "source": source, "refreshed_at": at})

    def photo(self, url: str, source: dict[str, str], at: str) -> None:
        if self.fields["photo"] is None:
            self.fields["photo"] = {"url": url, "source": source, "refreshed_at": at}

    def answer(self) -> dict[str, Any] | None:
        if not self.links and all(v is None for v in self.fields.values()):
            return None
        return {**self.fields, "links": self.links}


async def profile_block(db: Any, ids: PhotoIds, *, user_id: int, account_id: int, address: str,
                        version: int, public: bool, sources: Sequence[str] = SOURCES) -> dict[str, Any] | None:
    """The card's ``profile`` for this user's mailbox and correspondent (lower-cased), or None.

    ``public``: the mailbox opted in; ``sources``: the public sources the admin left on."""
    block = _Block()
    for row in await db.fetch(_CARDS, user_id, address, MAX_CARDS):
        source = {"kind": str(row["kind"]), "label": str(row["label"])}
        at = _iso(row["refreshed_at"])
        block.take(_jsonb(row["fields"]), FIELDS + ("links",), source, at)
        if row["photo_type"] is not None:
            block.photo(_url(ids.make("b", user_id, int(row["book_id"]), address, version)), source, at)
    wanted = [s for s in SOURCES if s in sources]
    if public and wanted:
        rows = {r["source"]: r for r in await db.fetch(_PUBLIC, account_id, address_hash(address), wanted)}
        for name in wanted:  # Gravatar first, whatever order the rows came in
            row = rows.get(name)
            if row is None:
                continue
            source, at = {"kind": name, "label": LABELS[name]}, _iso(row["fetched_at"])
            block.take(_jsonb(row["fields"]), PUBLIC_FIELDS[name], source, at)
            if row["photo_type"] is not None:
                block.photo(_url(ids.make("p", user_id, account_id, address, name, version)), source, at)
    return block.answer()


def _url(opaque: str) -> str:
    return f"/api/v1/photos/{opaque}"


async def photo(db: Any, ids: PhotoIds, user_id: int, opaque: str) -> tuple[bytes, str] | None:
    """(bytes, media type) of the photo ``opaque`` names, only if it is ``user_id``'s; else None."""
    parts = ids.read(opaque)
    if not parts or parts[1:2] != [user_id]:
        return None
    if parts[0] == "b" and len(parts) == 5 and isinstance(parts[2], int) and isinstance(parts[3], str):
        row = await db.fetchrow(_BOOK_PHOTO, user_id, parts[2], parts[3])
    elif parts[0] == "p" and len(parts) == 6 and isinstance(parts[2], int) and isinstance(parts[3], str) \
            and parts[4] in SOURCES:
        row = await db.fetchrow(_PUBLIC_PHOTO, user_id, parts[2], address_hash(parts[3]), parts[4])
    else:
        return None
    return None if row is None else (bytes(row["photo"]), str(row["photo_type"]))


class ProfileCache:
    """Each (mailbox, correspondent)'s block as JSON text, kept while its stamp holds."""

    def __init__(self, ids: PhotoIds, sources: Sequence[str] = SOURCES, size: int = PROFILE_CACHE) -> None:
        self.ids = ids
        self.sources = tuple(sources)
        self.size = size
        self._kept: OrderedDict[tuple[int, str], tuple[tuple[int, int, bool], str]] = OrderedDict()

    async def block_json(self, db: Any, account_id: int, address: str, state: Any) -> str:
        """``state``: a row with user_id, public_profiles and profile_version (the stamp)."""
        stamp = (int(state["user_id"]), int(state["profile_version"]), bool(state["public_profiles"]))
        key = (account_id, address)
        kept = self._kept.get(key)
        if kept is not None and kept[0] == stamp:
            self._kept.move_to_end(key)
            return kept[1]
        block = await profile_block(db, self.ids, user_id=stamp[0], account_id=account_id, address=address,
                                    version=stamp[1], public=stamp[2], sources=self.sources)
        text = json.dumps(block)
        self._kept[key] = (stamp, text)
        self._kept.move_to_end(key)
        while len(self._kept) > self.size:
            self._kept.popitem(last=False)
        return text
