""".vcf import (web's Settings): a file becomes one address book of kind 'vcf', in one transaction.

The file is parsed whole first (``vcard.parse_vcards``, in a worker thread: up to 16 MiB and
10,000 cards), which refuses a bad file whole (``BadVCard``): nothing is written. Then the book
and every card go in one transaction with the user's profile version bumped: a failure at any
point leaves nothing behind (no half-imported book). Cards are named ``vcf:<n>`` (their place
in the file): the href is only a key, never shown, and says nothing of the person.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

import asyncpg

from inboxlens.profiles import rows
from inboxlens.profiles.vcard import DEFAULT_LIMITS, Parsed, VCardLimits, parse_vcards


@dataclass(frozen=True)
class Imported:
    book_id: int
    cards: int
    skipped: Mapping[str, int]  # why cards were left out, counted (reasons quote nothing of a card)
    dropped: Mapping[str, int]  # why values of kept cards were left out, counted


async def parse(data: bytes, limits: VCardLimits = DEFAULT_LIMITS) -> Parsed:
    """``parse_vcards`` off the event loop (a large file takes seconds); BadVCard refuses it whole."""
    return await asyncio.to_thread(parse_vcards, data, limits)


async def import_vcf(pool: asyncpg.Pool, user_id: int, label: str, parsed: Parsed,
                     check: Callable[[asyncpg.Connection], Awaitable[None]] | None = None) -> Imported:
    """Write a parsed file as a new 'vcf' book, all in one transaction.

    ``check(conn)``, awaited first inside the transaction, may refuse (web's book limit)."""
    async with pool.acquire() as conn, conn.transaction():
        if check is not None:
            await check(conn)
        book_id = int(await conn.fetchval(
            "INSERT INTO address_books (user_id, kind, label) VALUES ($1, 'vcf', $2) RETURNING id", user_id, label))
        await rows.put_cards(conn, book_id, user_id, {f"vcf:{n}": p for n, p in enumerate(parsed.profiles, 1)})
        await rows.bump_version(conn, user_id)
    return Imported(book_id, len(parsed.profiles), parsed.skipped, parsed.dropped)
