"""``inboxlens keys …`` as an admin runs it: offline with the service stopped, online against the vault."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inboxlens.vault.client import VaultClient
from tests.support import tokens
from tests.support.vaultproc import make_vault


def inboxlens(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "INBOXLENS_STATE_DIR": str(tmp_path / "state"),
               "INBOXLENS_RUNTIME_DIR": str(tmp_path / "run"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "inboxlens", *args], capture_output=True, text=True,
                          env=environ, timeout=60)


def test_offline_lifecycle(tmp_path: Path):
    created = inboxlens(tmp_path, "keys", "init")
    assert created.returncode == 0, created.stderr
    assert "primary key 1" in created.stdout
    again = inboxlens(tmp_path, "keys", "init")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert inboxlens(tmp_path, "keys", "init", "--if-missing").returncode == 0

    vault_dir = tmp_path / "state" / "vault"
    expected = asyncio.run(tokens.fill(vault_dir, 250))
    listing = inboxlens(tmp_path, "keys", "list")
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[1].split()[:2] == ["1", "primary"] and listing.stdout.split()[-1] == "250"

    assert "key 2 is now primary" in inboxlens(tmp_path, "keys", "rotate").stdout
    refused = inboxlens(tmp_path, "keys", "revoke", "1")
    assert refused.returncode == 1 and "key 1 still seals 250 token(s)" in refused.stderr
    primary = inboxlens(tmp_path, "keys", "revoke", "2")
    assert primary.returncode == 1 and "primary" in primary.stderr

    rewrap = inboxlens(tmp_path, "keys", "rewrap", "--batch", "100")
    assert rewrap.returncode == 0, rewrap.stderr
    assert "250 token(s) re-sealed under key 2" in rewrap.stdout and "250/250" in rewrap.stderr
    assert inboxlens(tmp_path, "keys", "revoke", "1").returncode == 0
    states = [line.split()[:2] for line in inboxlens(tmp_path, "keys", "list").stdout.splitlines()[1:]]
    assert states == [["1", "revoked"], ["2", "primary"]]
    opened, counts = asyncio.run(tokens.opened(vault_dir))
    assert opened == expected and counts == {2: 250}


@pytest.mark.parametrize("args, message", [
    (["keys", "revoke", "abc"], "is not a key id"),
    (["keys", "revoke", "0"], "is not a key id"),
    (["keys", "rewrap", "--batch", "5000"], "batch is a whole number"),
    (["keys", "explode"], "invalid choice"),
])
def test_bad_arguments_are_usage_errors(tmp_path: Path, args: list[str], message: str):
    result = inboxlens(tmp_path, *args)
    assert result.returncode == 2 and message in result.stderr


def test_commands_without_a_keyset_say_what_to_do(tmp_path: Path):
    result = inboxlens(tmp_path, "keys", "list")
    assert result.returncode == 1 and "inboxlens keys init" in result.stderr


@pytest.mark.parametrize("env, message", [
    ({"INBOXLENS_WEB__PORT": "eighty"}, "INBOXLENS_WEB__PORT (config key web.port)"),
    ({"INBOXLENS_VAULT__TOKEN_STOR": "x"}, "unknown config key 'vault.token_stor'"),
    ({"INBOXLENS_CONFIG": "/nonexistent.toml"}, "/nonexistent.toml does not exist"),
])
def test_configuration_errors_name_the_key(tmp_path: Path, env: dict[str, str], message: str):
    result = inboxlens(tmp_path, "keys", "list", env=env)
    assert result.returncode == 78 and message in result.stderr


async def test_online_against_the_running_vault(tmp_path: Path):
    vault = make_vault(tmp_path)
    await tokens.fill(vault.vault_dir, 20)
    await vault.start()
    try:
        listing = await asyncio.to_thread(inboxlens, tmp_path, "keys", "list")
        assert listing.returncode == 0 and listing.stdout.split()[-1] == "20"
        rotated = await asyncio.to_thread(inboxlens, tmp_path, "keys", "rotate")
        assert rotated.returncode == 0, rotated.stderr
        # The running vault (not a copy on disk) now seals under key 2: web would pick it up.
        async with VaultClient(vault.socket) as client:
            assert (await client.public_key()).key_id == 2
        rewrap = await asyncio.to_thread(inboxlens, tmp_path, "keys", "rewrap")
        assert rewrap.returncode == 0 and "20 token(s) re-sealed" in rewrap.stdout
        assert (await asyncio.to_thread(inboxlens, tmp_path, "keys", "revoke", "1")).returncode == 0
    finally:
        await vault.stop()
    assert "revoked key 1" in vault.log()  # done by the running vault, not offline


def test_status_shows_tokens_and_refresh_events(tmp_path: Path):
    assert inboxlens(tmp_path, "keys", "init").returncode == 0
    asyncio.run(tokens.fill(tmp_path / "state" / "vault", 3))
    result = inboxlens(tmp_path, "keys", "status")
    assert result.returncode == 0, result.stderr
    assert "tokens: 3 ok" in result.stdout and "0 refresh(es)" in result.stdout
