"""Harvest's PostgreSQL side: leases, checkpoints and raw header rows.

A batch's raw rows go to the MetricsStore (idempotent by message), then the checkpoint
that covers them is advanced, only while this process still holds the account's lease
(the transaction checks it), so a crash or a lost lease resumes with no gap and no
duplicate.
A message is stored once per account (``msg_key``), whichever mailbox, UID or
UIDVALIDITY it was fetched under.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

import asyncpg

from inboxlens.metrics import keys
from inboxlens.metrics.model import RawRow
from inboxlens.metrics.store import MetricsStore
from inboxlens.harvest.headers.parse import Address, HeaderRecord, is_automated
from inboxlens.service_errors import LeaseLost

EARLIEST_DATE = datetime(1970, 1, 1, tzinfo=timezone.utc)  # a Date before this is not believed ...
DATE_AHEAD = timedelta(days=1)  # ... nor one this far after the server received the message


@dataclass(frozen=True)
class Account:
    id: int
    address: str
    provider: str
    time_zone: str
    first_sync_done: bool


async def schedule_new_accounts(pool: asyncpg.Pool) -> int:
    status = await pool.execute("INSERT INTO harvest_state (account_id) SELECT id FROM mail_accounts "
                                "ON CONFLICT (account_id) DO NOTHING")
    return int(str(status).split()[-1])


async def claim_due(pool: asyncpg.Pool, owner: str, lease: timedelta, limit: int,
                    account_id: int | None = None) -> list[Account]:
    """Lease up to ``limit`` due, active accounts no one else holds (or one named account)."""
    rows = await pool.fetch(
        """
        UPDATE harvest_state h SET lease_owner = $1, lease_expires_at = now() + $2
        FROM mail_accounts a
        WHERE h.account_id = a.id AND h.account_id IN (
            SELECT s.account_id FROM harvest_state s JOIN mail_accounts m ON m.id = s.account_id
            WHERE m.status = 'active' AND (s.lease_expires_at IS NULL OR s.lease_expires_at < now())
              AND (($4::bigint IS NULL AND s.next_run_at <= now()) OR s.account_id = $4::bigint)
            ORDER BY s.next_run_at LIMIT $3 FOR UPDATE OF s SKIP LOCKED)
        RETURNING a.id, a.address, a.provider, a.time_zone, h.first_sync_done
        """, owner, lease, limit, account_id)
    return [Account(r["id"], r["address"], r["provider"], r["time_zone"], r["first_sync_done"]) for r in rows]


async def renew(conn: asyncpg.Connection | asyncpg.Pool, account_id: int, owner: str, lease: timedelta) -> None:
    status = await conn.execute("UPDATE harvest_state SET lease_expires_at = now() + $3 "
                                "WHERE account_id = $1 AND lease_owner = $2 AND lease_expires_at > now()",
                                account_id, owner, lease)
    if str(status) != "UPDATE 1":
        raise LeaseLost(f"lost the lease on account {account_id}")


async def release(pool: asyncpg.Pool, account_id: int, owner: str, next_run: timedelta,
                  error: str | None = None, first_sync_done: bool = False, authserv_id: str | None = None) -> None:
    """Give the account back, due again after ``next_run``; count consecutive failures. With
    ``authserv_id``, what topped most of the sync's received mail replaces the one seen before."""
    await pool.execute(
        """UPDATE harvest_state SET lease_owner = NULL, lease_expires_at = NULL, next_run_at = now() + $3,
               last_error = $4, failures = CASE WHEN $4::text IS NULL THEN 0 ELSE failures + 1 END,
               first_sync_done = first_sync_done OR $5, seen_authserv_id = coalesce($6, seen_authserv_id)
           WHERE account_id = $1 AND lease_owner = $2""", account_id, owner, next_run, error, first_sync_done,
        authserv_id)
    if error is None:
        await pool.execute("UPDATE mail_accounts SET last_sync_at = now() WHERE id = $1", account_id)


async def failures(pool: asyncpg.Pool, account_id: int) -> int:
    return int(await pool.fetchval("SELECT failures FROM harvest_state WHERE account_id = $1", account_id) or 0)


