"""Issue 15.2: a node of a 3-node Cassandra cluster dies during a fold and during card reads.

Three nodes on 127.0.0.1-3 (conftest.py), a keyspace with replication factor 3 created by
the product's ``migrate_cassandra``, the store (``open_cassandra``) at LOCAL_QUORUM. The
mailbox is the contract suite's story (tests/metrics/test_contract.py, answers worked out
by hand) plus ~1,000 generated messages with 30 more correspondents, so a fold has a few
thousand statements to run.

1. Healthy: the mailbox folded into keyspace A; its answers are the reference.
2. Outage: the same mailbox written to keyspace B and folded while a task SIGKILLs
   127.0.0.2 once a third of the healthy fold's statements have gone out, and readers ask
   keyspace A for cards (what the API's card page reads) the whole time. A fold that
   fails with MetricsUnavailable is run again (the fold is idempotent; raw rows go last)
   within FOLD_BOUND seconds. Every answer of B must equal A's: nothing counted twice.
3. Recovery: the node started again, back up and NORMAL everywhere; B and A still answer
   the same at LOCAL_QUORUM (the restarted replica is repaired by hints and read repair).

Timings are printed (run with -s to see them) and recorded in docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import statistics
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from inboxlens.config.schema import MetricsConfig
from inboxlens.metrics.cassandra.store import CassandraMetricsStore, migrate_cassandra, open_cassandra
from inboxlens.metrics.model import AccountRef, RawRow
from inboxlens.service_errors import MetricsUnavailable

from tests.metrics.test_contract import EVER, NOW, OWN, PASS, SETTINGS, ZONE, at, message, story

from .conftest import ADDRESSES, Cluster3, wait_ring_up

FOLD_BOUND = 180.0  # seconds for a fold through an outage, retries included
RETRY_PAUSE = 1.0
READ_GAP_BOUND = 15.0  # longest time the card readers may go without an answer
VICTIM = 1  # 127.0.0.2
RECOVERY_BOUND = 60.0  # seconds after the restarted node is UN until every answer is the reference


def keyspaces_on(address: str, port: int) -> set[str]:
    """The keyspaces one node knows, asked directly."""
    from cassandra import ProtocolVersion
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import WhiteListRoundRobinPolicy
    profile = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([address]))
    cluster = Cluster([address], port=port, protocol_version=ProtocolVersion.V5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        return {r.keyspace_name for r in cluster.connect().execute("SELECT keyspace_name FROM system_schema.keyspaces")}
    finally:
        cluster.shutdown()


def config(cluster: Cluster3, keyspace: str) -> MetricsConfig:
    return MetricsConfig(backend="cassandra", cassandra_hosts=cluster.hosts, cassandra_keyspace=keyspace,
                         cassandra_replication_factor=3, cassandra_timeout_seconds=10.0)


def mailbox(account: AccountRef) -> list[RawRow]:
    """The contract story and 30 more people: threads of questions, answers, and open ones."""
    rows = list(story(account))
    for p in range(30):
        who = f"person{p}@corp{p % 6}.test"
        for t in range(17):
            day, hour = 1 + (p + 3 * t) % 19, 6 + (p + t) % 10
            asked = f"q{p}.{t}@corp{p % 6}.test"
            rows.append(message(account, asked, at(day, hour, (7 * t) % 60), who, auth=PASS if t % 5 else (None,) * 3))
            if (p + t) % 3 != 0:  # you answer two in three, after minutes to a day
                reply = f"r{p}.{t}@home.test"
                rows.append(message(account, reply, at(day, hour) + timedelta(minutes=20 + 90 * ((p * t) % 17)), who,
                                    "sent", irt=asked))
                if t % 4 == 0:  # and they answer back
                    rows.append(message(account, f"b{p}.{t}@corp{p % 6}.test",
                                        at(day, hour) + timedelta(hours=30), who, irt=reply, auth=PASS))
    return rows


def people(rows: list[RawRow]) -> list[str]:
    found = ({r.from_address or "" for r in rows if r.direction == "received"}
             | {t for r in rows if r.direction == "sent" for t in r.to_addresses})
    return sorted(found - {OWN, ""})


async def answers(store: CassandraMetricsStore, account: AccountRef, who: list[str]) -> tuple[Any, ...]:
    s, a = store, account.id
    return (await s.daily(a, *EVER), await s.weekly(a, *EVER), await s.monthly(a, *EVER),
            await s.correspondents(a, *EVER), await s.relationships(a, now=NOW, limit=1000),
            [await s.card(a, w, now=NOW) for w in who], await s.owed(a, now=NOW), await s.awaiting(a, now=NOW),
            await s.sender_domains(a), await s.auth_flags(a))


class Counted:
    """Counts the statements a store sends (CqlSession.run: every write, and reads whose rows do not matter)."""

    def __init__(self, store: CassandraMetricsStore) -> None:
        self.count = 0
        cql = store._cql
        original = cql.run

        async def run(name: str, *params: Any) -> None:
            self.count += 1
            await original(name, *params)
        cql.run = run  # type: ignore[method-assign]


@dataclass
class Reads:
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (when, seconds) of answered reads
    failures: list[tuple[float, str]] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


async def read_cards(store: CassandraMetricsStore, account: AccountRef, expected: dict[str, Any],
                     stop: asyncio.Event, reads: Reads) -> None:
    """What the API does for card pages, one after another, until stop; failures are retried by the next read."""
    who = list(expected)
    i = 0
    while not stop.is_set():
        w = who[i % len(who)]
        i += 1
        started = time.monotonic()
        try:
            card = await store.card(account.id, w, now=NOW)
        except MetricsUnavailable as e:
            reads.failures.append((started, f"{type(e).__name__}: {str(e)[:160]}"))
            await asyncio.sleep(0.2)
            continue
        reads.latencies.append((started, time.monotonic() - started))
        if card != expected[w]:
            reads.wrong.append(w)


async def fold_with_retries(store: CassandraMetricsStore, account: AccountRef, bound: float) -> tuple[int, list[str]]:
    """aggregate() until it completes; the errors it raised on the way."""
    deadline = time.monotonic() + bound
    errors: list[str] = []
    while True:
        try:
            await store.aggregate(account, batch_size=250)
            return len(errors) + 1, errors
        except MetricsUnavailable as e:
            errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            assert time.monotonic() < deadline, f"the fold did not complete within {bound} s: {errors}"
            await asyncio.sleep(RETRY_PAUSE)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] if len(values) > 1 else (values or [0.0])[0]


async def test_a_node_dies_during_a_fold_and_card_reads(three_nodes: Cluster3) -> None:
    cluster = three_nodes
    report: list[str] = [f"cluster of 3 up (all UN) in {cluster.start_seconds:.1f} s"]
    healthy_ks, outage_ks = (f"inboxlens_cluster_{n}_{secrets.token_hex(4)}" for n in ("healthy", "outage"))
    for keyspace in (healthy_ks, outage_ks):
        started = time.monotonic()
        await migrate_cassandra(config(cluster, keyspace))
        report.append(f"migrate {keyspace} (RF 3): {time.monotonic() - started:.1f} s")
    healthy = await open_cassandra(config(cluster, healthy_ks), SETTINGS)
    outage = await open_cassandra(config(cluster, outage_ks), SETTINGS)
    account = AccountRef(7, OWN, ZONE)
    rows = mailbox(account)
    who = people(rows)
    try:
        # 1. healthy
        counter = Counted(healthy)
        assert await healthy.write_raw(rows) == len(rows)
        started = time.monotonic()
        result = await healthy.aggregate(account, batch_size=250)
        healthy_fold = time.monotonic() - started
        assert result.folded == len(rows) and result.duplicates == 0
        statements = counter.count
        reference = await answers(healthy, account, who)
        cards = dict(zip(who, reference[5]))
        assert cards["alice@work.test"] is not None and cards["alice@work.test"].replies.yours.count == 2
        assert cards["dave@gmail.test"] is not None and cards["dave@gmail.test"].replies.theirs.median == 86400
        assert sum(d.received + d.sent for d in reference[0]) == len(rows)
        report.append(f"healthy fold: {len(rows)} messages, {statements} statements, {healthy_fold:.1f} s")

        # 2. outage
        assert await outage.write_raw(rows) == len(rows)
        victim = cluster.nodes[VICTIM]
        outage_count = Counted(outage)
        killed_at: list[float] = []

        async def kill_midway() -> None:
            while outage_count.count < statements // 3:
                await asyncio.sleep(0.01)
            pid = victim.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

        stop_reading, reads = asyncio.Event(), Reads()
        readers = [asyncio.create_task(read_cards(healthy, account, cards, stop_reading, reads)) for _ in range(2)]
        killer = asyncio.create_task(kill_midway())
        started = time.monotonic()
        attempts, errors = await fold_with_retries(outage, account, FOLD_BOUND)
        outage_fold = time.monotonic() - started
        await asyncio.wait_for(killer, 5.0)
        # keep reading for 20 s after the kill whatever the fold took: the failure detector's time
        await asyncio.sleep(max(0.0, killed_at[0] + 20.0 - time.monotonic()))
        stop_reading.set()
        await asyncio.gather(*readers)
        assert victim.pid() is None
        report.append(f"fold with 127.0.0.2 killed after {outage_count.count and statements // 3} statements: "
                      f"{outage_fold:.1f} s, {attempts} attempt(s); errors: {errors}")
        during = [s for t, s in reads.latencies if t >= killed_at[0]]
        report.append(f"card reads after the kill: {len(during)} answered, {len(reads.failures)} failed, "
                      f"p50 {quantile(during, 0.5) * 1000:.0f} ms, p95 {quantile(during, 0.95) * 1000:.0f} ms, "
                      f"max {max(during) * 1000:.0f} ms; failures: {reads.failures[:3]}")
        before = [s for t, s in reads.latencies if t < killed_at[0]]
        if before:
            report.append(f"card reads before the kill: {len(before)}, p50 {quantile(before, 0.5) * 1000:.0f} ms")
        assert not reads.wrong, f"cards answered differently from the healthy fold: {reads.wrong}"
        times = sorted([t for t, _ in reads.latencies] + [killed_at[0], time.monotonic()])
        gap = max(b - a for a, b in zip(times, times[1:]) if b >= killed_at[0])
        report.append(f"longest time without a card answer after the kill: {gap:.1f} s")
        assert gap < READ_GAP_BOUND, report
        assert during, "no card read answered after the kill"
        got = await answers(outage, account, who)
        assert got == reference, "a fold through an outage answered differently (counted twice?)"
        again = await outage.aggregate(account)
        assert (again.folded, again.duplicates) == (0, 0), "raw rows left behind"

        # 3. recovery
        started = time.monotonic()
        victim.start()
        victim.wait_ready(240.0)
        ready = time.monotonic() - started
        up = await asyncio.get_running_loop().run_in_executor(None, wait_ring_up, ADDRESSES, cluster.port)
        report.append(f"127.0.0.2 restarted: native port answering after {ready:.1f} s, UN everywhere and one "
                      f"schema after {ready + up:.1f} s")
        started = time.monotonic()
        while not all(h.is_up for h in outage._cql.cluster.metadata.all_hosts()):
            assert time.monotonic() - started < 60, "the driver did not see the node come back"
            await asyncio.sleep(0.5)
        report.append(f"driver sees 3 hosts up {time.monotonic() - started:.1f} s later")
        seen = keyspaces_on(ADDRESSES[VICTIM], cluster.port)
        report.append(f"keyspaces 127.0.0.2 knows once UN: healthy {healthy_ks in seen}, outage {outage_ks in seen}")
        started = time.monotonic()
        failures = []
        while True:  # what a client of the API does on a 503: ask again
            try:
                assert await answers(outage, account, who) == reference
                assert await answers(healthy, account, who) == reference
                break
            except MetricsUnavailable as e:
                failures.append(str(e)[:200])
                assert time.monotonic() - started < RECOVERY_BOUND, f"no answers after the restart: {failures}"
                await asyncio.sleep(RETRY_PAUSE)
        report.append(f"after the restart: the same answers {time.monotonic() - started:.1f} s after UN, "
                      f"{len(failures)} failed attempt(s) before: {failures[:2]}")
        started = time.monotonic()
        for w in who[:10]:
            assert await healthy.card(account.id, w, now=NOW) == cards[w]
        report.append(f"after recovery: same answers; 10 cards in {time.monotonic() - started:.2f} s")
    finally:
        print("\n" + "\n".join(report))
        await healthy.close()
        await outage.close()
