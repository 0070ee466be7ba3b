"""Metrics: raw header rows folded into rollups (and, later, insights).

- ``rollups``: ``aggregate()`` folds an account's raw rows into the daily tables, exactly
  once; ``daily()``, ``weekly()``, ``monthly()`` and ``correspondents_daily()`` read them.
  PostgreSQL only for now; the schema is ``migrations/004_rollups.sql``.
"""
