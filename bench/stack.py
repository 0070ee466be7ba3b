"""The stack the harvest and capacity benchmarks run on: embedded PostgreSQL, the tests' OAuth
server, Dovecot validating its tokens, and a real vault, all on loopback, torn down by the caller's
exit stack. One set-up for both, so a benchmark measures the product, not its own plumbing."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from inboxlens.vault.client import VaultClient


@dataclass
class MailStack:
    tmp: Path
    dsn: str
    pool: asyncpg.Pool
    pg: Any  # EmbeddedPostgres
    pg_version: str
    oauth: Any  # tests.support.oauth_provider.OAuthProvider
    dovecot: Any  # tests.support.dovecot.Dovecot
    vault: Any  # tests.support.vaultproc's vault process
    client: VaultClient


async def version(program: str) -> str:
    process = await asyncio.create_subprocess_exec(program, "--version", stdout=subprocess.PIPE)
    out, _ = await process.communicate()
    return out.decode().strip()


async def mail_stack(stack: AsyncExitStack, prefix: str, *, pool_size: int,
                     mail_root: Path | None = None) -> MailStack:
    """Start the whole stack in a temporary folder named ``prefix``; ``stack`` stops it and removes it."""
    from inboxlens.db.embedded import EmbeddedPostgres
    from inboxlens.db.migrate import migrate
    from tests.conftest import TEST_PG_USER, dsn_with_database
    from tests.harvest.conftest import CLIENT_ID, CLIENT_SECRET
    from tests.support.dovecot import Dovecot
    from tests.support.oauth_provider import OAuthProvider
    from tests.support.osusers import ensure_user
    from tests.support.vaultproc import make_vault

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o711)  # PostgreSQL's OS user traverses it to its data and socket directories
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    root = os.geteuid() == 0
    if root:
        ensure_user(TEST_PG_USER)
    pg = EmbeddedPostgres(tmp / "pg" / "data", tmp / "pg" / "sock", run_as=TEST_PG_USER if root else None,
                          superuser_map=("root",) if root else ())
    stack.push_async_callback(asyncio.to_thread, pg.stop)
    admin_dsn = await asyncio.to_thread(pg.start)
    admin = await asyncpg.connect(admin_dsn)
    pg_version = await admin.fetchval("SHOW server_version")
    await admin.execute('CREATE DATABASE "inboxlens_bench"')
    await admin.close()
    dsn = dsn_with_database(admin_dsn, "inboxlens_bench")
    await migrate(dsn)

    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await oauth.start()
    stack.push_async_callback(oauth.stop)
    if mail_root is not None:
        stack.callback(shutil.rmtree, mail_root, ignore_errors=True)
    dovecot = Dovecot(oauth.introspect_url, root=mail_root) if mail_root is not None else Dovecot(oauth.introspect_url)
    await asyncio.to_thread(dovecot.start)
    stack.push_async_callback(asyncio.to_thread, dovecot.stop)
    vault = make_vault(tmp / "vault", providers={"test": {"token_url": oauth.token_url, "client_id": CLIENT_ID,
                                                          "client_secrets": [CLIENT_SECRET],
                                                          "revocation_url": oauth.revoke_url}})
    vault.slice["config"]["log_level"] = "INFO"  # the product's default; it still logs registrations
    await vault.start()
    stack.push_async_callback(vault.stop)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)
    stack.push_async_callback(pool.close)
    client = VaultClient(vault.socket)
    stack.push_async_callback(client.close)
    return MailStack(tmp, dsn, pool, pg, pg_version, oauth, dovecot, vault, client)
