"""Owed and awaiting against a reference (hypothesis): generated conversations, both backends.

A mailbox is a few threads, each a chain of messages from you or from people, sometimes
with you only in Bcc, sometimes automated, at times that often fall on the same second.
Each reply names its parent by In-Reply-To and the chain by References, or only one of
them (so that, as in real mail, a thread can come apart into two keys), or a Gmail thread
id holds the thread together. The messages are folded in a random order and in random
chunks; ``expected`` then says, from the headers alone, what docs/insights.md says is owed
and awaited, and every store must list exactly that, page its lists alike, and give each
correspondent's card the totals the lists hold under their name.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inboxlens.db.migrate import migrate
from inboxlens.metrics.model import AccountRef, InsightSettings, RawRow
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.metrics.store import MetricsStore

from .cassandra_support import FakeDb, fake_store

UTC = timezone.utc
OWN = "me@home.test"
NOW = datetime(2024, 6, 20, 12, tzinfo=UTC)
SETTINGS = InsightSettings()  # owed after 1 day, awaiting after 3, 30 days back
PEOPLE = ("ann@x.test", "Bob@Y.test", "cat@z.test")
HOURS = (0, 12, 24, 25, 71, 72, 73, 150, 300, 450, 719, 720, 721, 900)  # owed after 24, awaiting 72, back 720


@dataclass(frozen=True)
class Mail:
    mid: str
    sent_at: datetime
    sender: str  # OWN: sent by you
    to: tuple[str, ...]
    cc: tuple[str, ...]
    irt: tuple[str, ...]
    refs: tuple[str, ...]
    automated: bool
    thread: int | None  # Gmail's thread id, when the mailbox is Gmail

    @property
    def sent(self) -> bool:
        return self.sender == OWN

    @property
    def key(self) -> bytes:
        return hashlib.sha256(b"id\0" + self.mid.encode()).digest()[:16]

    @property
    def correspondents(self) -> list[str]:
        found = [self.sender] if not self.sent else [*self.to, *self.cc]
        return [a for a in dict.fromkeys(a.lower() for a in found) if a != OWN]

    @property
    def thread_key(self) -> object:
        if self.thread is not None:
            return ("gmail", self.thread)
        return (self.refs or self.irt or (self.mid,))[0]

    @property
    def parents(self) -> tuple[str, ...]:
        return self.irt or self.refs[-1:]

    def row(self, account_id: int) -> RawRow:
        return RawRow(account_id, self.key, "INBOX", 1, self.mid, self.irt, self.refs, "", self.sender, None,
                      self.to, self.cc, self.sent_at, self.sent_at, True, "sent" if self.sent else "received",
                      self.automated, gm_thread_id=self.thread)


def expected(mails: Sequence[Mail], now: datetime) -> tuple[list[Mail], list[Mail]]:
    """Owed and awaiting as docs/insights.md defines them, by brute force over the headers."""
    def answered_directly(m: Mail) -> bool:
        return any(r.sent != m.sent and m.mid in r.parents for r in mails)

    def owed(m: Mail) -> bool:
        return (not m.sent and not m.automated and bool(m.correspondents)
                and OWN in (a.lower() for a in m.to + m.cc)
                and now - SETTINGS.lookback <= m.sent_at <= now - SETTINGS.owed_after
                and not any(r.sent and r.thread_key == m.thread_key and r.sent_at >= m.sent_at for r in mails)
                and not answered_directly(m))

    def awaiting(m: Mail) -> bool:
        later = [r for r in mails if r.thread_key == m.thread_key and r is not m
                 and (r.sent_at > m.sent_at or (r.sent_at == m.sent_at and (not r.sent or r.key > m.key)))]
        return (m.sent and bool(m.correspondents) and not later and not answered_directly(m)
                and now - SETTINGS.lookback <= m.sent_at <= now - SETTINGS.awaiting_after)

    order = sorted(mails, key=lambda m: (m.sent_at, m.key))
    return [m for m in order if owed(m)], [m for m in order if awaiting(m)]


@st.composite
def mailboxes(draw: st.DrawFn) -> list[Mail]:
    gmail = draw(st.booleans())
    mails: list[Mail] = []
    for t in range(draw(st.integers(1, 5))):
        # Hours before now, on the windows' edges and often on one another: where rules go wrong.
        hours = sorted(draw(st.lists(st.sampled_from(HOURS), min_size=1, max_size=6)), reverse=True)
        chain: list[str] = []
        for n, h in enumerate(hours):
            mid = f"t{t}m{n}@prop.test"
            sender = draw(st.sampled_from((OWN, OWN, *PEOPLE)))
            others = st.lists(st.sampled_from(PEOPLE), max_size=2).map(tuple)
            to, cc = draw(others), draw(others)
            if sender != OWN:
                where = draw(st.sampled_from(("to", "cc", "bcc")))  # bcc: you are in neither To nor Cc
                to, cc = ((OWN.upper(), *to), cc) if where == "to" else (to, (*cc, OWN)) if where == "cc" else (to, cc)
            irt: tuple[str, ...] = ()
            refs: tuple[str, ...] = ()
            if chain:
                parent = draw(st.sampled_from(chain))
                link = draw(st.sampled_from(("both", "both", "irt", "refs")))
                upto = tuple(chain[:chain.index(parent) + 1])
                irt = (parent,) if link in ("both", "irt") else ()
                refs = upto if link in ("both", "refs") else ()
            mails.append(Mail(mid, NOW - timedelta(hours=h), sender, to, cc, irt, refs,
                              sender != OWN and draw(st.booleans()) and draw(st.booleans()), t if gmail else None))
            chain.append(mid)
    return mails


async def check(store: MetricsStore, account: AccountRef, mails: list[Mail], order: list[int],
                chunks: int) -> None:
    shuffled = [mails[i] for i in order]
    for i in range(chunks):
        await store.write_raw([m.row(account.id) for m in shuffled[i::chunks]])
        await store.aggregate(account)
    owed, awaiting = expected(mails, NOW)

    def seen(found: Sequence[object]) -> list[tuple[str, str | None, datetime]]:
        return [(p.message_id, p.correspondent, p.sent_at) for p in found]  # type: ignore[attr-defined]
    assert seen(await store.owed(account.id, now=NOW)) == [(m.mid, m.correspondents[0], m.sent_at) for m in owed]
    assert seen(await store.awaiting(account.id, now=NOW)) == [(m.mid, m.correspondents[0], m.sent_at)
                                                               for m in awaiting]
    page, total = await store.awaiting_page(account.id, now=NOW, limit=2, offset=1)
    assert (seen(page), total) == ([(m.mid, m.correspondents[0], m.sent_at) for m in awaiting[1:3]], len(awaiting))
    for who in sorted({c for m in mails for c in m.correspondents}):
        card = await store.card(account.id, who, now=NOW)
        assert card is not None
        assert [p.message_id for p in card.owed] == [m.mid for m in owed if m.correspondents[0] == who]
        assert (card.owed_total, card.awaiting_total) == (sum(m.correspondents[0] == who for m in owed),
                                                          sum(m.correspondents[0] == who for m in awaiting))


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[Mail], list[int], int]:
    mails = draw(mailboxes())
    return mails, draw(st.permutations(range(len(mails)))), draw(st.integers(1, 3))


@pytest.fixture
def migrated(pg_db: str) -> str:
    asyncio.run(migrate(pg_db))
    return pg_db


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans())
def test_postgresql_lists_what_the_reference_does(migrated: str, plan: tuple[list[Mail], list[int], int]) -> None:
    async def run() -> None:
        async with asyncpg.create_pool(migrated, min_size=1, max_size=2) as pool:
            await pool.execute("DELETE FROM users")
            user = await pool.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", OWN)
            account = await pool.fetchval("INSERT INTO mail_accounts (user_id, address, provider, time_zone) "
                                          "VALUES ($1, $2, 'test', 'Europe/Berlin') RETURNING id", user, OWN)
            await check(PgMetricsStore(pool, SETTINGS), AccountRef(account, OWN, "Europe/Berlin"), *plan)
    asyncio.run(run())


@settings(max_examples=120, deadline=None)
@given(plan=plans())
def test_cassandra_lists_what_the_reference_does(plan: tuple[list[Mail], list[int], int]) -> None:
    async def run() -> None:
        store = await fake_store(FakeDb(), SETTINGS, NOW)
        await check(store, AccountRef(1, OWN, "Europe/Berlin"), *plan)
    asyncio.run(run())


def test_the_reference_counts_what_a_person_would() -> None:
    """The reference itself, on one conversation worked out by hand."""
    at = [NOW - timedelta(days=d) for d in (9, 8, 7, 5)]
    mails = [Mail("q@x", at[0], "ann@x.test", (OWN,), (), (), (), False, None),
             Mail("r@y", at[1], "bob@y.test", ("ann@x.test",), (OWN,), ("q@x",), ("q@x",), False, None),
             Mail("s@me", at[2], OWN, ("bob@y.test",), (), ("r@y",), ("q@x", "r@y"), False, None),
             Mail("b@x", at[3], "ann@x.test", ("list@x.test",), (), (), (), False, None)]
    owed, awaiting = expected(mails, NOW)
    assert owed == [] and [m.mid for m in awaiting] == ["s@me"]  # q: you wrote later; b: you were only in Bcc
