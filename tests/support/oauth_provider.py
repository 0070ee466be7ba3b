"""A small, real OAuth 2.0 / OpenID Connect provider, for tests only (never the product).

It speaks the protocol over loopback HTTP so that authlib's clients and Dovecot's oauth2
passdb work against it unchanged: authorization code with PKCE (S256 only) behind an
auto-approving consent, refresh with rotation and reuse detection (RFC 9700: presenting a
spent refresh token revokes the whole grant), revocation (RFC 7009), introspection
(RFC 7662), userinfo, discovery and a JWKS for RS256 id_tokens.

Offline access follows the two providers we meet: Microsoft's ``offline_access`` scope
always yields a refresh token; Google's ``access_type=offline`` yields one on a user's first
consent for a client, and afterwards only with ``prompt=consent``.

``conforming=True`` behaves like panva's oidc-provider with its defaults: the ID token
carries ``sub`` only and the e-mail claims come from userinfo (OpenID Connect Core 5.4),
and ``offline_access`` yields a refresh token only with ``prompt=consent`` (Core 11).
A user's ``email_verified`` (in ``users``) is what both the ID token and userinfo say.

Tests break it on purpose through plain attributes: ``fail_mode`` (one of ``FAIL_MODES``;
a typo raises ValueError), ``fail_count`` (apply ``fail_mode`` to the next N /token
requests only) and ``delay`` (seconds before /token answers; a client that gives up cancels
the request, so an abandoned refresh never rotates a token). A failed /token request spends
nothing. ``users`` is keyed by lower-cased email; unknown logins are created on first use.

Untrusted input: HTTP requests, bounded to 64 KiB. All state is in memory. Tokens are
never logged: the access log names the path without its query.

Standalone, for demos: ``python -m tests.support.oauth_provider --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from joserfc import jwt  # authlib.jose is deprecated in favour of joserfc (same author)
from joserfc.jwk import RSAKey

log = logging.getLogger("tests.support.oauth_provider")

DEFAULT_CLIENTS = {"inboxlens-test": ["test-secret"]}
DEFAULT_LOGIN = "user@example.test"
DENIED_LOGIN = "deny@example.test"
DEFAULT_SCOPE = "openid email offline_access"
# huge_access_token: a good answer (a refresh grant rotates and spends the token) whose access token is 100 KB.
FAIL_MODES = ("invalid_grant", "server_error", "unavailable", "no_refresh_token", "no_expires_in", "drop",
              "huge_access_token")
MAX_REQUEST_BYTES = 64 * 1024
CODE_TTL = 60
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


@dataclass
class _Grant:
    """One user's consent for one client; revoking it kills every token it issued."""

    email: str
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class _Code:
    grant: _Grant
    redirect_uri: str
    challenge: str
    nonce: str | None
    offline: bool
    expires_at: float
    used: bool = False


@dataclass
class _Issued:
    grant: _Grant
    expires_at: float = float("inf")
    spent: bool = False  # for access tokens: revoked on their own; for refresh tokens: rotated


@dataclass(eq=False)
class _Refused(Exception):
    error: str
    description: str
    status: int = 400
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        body = {"error": self.error, "error_description": self.description}
        return web.json_response(body, status=self.status, headers={**NO_STORE, **self.headers})


def _bad_client() -> _Refused:
    return _Refused("invalid_client", "client authentication failed", 401, {"WWW-Authenticate": 'Basic realm="oauth"'})


