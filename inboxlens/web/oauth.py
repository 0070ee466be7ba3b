"""The client side of the OAuth 2.0 / OpenID Connect flows web runs (with authlib).

Authorization code with PKCE (S256), a ``state`` kept in the browser's server-side
session, a ``nonce`` checked in the ID token. The ID token comes straight from the
provider's token endpoint over TLS, so its signature need not be checked (OpenID
Connect Core 3.1.3.7); its issuer, audience, expiry and nonce are. Without an ID
token, the userinfo endpoint names the user. A generic provider may give only an
issuer: its discovery document fills in the URLs.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import httpx2 as httpx  # authlib's async client runs on httpx2
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client

from inboxlens.config.vault import ProviderConfig
from inboxlens.errors import InboxLensError

log = logging.getLogger("inboxlens.web.oauth")
TIMEOUT = 15.0


class FlowError(InboxLensError):
    """The provider could not complete a flow; the message is safe to show a user."""


@dataclass(frozen=True)
class Endpoints:
    authorization_url: str
    token_url: str
    userinfo_url: str
    issuer: str


@dataclass(frozen=True)
class Grant:
    email: str
    refresh_token: str | None

    def __repr__(self) -> str:
        return f"Grant(email={self.email!r}, refresh_token={'<present>' if self.refresh_token else None})"


class Providers:
    def __init__(self, configs: Mapping[str, ProviderConfig], base_url: str) -> None:
        self.configs = {name: c for name, c in configs.items() if c.client_id}
        self.base_url = base_url
        self._discovered: dict[str, Endpoints] = {}

    def names(self) -> list[str]:
        return sorted(self.configs)

    def label(self, name: str) -> str:
        return self.configs[name].display_name or name.capitalize()

    def redirect_uri(self, name: str) -> str:
        return f"{self.base_url}/oauth/{name}/callback"

    async def authorization_url(self, name: str, *, mailbox: bool, state: str, verifier: str, nonce: str,
                                login_hint: str = "") -> str:
        config, endpoints = self.configs[name], await self.endpoints(name)
        scopes = config.scopes if mailbox else config.login_scopes
        params = dict(config.authorize_params) if mailbox else {}
        if login_hint:
            params["login_hint"] = login_hint
        async with self._client(name, 0, scopes) as client:
            url, _ = client.create_authorization_url(endpoints.authorization_url, state=state,
                                                     code_verifier=verifier, nonce=nonce, **params)
        return str(url)

    async def exchange(self, name: str, code: str, verifier: str, nonce: str) -> Grant:
        """Trade the code for tokens and say whose mailbox it is."""
        endpoints = await self.endpoints(name)
        token = await self._fetch_token(name, endpoints, code, verifier)
        email = self._email_from_id_token(name, endpoints, token, nonce) or await self._email_from_userinfo(
            endpoints, token)
        refresh = token.get("refresh_token")
        return Grant(email.lower(), refresh if isinstance(refresh, str) and refresh else None)

    async def _fetch_token(self, name: str, endpoints: Endpoints, code: str, verifier: str) -> dict[str, Any]:
        secrets = self.configs[name].client_secrets or ("",)
        for index in range(len(secrets)):
            try:
                async with self._client(name, index, ()) as client:
                    return dict(await client.fetch_token(endpoints.token_url, code=code, code_verifier=verifier))
            except OAuthError as e:
                if e.error not in ("invalid_client", "unauthorized_client"):
                    log.warning("code exchange at %s refused (%s)", name, e.error)
                    raise FlowError(f"{self.label(name)} refused the sign-in ({e.error}). Please start again.") from None
            except (httpx.HTTPError, ValueError) as e:
                log.warning("code exchange at %s failed (%s)", name, type(e).__name__)
                raise FlowError(f"{self.label(name)} did not answer usefully. Please try again in a moment.") from None
        raise FlowError(f"{self.label(name)} did not accept this server's client credentials; tell the administrator.")

    def _email_from_id_token(self, name: str, endpoints: Endpoints, token: dict[str, Any], nonce: str) -> str | None:
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            return None
        claims = _jwt_claims(id_token)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if (self.configs[name].client_id not in audiences or claims.get("nonce") != nonce
                or not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < time.time() - 60
                or (endpoints.issuer and claims.get("iss") != endpoints.issuer)):
            raise FlowError("The identity the provider returned does not belong to this sign-in. Please start again.")
        return _verified_email(claims)

    async def _email_from_userinfo(self, endpoints: Endpoints, token: dict[str, Any]) -> str:
        if not endpoints.userinfo_url:
            raise FlowError("The provider told us no e-mail address (no ID token, no userinfo endpoint).")
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            try:
                answer = await http.get(endpoints.userinfo_url,
                                        headers={"Authorization": f"Bearer {token.get('access_token', '')}"})
                answer.raise_for_status()
                claims = answer.json()
            except (httpx.HTTPError, ValueError):
                raise FlowError("The provider's userinfo endpoint did not answer usefully. Please try again.") from None
        if not isinstance(claims, dict):
            raise FlowError("The provider's userinfo answer is not usable.")
        return _verified_email(claims)

    async def endpoints(self, name: str) -> Endpoints:
        config = self.configs[name]
        if config.authorization_url and config.token_url:
            return Endpoints(config.authorization_url, config.token_url, config.userinfo_url, config.issuer)
        if name not in self._discovered:
            self._discovered[name] = await self._discover(name, config)
        return self._discovered[name]

    async def _discover(self, name: str, config: ProviderConfig) -> Endpoints:
        if not config.issuer:
            raise FlowError(f"{self.label(name)} is not fully configured (no URLs, no issuer); tell the administrator.")
        url = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            try:
                answer = await http.get(url)
                answer.raise_for_status()
                doc = answer.json()
                return Endpoints(config.authorization_url or doc["authorization_endpoint"],
                                 config.token_url or doc["token_endpoint"],
                                 config.userinfo_url or doc.get("userinfo_endpoint", ""), doc.get("issuer", config.issuer))
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                raise FlowError(f"Could not read {self.label(name)}'s discovery document. Please try again.") from None

    def _client(self, name: str, index: int, scopes: tuple[str, ...]) -> AsyncOAuth2Client:
        config = self.configs[name]
        return AsyncOAuth2Client(
            client_id=config.client_id, client_secret=(config.client_secrets or ("",))[index] or None,
            token_endpoint_auth_method=config.token_auth_method, scope=" ".join(scopes) or None,
            redirect_uri=self.redirect_uri(name), code_challenge_method="S256",
            timeout=TIMEOUT, follow_redirects=False, trust_env=False)


def new_secret() -> str:
    return str(generate_token(43))


def _jwt_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise FlowError("The provider returned an unreadable ID token.") from None
    if not isinstance(claims, dict):
        raise FlowError("The provider returned an unreadable ID token.")
    return claims


def _verified_email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > 254:
        raise FlowError("The provider did not tell us your e-mail address; allow the 'email' scope and try again.")
    if claims.get("email_verified") is False:
        raise FlowError("The provider says this e-mail address is not verified.")
    return email
