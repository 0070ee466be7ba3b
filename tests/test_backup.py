"""The parts of backup and restore that need no process: passwords kept out of argv, tool choice."""

from __future__ import annotations

from inboxlens.backup import split_password


def test_a_password_goes_into_the_environment_never_into_the_command_line():
    for dsn in ("postgresql://app:s3cr%40t-77@db.example:5433/inbox?sslmode=require",
                "postgresql://app@db.example:5433/inbox?password=s3cr@t-77&sslmode=require"):
        clean, env = split_password(dsn)
        assert "s3cr" not in clean and env["PGPASSWORD"] == "s3cr@t-77"
        assert clean.startswith("postgresql://app@db.example:5433/inbox?") and "sslmode=require" in clean


def test_a_dsn_without_a_password_is_left_as_it_is():
    clean, env = split_password("postgresql://inboxlens-db@/postgres?host=/run/inboxlens/pg")
    assert "PGPASSWORD" not in env and clean.startswith("postgresql://inboxlens-db@/postgres?host=")