class OAuthProvider:
    def __init__(self, *, clients: dict[str, list[str]] | None = None,
                 access_token_ttl: int = 3600, rotate_refresh_tokens: bool = True, conforming: bool = False) -> None:
        self.clients = {k: list(v) for k, v in (clients or DEFAULT_CLIENTS).items()}
        self.conforming = conforming
        self.access_token_ttl = access_token_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.url = ""
        self._fail_mode: str | None = None
        self.fail_count: int | None = None
        self.delay: float = 0
        # Who is "at the keyboard" when an authorization request carries no login_hint.
        self.login = DEFAULT_LOGIN
        # Set to make the user pick this account whatever login_hint says (as a person can).
        self.force_login: str | None = None
        self.refresh_grants = 0
        self.token_requests: list[dict[str, str]] = []
        self.users: dict[str, dict[str, Any]] = {}
        self._codes: dict[str, _Code] = {}
        self._access: dict[str, _Issued] = {}
        self._refresh: dict[str, _Issued] = {}
        self._grants: list[_Grant] = []
        self._consented: set[tuple[str, str]] = set()
        self._key: RSAKey | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    # --- lifecycle and addresses

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._stopping.clear()
        self._key = await asyncio.to_thread(
            RSAKey.generate_key, 2048, {"use": "sig", "alg": "RS256"}, True, True)
        self._runner = web.AppRunner(self._app(), handler_cancellation=True, shutdown_timeout=1.0,
                                     access_log_class=_PathOnlyAccessLogger, access_log=log)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        self._stopping.set()  # delayed answers give up at once instead of holding the shutdown
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_route("*", "/userinfo", self._userinfo)
        app.router.add_post("/revoke", self._revoke)
        app.router.add_route("*", "/introspect", self._introspect)
        app.router.add_get("/jwks", self._jwks)
        return app

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def authorize_url(self) -> str:
        return self.url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def revoke_url(self) -> str:
        return self.url + "/revoke"

    @property
    def introspect_url(self) -> str:
        return self.url + "/introspect"

    @property
    def userinfo_url(self) -> str:
        return self.url + "/userinfo"

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks"

    @property
    def fail_mode(self) -> str | None:
        return self._fail_mode

    @fail_mode.setter
    def fail_mode(self, mode: str | None) -> None:
        if mode is not None and mode not in FAIL_MODES:
            raise ValueError(f"fail_mode must be None or one of {FAIL_MODES}, not {mode!r}")
        self._fail_mode = mode

    # --- direct control, as if a user acted at the provider

    def issue_refresh_token(self, email: str, client_id: str = "inboxlens-test", scope: str = DEFAULT_SCOPE) -> str:
        grant = self._new_grant(email, client_id, scope)
        self._consented.add((grant.email, client_id))
        return self._mint_refresh(grant)

    def issue_access_token(self, email: str, client_id: str = "inboxlens-test", ttl: int | None = None) -> str:
        grant = self._new_grant(email, client_id, "openid email")
        return self._mint_access(grant, self.access_token_ttl if ttl is None else ttl)

    def revoke_access_token(self, access_token: str) -> None:
        """As if that access token expired early: the grant and its refresh token stay valid."""
        self._access.pop(access_token, None)

    def revoke_grant_for(self, email: str) -> None:
        email = email.lower()
        for grant in self._grants:
            if grant.email == email:
                grant.revoked = True
        self._consented = {c for c in self._consented if c[0] != email}

    def is_active(self, access_token: str) -> bool:
        return self._live_access(access_token) is not None

    def _user(self, email: str) -> dict[str, Any]:
        email = email.lower()
        if email not in self.users:
            sub = hashlib.sha256(email.encode()).hexdigest()[:20]
            self.users[email] = {"sub": sub, "email": email, "email_verified": True, "name": email.split("@")[0]}
        return self.users[email]

    def _new_grant(self, email: str, client_id: str, scope: str) -> _Grant:
        grant = _Grant(self._user(email)["email"], client_id, scope)
        self._grants.append(grant)
        return grant

    def _mint_access(self, grant: _Grant, ttl: int) -> str:
        token = secrets.token_urlsafe(32)
        self._access[token] = _Issued(grant, time.time() + ttl)
        return token

    def _mint_refresh(self, grant: _Grant) -> str:
        token = secrets.token_urlsafe(32)
        self._refresh[token] = _Issued(grant)
        return token

    def _live_access(self, token: str) -> _Issued | None:
        issued = self._access.get(token)
        if issued is None or issued.spent or issued.grant.revoked or issued.expires_at <= time.time():
            return None
        return issued

    # --- discovery and keys

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.issuer, "authorization_endpoint": self.authorize_url,
            "token_endpoint": self.token_url, "userinfo_endpoint": self.userinfo_url,
            "jwks_uri": self.jwks_url, "revocation_endpoint": self.revoke_url,
            "introspection_endpoint": self.introspect_url,
            "response_types_supported": ["code"], "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile", "offline_access"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "email", "email_verified", "name", "nonce"],
        })

    async def _jwks(self, request: web.Request) -> web.Response:
        assert self._key is not None
        return web.json_response({"keys": [self._key.as_dict(private=False)]})

    def _id_token(self, grant: _Grant, nonce: str | None) -> str:
        assert self._key is not None
        user = self._user(grant.email)
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user["sub"], "aud": grant.client_id, "iat": now,
                  "exp": now + self.access_token_ttl}
        if not self.conforming:
            claims.update(email=user["email"], email_verified=user["email_verified"])
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode({"alg": "RS256", "kid": self._key.kid}, claims, self._key)

    # --- /authorize: consent is automatic; the user is the login_hint

    async def _authorize(self, request: web.Request) -> web.Response:
        query = request.query
        client_id, redirect_uri = query.get("client_id", ""), query.get("redirect_uri", "")
        if client_id not in self.clients or not _loopback(redirect_uri) or _repeated(query):
            return web.Response(status=400, text="unknown client, bad redirect_uri or repeated parameter\n")
        state = {"state": query["state"]} if "state" in query else {}
        try:
            code = self._consent(query)
        except _Refused as e:
            raise web.HTTPFound(_with_query(redirect_uri, {"error": e.error, "error_description": e.description, **state}))
        raise web.HTTPFound(_with_query(redirect_uri, {"code": code, **state}))

    def _consent(self, query: Mapping[str, str]) -> str:
        if query.get("response_type") != "code":
            raise _Refused("unsupported_response_type", "only response_type=code is supported")
        if not _CHALLENGE.fullmatch(query.get("code_challenge", "")):
            raise _Refused("invalid_request", "a PKCE code_challenge is required")
        if query.get("code_challenge_method") != "S256":
            raise _Refused("invalid_request", "code_challenge_method must be S256")
        email = (self.force_login or query.get("login_hint", self.login)).lower()
        if email == DENIED_LOGIN:
            raise _Refused("access_denied", "the user declined")
        return self._new_code(query, email)

    def _new_code(self, query: Mapping[str, str], email: str) -> str:
        client_id, scope = query["client_id"], query.get("scope", "openid email")
        scopes, prompts = scope.split(), query.get("prompt", "").split()
        first_consent = (email, client_id) not in self._consented
        offline = ("offline_access" in scopes and (not self.conforming or "consent" in prompts)) or (
            query.get("access_type") == "offline" and (first_consent or "consent" in prompts))
        self._consented.add((email, client_id))
        code = secrets.token_urlsafe(32)
        self._codes[code] = _Code(self._new_grant(email, client_id, scope), query["redirect_uri"],
                                  query["code_challenge"], query.get("nonce"), offline, time.time() + CODE_TTL)
        return code

    # --- /token

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests.append({k: str(v) for k, v in form.items()})
        fields = _fields(form)
        if fields.get("grant_type") == "refresh_token":
            self.refresh_grants += 1
        if not await self._waited_out_delay():
            return _drop(request)
        mode = self._take_fail_mode()
        failure = _FAILURES.get(mode or "")
        if failure is not None:
            return failure(request)
        try:
            if _repeated(form):
                raise _Refused("invalid_request", "a parameter is repeated")
            answer = self._grant_for(self._client(request, fields), fields, mode)
        except _Refused as e:
            return e.response()
        return web.json_response(answer, headers=NO_STORE)

    async def _waited_out_delay(self) -> bool:
        if self.delay <= 0:
            return True
        try:
            await asyncio.wait_for(self._stopping.wait(), self.delay)
        except TimeoutError:
            return True
        return False

    def _take_fail_mode(self) -> str | None:
        mode = self.fail_mode
        if mode is None or self.fail_count is None:
            return mode
        if self.fail_count <= 0:
            mode = None
        else:
            self.fail_count -= 1
        if not self.fail_count:
            self.fail_mode = self.fail_count = None
        return mode

    def _grant_for(self, client_id: str, fields: dict[str, str], mode: str | None) -> dict[str, Any]:
        grant_type = fields.get("grant_type")
        if grant_type == "authorization_code":
            answer = self._code_grant(client_id, fields, mode != "no_refresh_token")
        elif grant_type == "refresh_token":
            answer = self._refresh_grant(client_id, fields, mode != "no_refresh_token")
        elif grant_type is None:
            raise _Refused("invalid_request", "grant_type is missing")
        else:
            raise _Refused("unsupported_grant_type", "supported: authorization_code, refresh_token")
        if mode == "no_expires_in":
            del answer["expires_in"]
        if mode == "huge_access_token":
            answer["access_token"] = "x" * 100_000
        return answer

    def _code_grant(self, client_id: str, fields: dict[str, str], may_issue_refresh: bool) -> dict[str, Any]:
        code = self._codes.get(fields.get("code", ""))
        if code is None or code.grant.client_id != client_id or code.expires_at <= time.time() or code.grant.revoked:
            raise _Refused("invalid_grant", "unknown, expired or foreign authorization code")
        if code.used:
            code.grant.revoked = True  # a replayed code may be stolen: kill what it issued (RFC 6749 §4.1.2)
            raise _Refused("invalid_grant", "authorization code already used")
        code.used = True
        if fields.get("redirect_uri") != code.redirect_uri:
            raise _Refused("invalid_grant", "redirect_uri does not match the authorization request")
        verifier = fields.get("code_verifier")
        if verifier is None:
            raise _Refused("invalid_request", "code_verifier is missing")
        if not _VERIFIER.fullmatch(verifier) or not hmac.compare_digest(_s256(verifier), code.challenge):
            raise _Refused("invalid_grant", "PKCE verification failed")
        return self._answer(code.grant, code.grant.scope, code.offline and may_issue_refresh, code.nonce)

    def _refresh_grant(self, client_id: str, fields: dict[str, str], may_rotate: bool) -> dict[str, Any]:
        issued = self._refresh.get(fields.get("refresh_token", ""))
        if issued is None or issued.grant.client_id != client_id or issued.grant.revoked:
            raise _Refused("invalid_grant", "unknown, foreign or revoked refresh token")
        if issued.spent:
            issued.grant.revoked = True  # reuse detection, RFC 9700 §4.14.2
            raise _Refused("invalid_grant", "refresh token already used; the grant is revoked")
        scope = fields.get("scope", issued.grant.scope)
        if not set(scope.split()) <= set(issued.grant.scope.split()):
            raise _Refused("invalid_scope", "the requested scope exceeds the grant")
        rotate = self.rotate_refresh_tokens and may_rotate
        issued.spent = rotate
        return self._answer(issued.grant, scope, rotate, None)

    def _answer(self, grant: _Grant, scope: str, with_refresh: bool, nonce: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = {"access_token": self._mint_access(grant, self.access_token_ttl),
                                  "token_type": "Bearer", "expires_in": self.access_token_ttl, "scope": scope}
        if with_refresh:
            answer["refresh_token"] = self._mint_refresh(grant)
        if "openid" in scope.split():
            answer["id_token"] = self._id_token(grant, nonce)
        return answer

    def _client(self, request: web.Request, fields: Mapping[str, str]) -> str:
        """The authenticated client_id (client_secret_basic or client_secret_post, not both)."""
        basic = _basic_credentials(request)
        if basic is not None and "client_secret" in fields:
            raise _Refused("invalid_request", "use one client authentication method")
        # RFC 6749 §2.3.1 form-encodes Basic credentials; authlib sends them raw. Accept both.
        candidates = [basic, (unquote_plus(basic[0]), unquote_plus(basic[1]))] if basic else [
            (fields.get("client_id", ""), fields.get("client_secret"))]
        for client_id, secret in candidates:
            if secret is not None and self._secret_matches(client_id, secret):
                if fields.get("client_id", client_id) != client_id:
                    raise _Refused("invalid_request", "client_id differs from the authenticated client")
                return client_id
        raise _bad_client()

    def _optional_client(self, request: web.Request, fields: Mapping[str, str]) -> None:
        """Introspection callers (Dovecot) may authenticate or not; wrong credentials are refused."""
        if _basic_credentials(request) is not None or "client_secret" in fields:
            self._client(request, fields)

    def _secret_matches(self, client_id: str, secret: str) -> bool:
        return any(hmac.compare_digest(secret.encode(), known.encode()) for known in self.clients.get(client_id, []))

    # --- userinfo, revocation, introspection

    async def _userinfo(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        issued = self._live_access(_bearer(request) or "")
        if issued is None:
            challenge = 'Bearer error="invalid_token"'
            return web.json_response({"error": "invalid_token"}, status=401, headers={"WWW-Authenticate": challenge})
        return web.json_response(dict(self._user(issued.grant.email)), headers=NO_STORE)

    async def _revoke(self, request: web.Request) -> web.Response:
        fields = _fields(await request.post())
        try:
            client_id = self._client(request, fields)
            if "token" not in fields:
                raise _Refused("invalid_request", "token is missing")
        except _Refused as e:
            return e.response()
        self._revoke_token(client_id, fields["token"])
        return web.Response(status=200, headers=NO_STORE)

    def _revoke_token(self, client_id: str, token: str) -> None:
        refresh, access = self._refresh.get(token), self._access.get(token)
        if refresh is not None and refresh.grant.client_id == client_id:
            refresh.grant.revoked = True
            self._consented.discard((refresh.grant.email, client_id))
        elif access is not None and access.grant.client_id == client_id:
            access.spent = True

    async def _introspect(self, request: web.Request) -> web.Response:
        """Dovecot's passdb: ``post`` sends ``token=``, ``auth`` a Bearer header, ``get`` a query."""
        fields = _fields(await request.post())
        try:
            self._optional_client(request, fields)
        except _Refused as e:
            return e.response()
        token = fields.get("token") or request.query.get("token") or _bearer(request) or ""
        issued = self._live_access(token)
        if issued is None:
            return web.json_response({"active": False}, headers=NO_STORE)
        user, grant = self._user(issued.grant.email), issued.grant
        return web.json_response({
            "active": True, "email": user["email"], "sub": user["sub"], "username": user["email"],
            "client_id": grant.client_id, "scope": grant.scope, "exp": int(issued.expires_at),
            "token_type": "Bearer", "iss": self.issuer}, headers=NO_STORE)


def _server_error(request: web.Request) -> web.Response:
    return web.Response(status=500, text="<html><body>500 Internal Server Error</body></html>", content_type="text/html")


def _unavailable(request: web.Request) -> web.Response:
    return _Refused("temporarily_unavailable", "try again later", 503, {"Retry-After": "1"}).response()


def _invalid_grant(request: web.Request) -> web.Response:
    return _Refused("invalid_grant", "the provider refused the grant (fail_mode)").response()


def _drop(request: web.Request) -> web.Response:
    """Close the connection unanswered; the response returned is never written."""
    assert request.transport is not None
    request.transport.close()
    return web.Response(status=204)


_FAILURES = {"invalid_grant": _invalid_grant, "server_error": _server_error, "unavailable": _unavailable, "drop": _drop}


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _loopback(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")
            and not parts.fragment and parts.username is None)


def _with_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *params.items()])
    return urlunsplit(parts._replace(query=query))


def _fields(form: Mapping[str, Any]) -> dict[str, str]:
    """Form fields; an empty one counts as absent (RFC 6749 §3.1). Dovecot posts ``client_id=&client_secret=``."""
    return {k: str(v) for k, v in form.items() if str(v)}


def _repeated(params: Any) -> bool:
    keys = list(params.keys())
    return len(keys) != len(set(keys))


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        raise _bad_client() from None
    return client_id, secret


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class _PathOnlyAccessLogger(AbstractAccessLogger):
    """Method, path and status: never the query string, where a token or code could be."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s", request.method, request.path, response.status)


async def _serve(host: str, port: int) -> None:
    provider = OAuthProvider()
    await provider.start(host, port)
    print(f"{provider.url}  (discovery: {provider.url}/.well-known/openid-configuration;"
          f" clients: {provider.clients})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await provider.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local OAuth 2.0 / OpenID Connect provider for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # "Until interrupted" must not depend on what we inherit: a shell starting us (or the pytest
    # that spawns us) in the background hands down SIGINT ignored, and Python then keeps it so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        asyncio.run(_serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