async def set_account_status(pool: asyncpg.Pool, account_id: int, status: str) -> None:
    await pool.execute("UPDATE mail_accounts SET status = $2 WHERE id = $1", account_id, status)


async def checkpoint(pool: asyncpg.Pool, account_id: int, mailbox: str) -> tuple[int, int] | None:
    row = await pool.fetchrow("SELECT uidvalidity, last_uid FROM mailbox_checkpoints "
                              "WHERE account_id = $1 AND mailbox = $2", account_id, mailbox)
    return (int(row["uidvalidity"]), int(row["last_uid"])) if row else None


async def reset_checkpoint(pool: asyncpg.Pool, account_id: int, mailbox: str, uidvalidity: int) -> None:
    """A new UIDVALIDITY: UIDs start over. Rows already stored stay (msg_key keeps them single)."""
    await pool.execute("INSERT INTO mailbox_checkpoints (account_id, mailbox, uidvalidity, last_uid) "
                       "VALUES ($1, $2, $3, 0) ON CONFLICT (account_id, mailbox) DO UPDATE "
                       "SET uidvalidity = excluded.uidvalidity, last_uid = 0", account_id, mailbox, uidvalidity)


async def store_batch(pool: asyncpg.Pool, metrics: MetricsStore, account: Account, owner: str, lease: timedelta,
                      mailbox: str, uidvalidity: int, last_uid: int, records: Sequence[HeaderRecord],
                      own_addresses: frozenset[str]) -> int:
    """Rows first (idempotent: a crash before the checkpoint refetches them, and they count
    once), then the checkpoint, under the lease; returns how many rows were new."""
    inserted = await metrics.write_raw([raw_row(account.id, mailbox, r, own_addresses) for r in records])
    async with pool.acquire() as conn, conn.transaction():
        await renew(conn, account.id, owner, lease)
        await conn.execute("UPDATE mailbox_checkpoints SET last_uid = $4 WHERE account_id = $1 AND mailbox = $2 "
                           "AND uidvalidity = $3 AND last_uid < $4", account.id, mailbox, uidvalidity, last_uid)
        await conn.execute("UPDATE harvest_state SET messages_seen = messages_seen + $2 WHERE account_id = $1",
                           account.id, inserted)
    return inserted


def msg_key(record: HeaderRecord) -> bytes:
    """``metrics.keys.msg_key`` of a parsed message (the one definition both metric backends share)."""
    return keys.msg_key(record.message_id, record.sender.address if record.sender else "",
                        record.date or record.internal_date, record.subject, [a.address for a in record.to])


def sent_at(r: HeaderRecord) -> tuple[datetime, bool]:
    """When the message was sent, and whether its Date header said so: the Date header
    unless it is missing, before 1970, or more than DATE_AHEAD after the server received
    the message (INTERNALDATE), which is then used instead. A Date can be far older than
    INTERNALDATE (mail copied in from elsewhere), but not from the future: such a date is
    a broken clock or a forgery, and would put the message on a day it was not sent."""
    if r.date is not None and EARLIEST_DATE <= r.date <= r.internal_date + DATE_AHEAD:
        return r.date, True
    return r.internal_date, False


def raw_row(account_id: int, mailbox: str, r: HeaderRecord, own: frozenset[str]) -> RawRow:
    # Addresses are stored and compared lower-cased (Address.key): one correspondent, one spelling.
    sender = r.sender.key if r.sender and r.sender.address else None
    when, reliable = sent_at(r)
    return RawRow(
        account_id, msg_key(r), mailbox, r.uid, r.message_id, tuple(r.in_reply_to), tuple(r.references), r.subject,
        sender, r.sender.name if r.sender else None, _addresses(r.to), _addresses(r.cc), when,
        r.internal_date, reliable, "sent" if sender is not None and sender in own else "received",
        is_automated(r), r.list_id, r.auth.dkim, r.auth.spf, r.auth.dmarc,
        tuple(sorted({d for d, _ in r.dkim_signatures})), r.gm_thrid, tuple(f"{d}/{s}" for d, s in r.dkim_signatures))


def _addresses(addresses: Iterable[Address]) -> tuple[str, ...]:
    return tuple(a.key for a in addresses if a.address)
