from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest

from inboxlens.vault.client import VaultClient
from tests.support.oauth_provider import OAuthProvider
from tests.support.vaultproc import VaultProcess, make_vault

CLIENT_ID = "inboxlens-test"
CLIENT_SECRET = "client-secret-3f9a1c"


@pytest.fixture
async def oauth() -> AsyncIterator[OAuthProvider]:
    provider = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]}, access_token_ttl=3600)
    await provider.start()
    yield provider
    await provider.stop()


def provider_config(oauth: OAuthProvider, secrets: list[str] | None = None) -> dict[str, dict[str, object]]:
    return {"test": {"token_url": oauth.token_url, "client_id": CLIENT_ID,
                     "client_secrets": secrets or [CLIENT_SECRET]}}


@pytest.fixture
async def vault_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[VaultProcess]]]:
    started: list[VaultProcess] = []

    async def start(oauth: OAuthProvider | None = None, **kwargs: object) -> VaultProcess:
        providers = provider_config(oauth) if oauth is not None else {}
        kwargs.setdefault("providers", providers)
        vault = make_vault(tmp_path / f"v{len(started)}", **kwargs)  # type: ignore[arg-type]
        await vault.start()
        started.append(vault)
        return vault

    yield start
    for vault in started:
        await vault.stop()


async def become(vault: VaultProcess, client: VaultClient, pid: int, role: str) -> None:
    """Act as ``role``: register ``pid`` (the test process) with the vault, as the supervisor would."""
    await vault.register(pid, role)
