"""The client side of the OAuth 2.0 / OpenID Connect flows web runs.

Authorization code with PKCE (S256), a ``state`` kept in the browser's server-side
session, a ``nonce`` checked in the ID token. The ID token comes straight from the
provider's token endpoint over TLS, so its signature need not be checked (OpenID
Connect Core 3.1.3.7); its issuer, audience, expiry and nonce are. Who signed in is
the provider and the ID token's ``sub``; the e-mail address and ``email_verified``
come from the ID token, and from the userinfo endpoint when the ID token leaves them
out (Core 5.4 lets a provider put only ``sub`` there; userinfo's ``sub`` must then
match, Core 5.3.2). An address the provider says is not verified is refused.

A generic provider may give only an issuer: its discovery document fills in the URLs,
and with no scopes configured it is asked for ``openid email offline_access`` plus its
``mail_scope``, with ``prompt=consent`` (Core 11: offline access needs it).

One TLS context and one HTTP client serve every flow of the process: an unauthenticated
request that starts a flow builds a URL and touches no socket (a new client per flow
cost 50-70 ms of CPU, nearly all of it ``ssl.create_default_context``).
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx2 as httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from inboxlens.config.vault import ProviderConfig
from inboxlens.errors import InboxLensError

log = logging.getLogger("inboxlens.web.oauth")
TIMEOUT = 15.0
MAX_ANSWER = 256 * 1024
OIDC_SCOPES = ("openid", "email", "offline_access")
RETRY_WITH_NEXT_SECRET = frozenset({"invalid_client", "unauthorized_client"})


class FlowError(InboxLensError):
    """The provider could not complete a flow; the message is safe to show a user.

    ``reason`` is a short code for the log line (never a token or a claim's value);
    ``status`` the HTTP status of the page that shows it.
    """

    def __init__(self, message: str, reason: str = "provider", status: int = 502) -> None:
        super().__init__(message)
        self.reason, self.status = reason, status


@dataclass(frozen=True)
class Endpoints:
    authorization_url: str
    token_url: str
    userinfo_url: str
    issuer: str


@dataclass(frozen=True)
class Grant:
    """Who signed in (provider's ``sub``), their verified address, and the refresh token if any."""

    subject: str
    email: str
    refresh_token: str | None
    scope: str | None = None  # what the token answer says was granted; None: as asked (RFC 6749 5.1)

    def __repr__(self) -> str:
        return f"Grant(email={self.email!r}, refresh_token={'<present>' if self.refresh_token else None})"


def new_http_client() -> httpx.AsyncClient:
    """The process's one HTTP client (and TLS context) for every provider call web makes."""
    return httpx.AsyncClient(timeout=TIMEOUT, trust_env=False, follow_redirects=False,
                             verify=ssl.create_default_context())


class Providers:
    def __init__(self, configs: Mapping[str, ProviderConfig], base_url: str,
                 http: httpx.AsyncClient | None = None) -> None:
        self.configs = {name: c for name, c in configs.items() if c.client_id}
        self.base_url = base_url
        self.http = http or new_http_client()
        self._discovered: dict[str, Endpoints] = {}

    async def close(self) -> None:
        await self.http.aclose()

    def names(self) -> list[str]:
        return sorted(self.configs)

    def label(self, name: str) -> str:
        return self.configs[name].display_name or name.capitalize()

    def redirect_uri(self, name: str) -> str:
        return f"{self.base_url}/oauth/{name}/callback"

    def scopes(self, name: str, *, mailbox: bool) -> tuple[str, ...]:
        """What a flow asks for: configured scopes, else OpenID defaults for an issuer."""
        config = self.configs[name]
        if not mailbox:
            return config.login_scopes
        if config.scopes or not config.issuer:
            return config.scopes
        return OIDC_SCOPES + ((config.mail_scope,) if config.mail_scope else ())

    def authorize_params(self, name: str, *, mailbox: bool) -> dict[str, str]:
        config = self.configs[name]
        if not mailbox:
            return {}
        params = dict(config.authorize_params)
        if "offline_access" in self.scopes(name, mailbox=True) and "prompt" not in params:
            params["prompt"] = "consent"  # OpenID Connect Core 11: without it offline_access may be ignored
        return params

    async def authorization_url(self, name: str, *, mailbox: bool, state: str, verifier: str, nonce: str,
                                login_hint: str = "", extra_scopes: tuple[str, ...] = ()) -> str:
        config, endpoints = self.configs[name], await self.endpoints(name)
        params = {"response_type": "code", "client_id": config.client_id, "redirect_uri": self.redirect_uri(name),
                  "state": state, "nonce": nonce, "code_challenge": create_s256_code_challenge(verifier),
                  "code_challenge_method": "S256", **self.authorize_params(name, mailbox=mailbox)}
        scopes = self.scopes(name, mailbox=mailbox) + extra_scopes
        if scopes:
            params["scope"] = " ".join(scopes)
        if login_hint:
            params["login_hint"] = login_hint
        return _with_query(endpoints.authorization_url, params)

    async def exchange(self, name: str, code: str, verifier: str, nonce: str) -> Grant:
        """Trade the code for tokens and say who signed in, with which verified address."""
        endpoints = await self.endpoints(name)
        token = await self._fetch_token(name, endpoints, code, verifier)
        claims = self._id_token_claims(name, endpoints, token, nonce)
        if not isinstance(claims.get("email"), str):
            claims = await self._with_userinfo(endpoints, token, claims)
        refresh, scope = token.get("refresh_token"), token.get("scope")
        return Grant(_subject(claims), _verified_email(claims), refresh if isinstance(refresh, str) and refresh else None,
                     scope if isinstance(scope, str) else None)

    async def _fetch_token(self, name: str, endpoints: Endpoints, code: str, verifier: str) -> dict[str, Any]:
        config = self.configs[name]
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri(name),
                "code_verifier": verifier, "client_id": config.client_id}
        for secret in config.client_secrets or ("",):
            answer = await self._post_token(name, endpoints.token_url, form, secret)
            error = answer.get("error")
            if error is None:
                return answer
            if error not in RETRY_WITH_NEXT_SECRET:
                raise FlowError(f"{self.label(name)} refused the sign-in ({_code(error)}). Please start again.",
                                f"token endpoint said {_code(error)}")
        raise FlowError(f"{self.label(name)} did not accept this server's client credentials; tell the administrator.",
                        "client credentials refused")

    async def _post_token(self, name: str, url: str, form: dict[str, str], secret: str) -> dict[str, Any]:
        """The token endpoint's JSON answer: tokens, or ``{"error": ...}``."""
        config = self.configs[name]
        basic = config.token_auth_method == "client_secret_basic"
        auth = httpx.BasicAuth(config.client_id, secret) if basic else httpx.USE_CLIENT_DEFAULT
        data = {**form, "client_secret": secret} if secret and not basic else form
        try:
            answer = await self.http.post(url, data=data, auth=auth, headers={"Accept": "application/json"})
            body = json.loads(answer.content[:MAX_ANSWER]) if answer.content else None
        except (httpx.HTTPError, ValueError) as e:
            raise FlowError(f"{self.label(name)} did not answer usefully. Please try again in a moment.",
                            f"token endpoint unreachable ({type(e).__name__})") from None
        if isinstance(body, dict) and (answer.status_code == 200 and isinstance(body.get("access_token"), str)
                                       or isinstance(body.get("error"), str)):
            return body
        raise FlowError(f"{self.label(name)} did not answer usefully. Please try again in a moment.",
                        f"token endpoint answered HTTP {answer.status_code}")

    def _id_token_claims(self, name: str, endpoints: Endpoints, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            return {}
        claims = _jwt_claims(id_token)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        problem = ("audience" if self.configs[name].client_id not in audiences else
                   "nonce" if claims.get("nonce") != nonce else
                   "expiry" if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < time.time() - 60
                   else "issuer" if endpoints.issuer and claims.get("iss") != endpoints.issuer else None)
        if problem is not None:
            raise FlowError("The identity the provider returned does not belong to this sign-in. Please start again.",
                            f"ID token {problem} does not match")
        return claims

    async def _with_userinfo(self, endpoints: Endpoints, token: dict[str, Any],
                             claims: dict[str, Any]) -> dict[str, Any]:
        """The ID token's claims completed from userinfo (same ``sub``, or it is someone else)."""
        info = await self._userinfo(endpoints, token)
        if claims and info.get("sub") != claims.get("sub"):
            raise FlowError("The provider's userinfo answer is about someone else than the sign-in. Please start again.",
                            "userinfo sub differs from the ID token's")
        return {**info, **{k: v for k, v in claims.items() if k not in ("email", "email_verified")}}

    async def _userinfo(self, endpoints: Endpoints, token: dict[str, Any]) -> dict[str, Any]:
        if not endpoints.userinfo_url:
            raise FlowError("The provider told us no e-mail address (none in the ID token, no userinfo endpoint).",
                            "no email claim and no userinfo endpoint")
        try:
            answer = await self.http.get(endpoints.userinfo_url,
                                         headers={"Authorization": f"Bearer {token.get('access_token', '')}"})
            answer.raise_for_status()
            info = json.loads(answer.content[:MAX_ANSWER])
        except (httpx.HTTPError, ValueError) as e:
            raise FlowError("The provider's userinfo endpoint did not answer usefully. Please try again.",
                            f"userinfo failed ({type(e).__name__})") from None
        if not isinstance(info, dict):
            raise FlowError("The provider's userinfo answer is not usable.", "userinfo is not an object")
        return info

    async def endpoints(self, name: str) -> Endpoints:
        config = self.configs[name]
        if config.authorization_url and config.token_url:
            return Endpoints(config.authorization_url, config.token_url, config.userinfo_url, config.issuer)
        if name not in self._discovered:
            self._discovered[name] = await self._discover(name, config)
        return self._discovered[name]

    async def _discover(self, name: str, config: ProviderConfig) -> Endpoints:
        if not config.issuer:
            raise FlowError(f"{self.label(name)} is not fully configured (no URLs, no issuer); tell the administrator.",
                            "no URLs and no issuer")
        url = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            answer = await self.http.get(url)
            answer.raise_for_status()
            doc = answer.json()
            return Endpoints(config.authorization_url or doc["authorization_endpoint"],
                             config.token_url or doc["token_endpoint"],
                             config.userinfo_url or doc.get("userinfo_endpoint", ""), doc.get("issuer", config.issuer))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            log.warning("discovery for %s failed (%s)", name, type(e).__name__)
            raise FlowError(f"Could not read {self.label(name)}'s discovery document. Please try again.",
                            "discovery failed") from None


def new_secret() -> str:
    return str(generate_token(43))


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


def _code(error: object) -> str:
    """An OAuth error code as it may be shown and logged: short snake_case, else 'unknown'."""
    text = str(error)
    return text if len(text) <= 40 and text.replace("_", "").isalpha() and text.isascii() else "unknown"


def _jwt_claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise FlowError("The provider returned an unreadable ID token.", "ID token unreadable") from None
    if not isinstance(claims, dict):
        raise FlowError("The provider returned an unreadable ID token.", "ID token is not an object")
    return claims


def _subject(claims: dict[str, Any]) -> str:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= 255:
        raise FlowError("The provider did not say who signed in (no subject). Please start again.", "no sub claim")
    return sub


def _verified_email(claims: dict[str, Any]) -> str:
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email or len(email) > 254:
        raise FlowError("The provider did not tell us your e-mail address; allow the 'email' scope and try again.",
                        "no usable email claim")
    if claims.get("email_verified") is False or claims.get("email_verified") == "false":
        raise FlowError(f"The provider says {email.lower()} is not verified, so InboxLens cannot trust it is yours. "
                        "Verify the address at the provider, then start again.", "email_verified is false", 403)
    return email.lower()
