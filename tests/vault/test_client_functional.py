"""The vault client: request ids, cancellation, its pool, deadlines, reconnects and clear errors."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from inboxlens.errors import ProtocolError, ProviderUnavailable
from inboxlens.service_errors import VaultUnavailable
from inboxlens.vault import protocol
from inboxlens.vault.client import VaultClient
from tests.vault.conftest import become, provider_config


async def test_reconnects_after_the_vault_restarts(vault_factory):
    vault = await vault_factory()
    client = VaultClient(vault.socket)
    first = await client.public_key()
    assert await vault.stop() == 0
    await vault.start()
    assert await client.public_key() == first  # same keyset, new connection, no error
    await client.close()


async def test_no_socket_is_a_clear_unavailable_error(tmp_path: Path):
    with pytest.raises(VaultUnavailable, match="no vault socket .* is 'inboxlens serve' running"):
        await VaultClient(tmp_path / "missing.sock").public_key()


async def test_a_silent_server_times_out(tmp_path: Path):
    path = tmp_path / "silent.sock"
    server = await asyncio.start_unix_server(lambda r, w: None, path=path)
    try:
        with pytest.raises(VaultUnavailable, match="did not answer within 0.2 s"):
            await VaultClient(path, timeout=0.2).public_key()
    finally:
        server.close()


async def test_an_oversized_answer_is_a_protocol_error(tmp_path: Path):
    path = tmp_path / "liar.sock"

    async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write((1 << 30).to_bytes(4, "big"))
        await writer.drain()

    server = await asyncio.start_unix_server(liar, path=path)
    try:
        with pytest.raises(ProtocolError, match="outside"):
            await VaultClient(path, timeout=2).public_key()
    finally:
        server.close()


async def test_one_client_answers_many_concurrent_calls(vault_factory):
    vault = await vault_factory()
    client = VaultClient(vault.socket)
    await become(vault, client, os.getpid(), "web")
    answers = await asyncio.gather(*(client.forget(f"acct-{i}") for i in range(50)))
    assert [a["forgotten"] for a in answers] == [False] * 50
    await client.close()


async def _two_accounts(vault, oauth, pool_size: int = 1) -> VaultClient:
    """alice and bob stored (as web would), then one client acting as harvest (one connection by default)."""
    client = VaultClient(vault.socket, pool_size=pool_size)
    await become(vault, client, os.getpid(), "web")
    key = await client.public_key()
    for account in ("alice", "bob"):
        await client.set(account, "test", key.seal(account, "test", oauth.issue_refresh_token(f"{account}@example.test")))
    await become(vault, client, os.getpid(), "harvest")
    return client


async def test_a_cancelled_call_never_hands_its_answer_to_the_next(vault_factory, oauth):
    vault = await vault_factory(oauth)
    client = await _two_accounts(vault, oauth)
    oauth.delay = 0.5  # alice's refresh is still running when her caller gives up
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.get("alice"), 0.2)
    oauth.delay = 0
    bob = await client.get("bob")
    alice = await client.get("alice")  # her refresh went on in the vault: now cached
    assert bob.token != alice.token
    assert oauth.is_active(bob.token) and oauth.is_active(alice.token)
    assert oauth.refresh_grants == 2  # one each: the cancelled call's refresh was not thrown away
    await client.close()


async def test_an_answer_for_another_request_id_is_refused(tmp_path: Path):
    path = tmp_path / "confused.sock"

    async def confused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = protocol.decode_body(await reader.readexactly(
            protocol.check_length(await reader.readexactly(4), 65536)))
        writer.write(protocol.encode(protocol.ok(request["id"] + 1, {"key_id": 1, "public_key": "00" * 32})))
        await writer.drain()

    server = await asyncio.start_unix_server(confused, path=path)
    try:
        with pytest.raises(ProtocolError, match="answered request"):
            await VaultClient(path, timeout=2).public_key()
    finally:
        server.close()


async def test_concurrent_calls_do_not_queue_behind_a_slow_one(vault_factory, oauth):
    vault = await vault_factory(oauth)
    client = await _two_accounts(vault, oauth, pool_size=2)  # with 1, public_key waits the whole second
    oauth.delay = 1.0
    slow = asyncio.create_task(client.get("alice"))
    await asyncio.sleep(0)  # let it take its connection first
    started = time.monotonic()
    await client.public_key()  # another connection of the pool: no waiting for alice's refresh
    assert time.monotonic() - started < 0.5
    assert not slow.done()
    assert oauth.is_active((await slow).token)
    await client.close()


async def test_the_vault_answers_within_the_callers_timeout_and_keeps_the_refresh(vault_factory, oauth):
    vault = await vault_factory(oauth)
    await _two_accounts(vault, oauth)
    hurried = VaultClient(vault.socket, timeout=1.0)
    oauth.delay = 2.0  # the refresh outlasts the caller's patience
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="refresh goes on"):
        await hurried.get("alice")  # the vault's own answer, not a client-side timeout
    assert time.monotonic() - started < 1.0
    patient = VaultClient(vault.socket, timeout=10)
    assert oauth.is_active((await patient.get("alice")).token)  # joins the refresh already running
    assert oauth.refresh_grants == 1
    await hurried.close()
    await patient.close()


async def test_forget_answers_what_happened_within_the_callers_timeout(vault_factory, oauth, tmp_path: Path):
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # a revocation endpoint that hangs
    port = silent.sockets[0].getsockname()[1]
    providers = provider_config(oauth)
    providers["test"]["revocation_url"] = f"http://127.0.0.1:{port}/revoke"
    vault = await vault_factory(oauth, providers=providers)
    client = await _two_accounts(vault, oauth)
    await become(vault, client, os.getpid(), "web")
    web = VaultClient(vault.socket, timeout=2.0)
    try:
        started = time.monotonic()
        assert await web.forget("alice", revoke=True) == {"forgotten": True, "revocation": "failed"}
        assert time.monotonic() - started < 2.0
        assert await web.token_state("alice") == "missing"  # what the answer said happened, happened
    finally:
        silent.close()
        await web.close()
        await client.close()
