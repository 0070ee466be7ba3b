"""The OAuth 2.0 refresh_token grant, with authlib, and what its outcomes mean.

Only ``invalid_grant`` means the grant is gone (ReauthRequired). A dropped connection,
a timeout, a 5xx, a 429 or a body that is not a token are the world's fault: retried
with bounded backoff, then ProviderUnavailable; the stored token is kept.
``invalid_client`` tries the next configured client secret (rotation without downtime);
when none is accepted, ProviderRejected. A rotated refresh token goes to ``keep`` (which
seals and stores it) before anything else in the answer is judged, and any retry
presents it: the old one is spent, and a provider with reuse detection would revoke the
grant on seeing it again. authlib and httpx2 load at the first refresh, revocation or
discovery, so a vault that only seals and serves cached tokens never loads them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from inboxlens.config.vault import ProviderConfig
from inboxlens.errors import ProviderRejected, ProviderUnavailable, ReauthRequired

log = logging.getLogger("inboxlens.vault.refresh")

MAX_TOKEN_CHARS = 8192
MAX_EXPIRES_IN = 30 * 86400
_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
# Our request or configuration is wrong: retrying cannot help, and the grant is not gone either.
_CONFIG_ERRORS = frozenset({"invalid_request", "invalid_scope", "unsupported_grant_type"})
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")
Keep = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Grant:
    access_token: str
    expires_at: float

    def __repr__(self) -> str:  # never the token, even in a traceback's locals
        return f"Grant(expires_at={self.expires_at:.0f})"


class _Transient(Exception):
    """One attempt failed in a way worth retrying; carries a loggable reason only."""


class Refresher:
    def __init__(self, providers: Mapping[str, ProviderConfig], *, attempts: int, backoff: float,
                 timeout: float, default_expires_in: int) -> None:
        self._providers = providers
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._default_expires_in = default_expires_in
        self._clients: dict[tuple[str, int], Any] = {}  # authlib's AsyncOAuth2Client, made on first use
        self._discovery: dict[str, ProviderConfig] = {}
        self.transient_failures = 0

    async def refresh(self, provider: str, refresh_token: str, keep: Keep) -> Grant:
        """A new access token; ``keep`` gets a rotated refresh token before anything else is judged."""
        config = self._providers.get(provider)
        if config is None or not (config.token_url or config.issuer) or not config.client_id:
            raise ProviderRejected(f"provider {provider!r} is not configured in the vault")
        current = [refresh_token]  # the token to present: a rotation replaces it, retries included
        for attempt in range(self._attempts):
            try:
                config = await self._discovered(provider, config)
                return await self._with_any_secret(provider, config, current, keep)
            except _Transient as e:
                self.transient_failures += 1
                log.warning("refresh at %s failed (%s), attempt %d of %d", provider, e, attempt + 1, self._attempts)
                if attempt + 1 < self._attempts:
                    await asyncio.sleep(self._backoff * 2**attempt)
        raise ProviderUnavailable(f"provider {provider!r} did not answer usefully; the token is kept, try again later")

    async def _with_any_secret(self, provider: str, config: ProviderConfig, current: list[str], keep: Keep) -> Grant:
        from authlib.integrations.base_client.errors import OAuthError
        import httpx2 as httpx  # authlib's async client runs on httpx2 (its plain-httpx fallback is deprecated)
        secrets = config.client_secrets or ("",)
        for index in range(len(secrets)):
            client = self._client(provider, config, index)
            try:
                # authlib keeps the last answer in client.token; nothing awaits between its
                # parse and its return, so concurrent refreshes on one client stay apart.
                token = dict(await client.refresh_token(config.token_url, refresh_token=current[0]))
            except OAuthError as e:
                code = e.error if isinstance(e.error, str) and _ERROR_CODE.fullmatch(e.error) else "unknown"
                if code == "invalid_grant":
                    raise ReauthRequired("the provider refused the refresh token (invalid_grant); "
                                         "reconnect the account") from None
                if code in _CONFIG_ERRORS:
                    raise ProviderRejected(f"provider {provider!r} answered error {code}") from None
                if code not in _CLIENT_ERRORS:
                    # authlib hides the status: a 429's error, temporarily_unavailable, anything new.
                    raise _Transient(f"error {code}") from None
                log.warning("client secret %d of %d refused at %s (%s)", index + 1, len(secrets), provider, code)
                continue
            except httpx.HTTPStatusError as e:
                raise _Transient(f"HTTP {e.response.status_code}") from None
            except httpx.HTTPError as e:
                raise _Transient(type(e).__name__) from None
            except ValueError:
                raise _Transient("answer is not a JSON object") from None
            rotated = token.get("refresh_token")
            if rotated != current[0] and isinstance(rotated, str) and 0 < len(rotated) <= MAX_TOKEN_CHARS:
                await keep(rotated)  # the old one is spent at the provider: store the new one first
                current[0] = rotated
            return self._grant(token)
        raise ProviderRejected(f"provider {provider!r} accepted none of the {len(secrets)} configured client secrets")

    def _grant(self, token: dict[str, Any]) -> Grant:
        access = token.get("access_token")
        if not isinstance(access, str) or not 0 < len(access) <= MAX_TOKEN_CHARS:
            raise _Transient("answer has no usable access_token")
        if str(token.get("token_type", "bearer")).lower() != "bearer":
            raise _Transient("answer is not a bearer token")
        try:
            expires_in = int(token.get("expires_in", ""))
        except (TypeError, ValueError):
            expires_in = 0
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            expires_in = self._default_expires_in
        return Grant(access, time.time() + expires_in)

    async def _discovered(self, provider: str, config: ProviderConfig) -> ProviderConfig:
        """A provider configured by its OpenID issuer only: its discovery document names the endpoints."""
        if config.token_url:
            return config
        if provider not in self._discovery:
            import httpx2 as httpx
            url = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as http:
                    answer = await http.get(url)
                    answer.raise_for_status()
                    doc = answer.json()
                token_url, revocation_url = doc["token_endpoint"], doc.get("revocation_endpoint", "")
                if not isinstance(token_url, str) or not isinstance(revocation_url, str):
                    raise ValueError("endpoint is not a string")
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
                raise _Transient(f"discovery failed ({type(e).__name__})") from None
            self._discovery[provider] = dataclasses.replace(
                config, token_url=token_url, revocation_url=config.revocation_url or revocation_url)
        return self._discovery[provider]

    async def revoke(self, provider: str, refresh_token: str) -> str:
        """Revoke a grant at the provider (RFC 7009): ``revoked``, ``not_supported`` or ``failed``."""
        config = self._providers.get(provider)
        if config is not None and not config.token_url and config.issuer:
            try:
                config = await self._discovered(provider, config)
            except _Transient:
                return "failed"
        if config is None or not config.revocation_url:
            return "not_supported"
        import httpx2 as httpx
        try:
            answer = await self._client(provider, config, 0).revoke_token(
                config.revocation_url, token=refresh_token, token_type_hint="refresh_token")
        except httpx.HTTPError as e:
            log.warning("revocation at %s failed (%s)", provider, type(e).__name__)
            return "failed"
        if answer.status_code != 200:
            log.warning("revocation at %s answered HTTP %d", provider, answer.status_code)
            return "failed"
        return "revoked"

    def _client(self, provider: str, config: ProviderConfig, index: int) -> Any:
        if (provider, index) not in self._clients:
            from authlib.integrations.httpx_client import AsyncOAuth2Client
            secret = config.client_secrets[index] if config.client_secrets else None
            self._clients[provider, index] = AsyncOAuth2Client(
                client_id=config.client_id, client_secret=secret,
                token_endpoint_auth_method=config.token_auth_method,
                revocation_endpoint_auth_method=config.token_auth_method,
                timeout=self._timeout, follow_redirects=False, trust_env=False)
        return self._clients[provider, index]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
