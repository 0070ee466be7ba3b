"""The authserv-id harvest saw on top of received mail, offered as the one to trust (issue 13.5):
doctor names it with the config line to add, and so does the dashboard's notice."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from inboxlens import doctor
from inboxlens.config.vault import ProviderConfig
from inboxlens.db.migrate import migrate
from inboxlens.web.pages.dashboard import Mailbox, render

LINE = 'trusted_authserv_ids = ["mx.corp.test"] under [providers.corp]'


def test_doctor_offers_the_seen_authserv_id_with_the_line_to_add_and_why() -> None:
    config: Any = SimpleNamespace(web=SimpleNamespace(base_url="https://lens.test"))
    provider = ProviderConfig(issuer="https://id.corp.test", client_id="c", client_secrets=("s",),
                              imap_host="imap.corp.test")
    [warn, _] = doctor._provider(config, "corp", provider, "mx.corp.test")
    assert warn.status == doctor.WARN and LINE in warn.detail and doctor.WHY_OWN_SERVER in warn.detail
    [unseen, _] = doctor._provider(config, "corp", provider)
    assert "trusted_authserv_ids" in unseen.detail and "[" not in unseen.detail and "mx." not in unseen.detail
    trusted = ProviderConfig(issuer="https://id.corp.test", client_id="c", client_secrets=("s",),
                             imap_host="imap.corp.test", trusted_authserv_ids=("mx.corp.test",))
    assert [c.status for c in doctor._provider(config, "corp", trusted, "mx.corp.test")] == [doctor.OK]


def test_doctor_reads_per_provider_what_most_accounts_saw(pg_db: str) -> None:
    async def run() -> dict[str, str]:
        await migrate(pg_db)
        async with asyncpg.create_pool(pg_db, min_size=1, max_size=1) as pool:
            for i, (provider, seen) in enumerate([("corp", "mx.corp.test"), ("corp", "mx.corp.test"),
                                                  ("corp", "relay.corp.test"), ("corp", None),
                                                  ("other", "mx.other.test")]):
                user = await pool.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", f"u{i}@x.test")
                account = await pool.fetchval("INSERT INTO mail_accounts (user_id, address, provider) "
                                              "VALUES ($1, $2, $3) RETURNING id", user, f"u{i}@x.test", provider)
                await pool.execute("INSERT INTO harvest_state (account_id, seen_authserv_id) VALUES ($1, $2)",
                                   account, seen)
        config: Any = SimpleNamespace(database=SimpleNamespace(dsn=pg_db))
        return await doctor._seen_authserv_ids(config)
    assert asyncio.run(run()) == {"corp": "mx.corp.test", "other": "mx.other.test"}


def test_doctor_without_a_database_offers_nothing() -> None:
    config: Any = SimpleNamespace(database=SimpleNamespace(dsn="postgresql://nobody@127.0.0.1:1/none"))
    assert asyncio.run(doctor._seen_authserv_ids(config)) == {}


def test_the_dashboard_names_it_too() -> None:
    def box(**account: Any) -> Mailbox:
        row = {"id": 7, "address": "me@corp.test", "status": "active", "last_sync_at": None, "messages_seen": 0,
               "failures": 0, "last_error": None, "provider": "corp", "authenticity_off": True, **account}
        return Mailbox(row, ZoneInfo("Europe/Paris"), date(2024, 7, 1), None)
    now = datetime(2024, 7, 1, 12, tzinfo=timezone.utc)
    offered = render([box(seen_authserv_id="mx.corp.test")], now, 30, None)
    assert "trusted_authserv_ids = [&quot;mx.corp.test&quot;] under [providers.corp]" in offered
    assert "anyone can write that header" in offered
    plain = render([box(seen_authserv_id=None)], now, 30, None)
    assert "providers.corp.trusted_authserv_ids" in plain and "mx.corp.test" not in plain
