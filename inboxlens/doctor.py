"""``inboxlens doctor``: what ``serve`` would refuse, and what would fail later, as a checklist.

Each line is ``ok``, ``warn`` (works, but not as you may expect) or ``FAIL`` (serve or a
connect would fail), with what to change. Network checks (issuer discovery, IMAP hosts,
the database, Cassandra) are bounded by a few seconds each and go only where the
configuration points. Nothing is printed that holds a secret: client secrets, DSN
passwords and keys are named, never shown.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterator

from inboxlens.config.schema import DEFAULT_PROVIDERS, Config
from inboxlens.config.vault import ProviderConfig

TIMEOUT = 4.0  # seconds, for every network check
OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    status: str
    subject: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.subject}: {self.detail}"


def run(config: Config) -> int:
    """Print the checklist; exit status 1 when anything FAILs."""
    untrusted = [n for n, p in config.providers.items() if p.client_id and not p.trusted_authserv_ids]
    seen = asyncio.run(_seen_authserv_ids(config)) if untrusted else {}
    checks = [*_basics(config), *_keys(config), *_web(config), *_providers(config, seen)]
    checks += asyncio.run(_services(config))
    for check in checks:
        print(check.line())
    failed = sum(c.status == FAIL for c in checks)
    print(f"{failed} check(s) failed" if failed else "every check passed")
    return 1 if failed else 0


def _basics(config: Config) -> Iterator[Check]:
    yield Check(OK, "config", f"state {config.state_dir}, runtime {config.runtime_dir}")
    yield Check(OK, "mode", "root (separate uids)" if os.geteuid() == 0 else "development (one uid for every child)")


def _keys(config: Config) -> Iterator[Check]:
    vault_dir = config.vault_dir
    try:
        if not (vault_dir / "keyset.json").exists():
            yield Check(FAIL, "keys", f"no keyset in {vault_dir}: run 'inboxlens keys init'")
            return
        mode = stat.S_IMODE(vault_dir.stat().st_mode)
        if mode & 0o077:
            yield Check(FAIL, "keys", f"{vault_dir} is open to group/others (mode {mode:o}); it must be 0700")
        for secret in sorted(vault_dir.glob("key-*.secret")):
            if stat.S_IMODE(secret.stat().st_mode) != 0o400:
                yield Check(FAIL, "keys", f"{secret} has mode {stat.S_IMODE(secret.stat().st_mode):o}; it must be 0400")
    except PermissionError:
        raise  # the state is not ours to read: the CLI says who may run doctor, in one line
    yield Check(OK, "keys", f"keyset in {vault_dir}")


def _web(config: Config) -> Iterator[Check]:
    web = config.web
    if web.port < 1024 and os.geteuid() != 0:
        yield Check(FAIL, "web", f"port {web.port} needs root to bind; choose web.port 1024 or above")
        return
    try:
        with socket.create_server((web.host, web.port)):
            pass
        yield Check(OK, "web", f"{web.host}:{web.port} is free; browsers use {web.base_url}")
    except OSError as e:
        running = config.vault_socket.exists()
        yield Check(OK if running else FAIL, "web", f"{web.host}:{web.port} cannot be bound ({e.strerror})"
                    + ("; the service seems to run" if running else ": serve would fail"))


def _providers(config: Config, seen: dict[str, str]) -> Iterator[Check]:
    configured = [(n, p) for n, p in config.providers.items() if p.client_id]
    if not configured:
        yield Check(WARN, "providers", "none has a client_id: nobody can connect a mailbox yet "
                    "(docs/providers.md; the redirect URI to register is "
                    f"{config.web.base_url}/oauth/<name>/callback)")
    for name, provider in config.providers.items():
        if provider.client_id or name not in DEFAULT_PROVIDERS:
            yield from _provider(config, name, provider, seen.get(name))


def _provider(config: Config, name: str, p: ProviderConfig, seen: str | None = None) -> Iterator[Check]:
    subject = f"provider {name}"
    if name not in DEFAULT_PROVIDERS and not (p.issuer or p.token_url):
        yield Check(FAIL, subject, f"not a built-in provider ({', '.join(DEFAULT_PROVIDERS)}) and it has neither "
                    "issuer nor token_url: a misspelt name?")
        return
    if not p.client_id:
        yield Check(WARN, subject, "no client_id: it is not offered on the home page")
        return
    if not p.client_secrets:
        yield Check(WARN, subject, "a client_id without client_secrets: most providers refuse the code exchange")
    if not p.imap_host:
        yield Check(FAIL, subject, "no imap_host: harvest has no server to read")
    if not p.trusted_authserv_ids:
        yield Check(WARN, subject, authserv_advice(name, seen))
    yield Check(OK, subject, f"redirect URI to register: {config.web.base_url}/oauth/{name}/callback")


WHY_OWN_SERVER = ("only your own server's results count: anyone can write an Authentication-Results header, "
                  "and your server adds its own on top of every message it receives")


def authserv_advice(provider: str, seen: str | None) -> str:
    """What to do about a provider that trusts no authserv-id: the config line, when harvest saw one."""
    off = "sender authenticity is off: no authserv-id is trusted, so DKIM/SPF/DMARC results are never counted. "
    if seen is None:
        return (off + "Set trusted_authserv_ids to your mail server's (the name that starts the "
                "Authentication-Results header of mail you received; harvest names it after a sync); " + WHY_OWN_SERVER)
    return (off + f"Received mail is topped by {seen!r}'s; if that is your mail server, add "
            f'trusted_authserv_ids = ["{seen}"] under [providers.{provider}] ({WHY_OWN_SERVER})')


async def _seen_authserv_ids(config: Config) -> dict[str, str]:
    """Per provider, the authserv-id harvest saw on top of the most of its accounts' received mail;
    nothing when the database is not reachable (the database check says why) or not migrated."""
    dsn = _reachable_dsn(config)
    if dsn is None:
        return {}
    import asyncpg
    try:
        connection = await asyncpg.connect(dsn, timeout=TIMEOUT)
        try:
            rows = await connection.fetch(
                "SELECT DISTINCT ON (a.provider) a.provider, h.seen_authserv_id FROM mail_accounts a "
                "JOIN harvest_state h ON h.account_id = a.id WHERE h.seen_authserv_id IS NOT NULL "
                "GROUP BY 1, 2 ORDER BY a.provider, count(*) DESC, h.seen_authserv_id", timeout=TIMEOUT)
        finally:
            await connection.close()
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return {}
    return {str(r["provider"]): str(r["seen_authserv_id"]) for r in rows}


def _reachable_dsn(config: Config) -> str | None:
    """The configured DSN, or the embedded server's while it runs (never started here)."""
    if config.database.dsn:
        return config.database.dsn
    from inboxlens import paths
    from inboxlens.db.embedded import EmbeddedPostgres
    from inboxlens.errors import InboxLensError
    from inboxlens.supervisor.plan import USERS
    root = os.geteuid() == 0  # as the supervisor starts it (make_plan would create users: not here)
    try:
        server = EmbeddedPostgres(paths.pg_data_dir(config.state_dir), paths.pg_socket_dir(config.runtime_dir),
                                  run_as=USERS["db"] if root else None, superuser_map=("root",) if root else ())
        return server.dsn if server.is_running() else None
    except (InboxLensError, OSError, KeyError):
        return None


