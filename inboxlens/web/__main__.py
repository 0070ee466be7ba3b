"""inboxlens-web: the process that meets browsers (onboarding, login, REST API).

Privilege: its own uid (``inboxlens-web``) with the shared ``inboxlens`` group,
which lets it reach the vault's socket. It holds the vault's public key (asked
for over the socket) and the OAuth client secrets for the code exchange, never a
private key: it can seal a refresh token but never open one. A plaintext refresh
token exists here only while one callback request is being answered.
Untrusted input: HTTP requests on ``web.host:web.port`` (127.0.0.1:8080 by default),
and the answers of OAuth providers' token, userinfo and discovery endpoints.
Also untrusted: bearer API tokens on ``/api/v1`` (only their SHA-256 is looked up or stored).
Reads: the metrics store (``metrics.*``: PostgreSQL, or a Cassandra cluster) for the API.
Writes: PostgreSQL (users, mail accounts, sessions, API token hashes, audit events, harvest's
next run for "sync now") as its own role; deletes a disconnected account's metrics;
its cookie-signing key under ``<state_dir>/web`` (0600); log lines on stderr, never a token.
Profiles (issue 17): adds and removes users' address books (the CardDAV app password is sealed here
with the vault's public key and handed to the vault at once, like a refresh token: never stored or
logged here), imports .vcf files, and serves the card's profile block and its photos from PostgreSQL;
it never fetches a user's URL (harvest syncs the books and looks up public profiles).
Config keys: ``profiles.*`` (``max_books_per_user``, ``allow_private_addresses``, ``gravatar``,
``libravatar``), ``web.*`` (``cors_origins``, ``api_requests_per_minute``, ``api_burst`` for the API;
``anonymous_requests_per_minute``, ``anonymous_burst``, ``trusted_proxies`` for requests nobody is
logged in for; ``shutdown_seconds``; ``metrics_listen``, ``metrics_allow_remote`` for Prometheus metrics
on a listener of their own, off by default, with harvest's snapshot from ``runtime_dir``), ``providers.*``,
``database.dsn``, ``metrics.*``, ``insights.*``, ``state_dir``, ``runtime_dir``.
Stopping (SIGTERM, SIGINT, or the supervisor's pipe closing): stop accepting, let in-flight
requests finish for ``web.shutdown_seconds``, cut off the rest; exit 0 when every request
finished, ``EXIT_CUT_SHORT`` when some had to be cut off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import asyncpg
from aiohttp import web

from inboxlens import child
from inboxlens.config.schema import Config, ProfilesConfig
from inboxlens.config.loader import from_dict
from inboxlens.errors import StartError
from inboxlens.metrics.factory import open_metrics
from inboxlens.metrics.store import MetricsStore
from inboxlens.profiles.read import PhotoIds, ProfileCache
from inboxlens.service_errors import MetricsUnavailable
from inboxlens.vault.client import VaultClient
from inboxlens.web import accounts, books, demo, exporter
from inboxlens.web.app import make_app
from inboxlens.web.limits import normal
from inboxlens.web.oauth import Providers
from inboxlens.web.sessions import SessionStore, load_key
from inboxlens.web.api.ratelimit import RateLimiter
from inboxlens.web.state import (ANONYMOUS_LIMITER, API_LIMITER, CORS_ORIGINS, DB, METRICS, PROFILE_CACHE, PROFILES,
                                 PROVIDERS, SECURE_COOKIES, SESSIONS, TRUSTED_PROXIES, VAULT)

log = logging.getLogger("inboxlens.web")
VAULT_TIMEOUT = 5.0
ORPHAN_SWEEP_SECONDS = 10  # cheap: connect_pending is empty but for connects under way
SWEEP_SECONDS = 300  # anonymous sessions expire after 10 minutes: sweep them soon after
EXIT_CUT_SHORT = 75  # EX_TEMPFAIL: stopped, but some requests were cut off at the deadline
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset for a connection coming back: nothing to send.

    asyncpg's default sends "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL" on every release, a second round trip for each query a handler makes through the
    pool (a card made nine before it ran on one connection). Web leaves no session state
    behind: no SET outside a transaction, no LISTEN, no cursor outside a transaction, no
    session advisory lock (tests/web/test_pool_reset.py checks the code for them); asyncpg
    itself still rolls back a transaction left open before calling this.
    """


async def main(channel: child.Channel) -> None:
    config = from_dict(channel.config["config"])
    try:
        pool = await asyncpg.create_pool(config.database.dsn, min_size=1, max_size=10, command_timeout=15,
                                         reset=keep_session)
    except (OSError, asyncpg.PostgresError) as e:
        raise StartError(f"cannot reach PostgreSQL ({type(e).__name__})") from None
    app = await _app(config, pool)
    drain = Drain()
    app.middlewares.insert(0, drain.middleware)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.web.shutdown_seconds)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.web.host, config.web.port).start()
    except OSError as e:
        raise StartError(f"cannot listen on {config.web.host}:{config.web.port} ({e.strerror})") from None
    log.info("listening on %s (providers: %s)", config.web.base_url, ", ".join(app[PROVIDERS].names()) or "none")
    metrics_listener = await exporter.start(config, app)
    channel.ready()
    chores = [asyncio.create_task(_sweep(app[SESSIONS])), asyncio.create_task(_forget_orphans(pool, app[VAULT])),
              asyncio.create_task(_forget_addresses(pool, app[SESSIONS].address_key()))]
    await _until_stopped(channel)
    log.info("stopping: no new connections; %d request(s) in flight get %.0f s", drain.in_flight,
             config.web.shutdown_seconds)
    for chore in chores:
        chore.cancel()
    if metrics_listener is not None:
        await metrics_listener.cleanup()
    await runner.cleanup()  # stops listening, waits for in-flight requests up to shutdown_timeout, cancels the rest
    await _close(app, pool)
    if drain.cut_short:
        log.warning("stopped; %d request(s) were cut off at the %.0f s deadline", drain.cut_short,
                    config.web.shutdown_seconds)
        raise SystemExit(EXIT_CUT_SHORT)
    log.info("stopped; every request finished")


