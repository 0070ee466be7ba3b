"""Profiles in PostgreSQL: how a card is written (by a CardDAV sync or a .vcf import) and versioned.

One writer's shape for both writers, so the card's reader (``profiles.read``) sees one kind
of row. A card is a row of ``profile_cards`` (the fields shown, as jsonb; an inline photo
as bytes) and one row of ``profile_addresses`` per address. Every function here runs on
the caller's connection, inside the caller's transaction: a sync or an import applies all
its cards and bumps the user's ``profile_versions`` row in one commit, or nothing.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

import asyncpg

from inboxlens.profiles.vcard import Profile

KINDS = ("carddav", "google", "vcf")  # address_books.kind


def card_fields(profile: Profile) -> dict[str, Any]:
    """What a card shows, as stored in ``profile_cards.fields`` (empty values left out)."""
    fields: dict[str, Any] = {}
    for name in ("name", "organization", "title"):
        if value := getattr(profile, name):
            fields[name] = value
    if profile.links:
        fields["links"] = [{"kind": link.kind, "value": link.value, "label": link.label} for link in profile.links]
    if profile.photo is not None and profile.photo.url:
        fields["photo_url"] = profile.photo.url  # fetched by harvest (egress-checked) or never shown
    return fields


def _photo(profile: Profile) -> tuple[bytes | None, str | None]:
    photo = profile.photo
    return (photo.data, photo.media_type) if photo is not None and photo.data else (None, None)


async def put_cards(connection: asyncpg.Connection, book_id: int, user_id: int,
                    cards: Mapping[str, Profile]) -> None:
    """Insert or replace the cards ``{href: profile}`` of one book, with their addresses."""
    if not cards:
        return
    hrefs = list(cards)
    await connection.execute("DELETE FROM profile_cards WHERE book_id = $1 AND href = ANY($2::text[])",
                             book_id, hrefs)
    await connection.executemany(
        "INSERT INTO profile_cards (book_id, href, fields, photo, photo_type) VALUES ($1, $2, $3::jsonb, $4, $5)",
        [(book_id, href, json.dumps(card_fields(p)), *_photo(p)) for href, p in cards.items()])
    await connection.executemany(
        "INSERT INTO profile_addresses (book_id, href, address, user_id) VALUES ($1, $2, $3, $4)",
        [(book_id, href, address, user_id) for href, p in cards.items() for address in dict.fromkeys(p.emails)])


async def delete_cards(connection: asyncpg.Connection, book_id: int, hrefs: Iterable[str]) -> None:
    """Remove cards of one book (their addresses go with them)."""
    gone = list(hrefs)
    if gone:
        await connection.execute("DELETE FROM profile_cards WHERE book_id = $1 AND href = ANY($2::text[])",
                                 book_id, gone)


async def bump_version(connection: asyncpg.Connection, user_id: int) -> None:
    """Tell every card cache that this user's profiles changed (call in the changing transaction)."""
    await connection.execute(
        """INSERT INTO profile_versions (user_id, version) VALUES ($1, 1)
           ON CONFLICT (user_id) DO UPDATE SET version = profile_versions.version + 1""", user_id)
