"""The MetricsStore the configuration names: PostgreSQL (default) or Cassandra."""

from __future__ import annotations

import asyncpg

from inboxlens.config.schema import Config
from inboxlens.metrics.model import InsightSettings
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.metrics.store import MetricsStore


async def open_metrics(config: Config, pool: asyncpg.Pool) -> MetricsStore:
    """PostgreSQL shares the caller's pool; Cassandra connects to its cluster now."""
    settings = InsightSettings.from_config(config.insights)
    if config.metrics.backend == "cassandra":
        from inboxlens.metrics.cassandra.store import open_cassandra

        return await open_cassandra(config.metrics, settings)
    return PgMetricsStore(pool, settings)


async def migrate_metrics(config: Config) -> str | None:
    """Apply the Cassandra schema when that backend is configured (PostgreSQL's is in ``migrate``)."""
    if config.metrics.backend != "cassandra":
        return None
    from inboxlens.metrics.cassandra.store import migrate_cassandra

    await migrate_cassandra(config.metrics)
    return f"cassandra keyspace {config.metrics.cassandra_keyspace}"