async def _services(config: Config) -> list[Check]:
    network = [_discovery(n, p) for n, p in config.providers.items() if p.client_id and p.issuer]
    network += [_imap(n, p) for n, p in config.providers.items() if p.client_id and p.imap_host]
    results = await asyncio.gather(*network, _database(config), _metrics(config), _vault(config))
    return list(results)


async def _discovery(name: str, p: ProviderConfig) -> Check:
    url = p.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def fetch() -> dict[str, object]:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310 - the configured issuer
            document = json.loads(answer.read(1 << 20))
            return document if isinstance(document, dict) else {}
    try:
        document = await asyncio.to_thread(fetch)
    except (OSError, ValueError, urllib.error.URLError) as e:
        return Check(FAIL, f"provider {name}", f"issuer discovery at {url} failed ({type(e).__name__})")
    if not isinstance(document.get("token_endpoint"), str):
        return Check(FAIL, f"provider {name}", f"{url} names no token_endpoint")
    return Check(OK, f"provider {name}", f"issuer discovery at {url} answers")


async def _imap(name: str, p: ProviderConfig) -> Check:
    where = f"{p.imap_host}:{p.imap_port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(p.imap_host, p.imap_port), TIMEOUT)
        writer.close()
    except (OSError, TimeoutError) as e:
        return Check(FAIL, f"provider {name}", f"IMAP server {where} cannot be reached ({type(e).__name__})")
    return Check(OK, f"provider {name}", f"IMAP server {where} accepts connections")


async def _database(config: Config) -> Check:
    if not config.database.dsn:
        from inboxlens.db.embedded import PostgresBinariesMissing, postgres_bin
        try:
            postgres_bin()
        except PostgresBinariesMissing as e:
            return Check(FAIL, "database", str(e))
        return Check(OK, "database", "embedded PostgreSQL (its binaries are installed)")
    import asyncpg
    try:
        connection = await asyncpg.connect(config.database.dsn, timeout=TIMEOUT)
        await connection.close()
    except (OSError, TimeoutError, asyncpg.PostgresError) as e:
        return Check(FAIL, "database", f"database.dsn cannot be reached ({type(e).__name__})")
    return Check(OK, "database", "database.dsn answers")


async def _metrics(config: Config) -> Check:
    if config.metrics.backend != "cassandra":
        return Check(OK, "metrics", "in PostgreSQL, beside the accounts")
    import logging

    from inboxlens.metrics.cassandra.session import connect
    from inboxlens.service_errors import MetricsUnavailable
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)  # our one line says it
    try:
        session = await asyncio.wait_for(connect(config.metrics, None), TIMEOUT * 3)
        await session.close()
    except (MetricsUnavailable, TimeoutError) as e:
        return Check(FAIL, "metrics", f"Cassandra cannot be reached ({type(e).__name__})")
    return Check(OK, "metrics", f"Cassandra at {', '.join(config.metrics.cassandra_hosts)} answers")


async def _vault(config: Config) -> Check:
    if not config.vault_socket.exists():
        return Check(OK, "vault", "not running (no socket): start the service with 'inboxlens serve'")
    from inboxlens.errors import VaultError
    from inboxlens.vault.client import VaultClient
    try:
        async with VaultClient(config.vault_socket, timeout=TIMEOUT) as client:
            status = await client.status()
    except VaultError as e:
        return Check(WARN, "vault", f"its socket is there but it did not answer this uid ({type(e).__name__}); "
                     "run doctor as root to ask it")
    tokens = status.get("tokens", {})
    return Check(OK, "vault", f"answers; tokens by state: {tokens or 'none yet'}")