async def _app(config: Config, pool: asyncpg.Pool) -> web.Application:
    app = make_app()
    if demo.install(app, config.state_dir):  # only in a demo's own state directory (inboxlens demo)
        log.warning("demo mode: every answer is marked as demo data; /demo/login signs the demo user in")
    app[VAULT] = VaultClient(config.vault_socket, timeout=VAULT_TIMEOUT)
    app[DB] = pool
    app[SESSIONS] = SessionStore(pool, load_key(config.state_dir / "web" / "session.key"), config.web.session_days)
    app[PROVIDERS] = Providers(config.providers, config.web.base_url)
    app[PROFILES] = config.profiles
    app[SECURE_COOKIES] = config.web.base_url.startswith("https://")
    app[METRICS] = await _open_metrics(config, pool)
    app[CORS_ORIGINS] = frozenset(config.web.cors_origins)
    app[API_LIMITER] = RateLimiter(config.web.api_requests_per_minute, config.web.api_burst)
    app[ANONYMOUS_LIMITER] = RateLimiter(config.web.anonymous_requests_per_minute, config.web.anonymous_burst)
    app[TRUSTED_PROXIES] = frozenset(filter(None, map(normal, config.web.trusted_proxies)))
    app[PROFILE_CACHE] = ProfileCache(PhotoIds(app[SESSIONS].key), public_sources(config.profiles))
    return app


def public_sources(profiles: ProfilesConfig) -> tuple[str, ...]:
    """The public profile sources the admin left on (rows of one switched off are not shown)."""
    return tuple(name for name in ("gravatar", "libravatar") if getattr(profiles, name))


async def _close(app: web.Application, pool: asyncpg.Pool) -> None:
    await app[METRICS].close()
    await app[VAULT].close()
    await app[PROVIDERS].close()
    await pool.close()


class Drain:
    """Counts requests in flight, and those the shutdown deadline cut off."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.cut_short = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.in_flight += 1
        try:
            return await handler(request)
        except asyncio.CancelledError:
            self.cut_short += 1
            raise
        finally:
            self.in_flight -= 1


async def _until_stopped(channel: child.Channel) -> None:
    """Until a signal (child.py sets ``stopping``) or the supervisor's pipe closes."""
    async def drain_messages() -> None:
        async for _ in channel.messages():
            pass  # web takes no control messages

    reader = asyncio.create_task(drain_messages())
    await channel.stopping.wait()
    reader.cancel()


async def _forget_addresses(pool: asyncpg.Pool, key: bytes) -> None:
    """Audit events written before disconnects hashed addresses: hash those of gone mailboxes now."""
    try:
        done = await accounts.forget_disconnected_addresses(pool, key)
    except (OSError, asyncpg.PostgresError) as e:
        log.warning("could not hash old audit addresses (%s)", type(e).__name__)
        return
    if done:
        log.info("audit events: hashed %d address(es) of disconnected mailboxes", done)


async def _open_metrics(config: Config, pool: asyncpg.Pool) -> MetricsStore:
    """PostgreSQL shares our pool; Cassandra's driver loads only when it is configured."""
    try:
        return await open_metrics(config, pool)
    except MetricsUnavailable as e:
        raise StartError(f"cannot reach the metrics store ({e})") from None


async def _forget_orphans(pool: asyncpg.Pool, vault: VaultClient) -> None:
    """Tokens left in the vault by a connect that died before its account was saved, and
    passwords by an address book's add that died before the book was saved: forgotten."""
    sweeps = ((accounts.CONNECTS, "token", "forgot the token of account %d: its connect never finished"),
              (books.PENDING, "password", "forgot the password of address book %d: adding it never finished"))
    while True:
        for kind, secret, forgot in sweeps:  # each on its own: one failing does not hold up the other
            try:
                for marked in await accounts.forget_orphans(pool, vault, kind=kind):
                    log.warning(forgot, marked)
            except Exception as e:  # whatever it was, the next sweep tries again: the chore must not end
                log.warning("orphaned %s sweep failed (%s); trying again", secret, type(e).__name__)
        await asyncio.sleep(ORPHAN_SWEEP_SECONDS)


async def _sweep(store: SessionStore) -> None:
    while True:
        try:
            await store.sweep()
        except (OSError, asyncpg.PostgresError) as e:
            log.warning("session sweep failed (%s)", type(e).__name__)
        await asyncio.sleep(SWEEP_SECONDS)


if __name__ == "__main__":
    child.run("inboxlens-web", main)
