"""Fill and check a vault's token store directly, as only root or the vault's uid can."""

from __future__ import annotations

from pathlib import Path

from inboxlens.vault import sealed
from inboxlens.vault.keyset import Keyset
from inboxlens.vault.store.sqlite import SqliteTokenStore


async def fill(vault_dir: Path, count: int, provider: str = "test") -> dict[str, str]:
    """``count`` accounts with tokens sealed under the primary key; returns account -> token."""
    keyset = Keyset.load(vault_dir)
    primary = keyset.primary
    store = await SqliteTokenStore.open(vault_dir / "tokens.sqlite3")
    tokens = {f"acct-{i:05d}": f"refresh-{i:05d}-secret" for i in range(count)}
    try:
        for account, token in tokens.items():
            await store.put(account, provider, primary.id, sealed.seal(primary.public_key, primary.id, account, provider, token))
    finally:
        await store.close()
    return tokens


async def opened(vault_dir: Path, provider: str = "test") -> tuple[dict[str, str], dict[int, int]]:
    """Every stored token opened with the key its record names; and the count per key."""
    keyset = Keyset.load(vault_dir)
    store = await SqliteTokenStore.open(vault_dir / "tokens.sqlite3")
    try:
        counts = await store.count_by_key()
        result = {}
        for record in await store.not_under(-1, 10**9):  # every record: no key has id -1
            key = keyset.private_key(record.key_id)
            assert key is not None, f"key {record.key_id} is gone but {record.account_id} needs it"
            result[record.account_id] = sealed.open_sealed(key, record.sealed, record.account_id, provider)
    finally:
        await store.close()
    return result, counts


async def counts(vault_dir: Path) -> dict[int, int]:
    store = await SqliteTokenStore.open(vault_dir / "tokens.sqlite3")
    try:
        return await store.count_by_key()
    finally:
        await store.close()
