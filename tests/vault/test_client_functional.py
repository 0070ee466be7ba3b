"""The vault client: timeouts, reconnects and clear errors."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from inboxlens.errors import ProtocolError, VaultUnavailable
from inboxlens.vault.client import VaultClient
from tests.vault.conftest import become


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


async def test_one_client_serialises_concurrent_calls(vault_factory):
    vault = await vault_factory()
    client = VaultClient(vault.socket)
    await become(vault, client, os.getpid(), "web")
    answers = await asyncio.gather(*(client.forget(f"acct-{i}") for i in range(50)))
    assert [a["forgotten"] for a in answers] == [False] * 50
    await client.close()
