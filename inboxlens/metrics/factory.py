"""The MetricsStore the configuration names: PostgreSQL (default) or Cassandra."""

from __future__ import annotations

import asyncpg

from ..config import Config
from .pg import PgMetricsStore
from .store import MetricsStore


async def open_metrics(config: Config, pool: asyncpg.Pool) -> MetricsStore:
    """PostgreSQL shares the caller's pool; Cassandra connects to its cluster now."""
    settings = config.insights.settings()
    if config.metrics.backend == "cassandra":
        from .cassandra import open_cassandra  # the driver loads only when it is used

        return await open_cassandra(config.metrics, settings)
    return PgMetricsStore(pool, settings)


async def migrate_metrics(config: Config) -> str | None:
    """Apply the Cassandra schema when that backend is configured (PostgreSQL's is in ``migrate``)."""
    if config.metrics.backend != "cassandra":
        return None
    from .cassandra import migrate_cassandra

    await migrate_cassandra(config.metrics)
    return f"cassandra keyspace {config.metrics.cassandra_keyspace}"
