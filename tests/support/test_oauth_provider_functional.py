"""The local OAuth provider over real loopback HTTP, driven by httpx2 and authlib's client.

The fail-mode tests also pin how authlib's AsyncOAuth2Client reports each failure, because
the vault classifies refresh failures by exactly these exception types.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx2
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from tests.support.oauth_provider import OAuthProvider

CLIENT_ID = "inboxlens-test"
OLD_SECRET = "secret-being-retired"
SECRET = "test-secret"
REDIRECT = "http://127.0.0.1:8765/callback"
EMAIL = "alice@example.test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def provider() -> AsyncIterator[OAuthProvider]:
    p = OAuthProvider(clients={CLIENT_ID: [OLD_SECRET, SECRET], "other-client": ["other-secret"]},
                      access_token_ttl=600)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(follow_redirects=False, trust_env=False, timeout=5) as client:
        yield client


def authlib_client(secret: str = SECRET, **kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(client_id=kwargs.pop("client_id", CLIENT_ID), client_secret=secret, redirect_uri=REDIRECT,
                             code_challenge_method="S256", trust_env=False, timeout=5, **kwargs)


@pytest.fixture
async def oauth() -> AsyncIterator[AsyncOAuth2Client]:
    async with authlib_client() as client:
        yield client


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


async def authorize(http: httpx2.AsyncClient, provider: OAuthProvider, verifier: str, **params: str | None) -> httpx2.URL:
    """One pass through /authorize; returns where the 302 points (not followed)."""
    query: dict[str, str | None] = {
        "response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "state": "state-1",
        "scope": "openid email offline_access", "code_challenge": challenge(verifier),
        "code_challenge_method": "S256", "login_hint": EMAIL, **params}
    answer = await http.get(provider.authorize_url, params={k: v for k, v in query.items() if v is not None})
    assert answer.status_code == 302, answer.text
    return httpx2.URL(answer.headers["location"])


async def exchange(http: httpx2.AsyncClient, provider: OAuthProvider, code: str, verifier: str) -> httpx2.Response:
    return await http.post(provider.token_url, auth=(CLIENT_ID, SECRET), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})


async def refresh(http: httpx2.AsyncClient, provider: OAuthProvider, token: str, **auth: Any) -> httpx2.Response:
    return await http.post(provider.token_url, auth=auth.get("auth", (CLIENT_ID, SECRET)),
                           data={"grant_type": "refresh_token", "refresh_token": token})


async def introspect(http: httpx2.AsyncClient, provider: OAuthProvider, token: str) -> dict[str, Any]:
    answer = await http.post(provider.introspect_url, data={"token": token})
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def new_verifier() -> str:
    return secrets.token_urlsafe(48)


# --- discovery and the authorization code flow


async def test_discovery_names_every_endpoint(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    meta = (await http.get(provider.url + "/.well-known/openid-configuration")).json()
    assert meta["issuer"] == provider.issuer == provider.url
    assert [meta["authorization_endpoint"], meta["token_endpoint"], meta["revocation_endpoint"],
            meta["introspection_endpoint"], meta["userinfo_endpoint"], meta["jwks_uri"]] == [
        provider.authorize_url, provider.token_url, provider.revoke_url,
        provider.introspect_url, provider.userinfo_url, provider.jwks_url]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert set(meta["token_endpoint_auth_methods_supported"]) == {"client_secret_post", "client_secret_basic"}


async def test_code_flow_with_pkce_works_with_authlib(provider: OAuthProvider, oauth: AsyncOAuth2Client) -> None:
    verifier = new_verifier()
    url, state = oauth.create_authorization_url(provider.authorize_url, code_verifier=verifier, login_hint=EMAIL,
                                                scope="openid email offline_access", nonce="n-0S6")
    async with httpx2.AsyncClient(follow_redirects=False) as browser:
        callback = (await browser.get(url)).headers["location"]
    assert callback.startswith(REDIRECT + "?") and f"state={state}" in callback
    token = await oauth.fetch_token(provider.token_url, authorization_response=callback, state=state,
                                    code_verifier=verifier)
    assert token["token_type"] == "Bearer" and token["expires_in"] == 600
    assert provider.is_active(token["access_token"]) and token["refresh_token"]
    assert token["scope"] == "openid email offline_access"
    me = (await oauth.get(provider.userinfo_url)).json()  # authlib attaches the bearer token
    assert me["email"] == EMAIL and me["email_verified"] is True and me["sub"] == provider.users[EMAIL]["sub"]
    assert provider.token_requests[-1]["code_verifier"] == verifier


async def test_id_token_verifies_against_jwks(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    verifier = new_verifier()
    callback = await authorize(http, provider, verifier, nonce="nonce-42")
    token = (await exchange(http, provider, callback.params["code"], verifier)).json()
    keys = KeySet.import_key_set((await http.get(provider.jwks_url)).json())
    claims = jwt.decode(token["id_token"], keys, algorithms=["RS256"]).claims
    assert claims["iss"] == provider.issuer and claims["aud"] == CLIENT_ID and claims["nonce"] == "nonce-42"
    assert claims["email"] == EMAIL and claims["email_verified"] is True and claims["exp"] > claims["iat"]
    header, payload, signature = token["id_token"].split(".")
    with pytest.raises(BadSignatureError):
        jwt.decode(f"{header}.{payload}.{signature[:-6]}AAAAAA", keys, algorithms=["RS256"])


async def test_code_is_single_use_and_a_replay_revokes_what_it_issued(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    verifier = new_verifier()
    code = (await authorize(http, provider, verifier)).params["code"]
    first = (await exchange(http, provider, code, verifier)).json()
    replay = await exchange(http, provider, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert replay.headers["cache-control"] == "no-store"
    assert not provider.is_active(first["access_token"])
    assert (await refresh(http, provider, first["refresh_token"])).json()["error"] == "invalid_grant"


async def test_wrong_pkce_verifier_is_refused_and_burns_the_code(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    verifier = new_verifier()
    code = (await authorize(http, provider, verifier)).params["code"]
    wrong = await exchange(http, provider, code, new_verifier())
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert (await exchange(http, provider, code, verifier)).json()["error"] == "invalid_grant"


async def test_code_is_bound_to_its_redirect_uri_and_client(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    verifier = new_verifier()
    code = (await authorize(http, provider, verifier)).params["code"]
    foreign = await http.post(provider.token_url, auth=("other-client", "other-secret"), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier})
    assert foreign.json()["error"] == "invalid_grant"
    code = (await authorize(http, provider, verifier)).params["code"]
    moved = await http.post(provider.token_url, auth=(CLIENT_ID, SECRET), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT + "2", "code_verifier": verifier})
    assert moved.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("params, error", [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),  # absent means plain (RFC 7636 §4.3)
    ({"code_challenge": None}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"login_hint": "deny@example.test"}, "access_denied"),
])
async def test_authorize_errors_redirect_with_state(provider: OAuthProvider, http: httpx2.AsyncClient,
                                                    params: dict[str, str | None], error: str) -> None:
    callback = await authorize(http, provider, new_verifier(), **params)
    assert str(callback).startswith(REDIRECT + "?")
    assert callback.params["error"] == error and callback.params["state"] == "state-1"
    assert "code" not in callback.params


@pytest.mark.parametrize("params", [
    {"client_id": "unknown"}, {"redirect_uri": "https://evil.example/cb"}, {"redirect_uri": None},
    {"redirect_uri": REDIRECT + "#frag"},
])
async def test_authorize_never_redirects_for_a_bad_client_or_redirect(provider: OAuthProvider, http: httpx2.AsyncClient,
                                                                       params: dict[str, str | None]) -> None:
    query = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT,
             "code_challenge": challenge(new_verifier()), "code_challenge_method": "S256", **params}
    answer = await http.get(provider.authorize_url, params={k: v for k, v in query.items() if v is not None})
    assert answer.status_code == 400 and "location" not in answer.headers


async def test_refresh_token_only_when_offline_access_is_asked(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    async def grants_refresh_token(email: str, **params: str | None) -> bool:
        verifier = new_verifier()
        code = (await authorize(http, provider, verifier, login_hint=email, **params)).params["code"]
        return "refresh_token" in (await exchange(http, provider, code, verifier)).json()

    assert not await grants_refresh_token("online@example.test", scope="openid email")
    assert await grants_refresh_token("ms@example.test", scope="openid email offline_access")
    assert await grants_refresh_token("ms@example.test", scope="openid email offline_access")
    google = {"scope": "openid email", "access_type": "offline"}
    assert await grants_refresh_token("g@example.test", **google)  # first consent
    assert not await grants_refresh_token("g@example.test", **google)  # Google: again only with prompt=consent
    assert await grants_refresh_token("g@example.test", prompt="consent", **google)
    provider.revoke_grant_for("g@example.test")
    assert await grants_refresh_token("g@example.test", **google)  # consent was withdrawn, so asked again


# --- refresh, rotation and reuse detection


async def test_refresh_rotates_the_refresh_token(provider: OAuthProvider, oauth: AsyncOAuth2Client) -> None:
    first = provider.issue_refresh_token(EMAIL)
    token = await oauth.refresh_token(provider.token_url, refresh_token=first)
    assert token["refresh_token"] != first and provider.is_active(token["access_token"])
    again = await oauth.refresh_token(provider.token_url, refresh_token=token["refresh_token"])
    assert provider.is_active(again["access_token"]) and provider.refresh_grants == 2
    assert [r["refresh_token"] for r in provider.token_requests] == [first, token["refresh_token"]]


async def test_reusing_a_rotated_refresh_token_revokes_the_grant(provider: OAuthProvider, oauth: AsyncOAuth2Client) -> None:
    first = provider.issue_refresh_token(EMAIL)
    token = dict(await oauth.refresh_token(provider.token_url, refresh_token=first))
    with pytest.raises(OAuthError) as reused:
        await oauth.refresh_token(provider.token_url, refresh_token=first)
    assert reused.value.error == "invalid_grant"
    with pytest.raises(OAuthError) as newest:
        await oauth.refresh_token(provider.token_url, refresh_token=token["refresh_token"])
    assert newest.value.error == "invalid_grant"
    assert not provider.is_active(token["access_token"])


async def test_without_rotation_the_refresh_token_stays_and_none_is_sent(http: httpx2.AsyncClient) -> None:
    provider = OAuthProvider(rotate_refresh_tokens=False)
    await provider.start()
    try:
        token = provider.issue_refresh_token(EMAIL)
        for _ in range(2):
            answer = (await refresh(http, provider, token, auth=("inboxlens-test", "test-secret"))).json()
            assert "refresh_token" not in answer and provider.is_active(answer["access_token"])
    finally:
        await provider.stop()


async def test_refresh_token_is_bound_to_its_client(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    token = provider.issue_refresh_token(EMAIL)
    foreign = await refresh(http, provider, token, auth=("other-client", "other-secret"))
    assert foreign.json()["error"] == "invalid_grant"
    assert (await refresh(http, provider, token)).status_code == 200  # the foreign attempt spent nothing


async def test_revoke_grant_for_user_ends_refresh_and_access(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    token = provider.issue_refresh_token(EMAIL)
    access = (await refresh(http, provider, token)).json()
    provider.revoke_grant_for(EMAIL)
    assert (await refresh(http, provider, access["refresh_token"])).json()["error"] == "invalid_grant"
    assert not provider.is_active(access["access_token"])


# --- client authentication and errors


async def test_client_secrets_any_listed_one_works_a_wrong_one_is_invalid_client(provider: OAuthProvider) -> None:
    async with authlib_client("wrong-secret") as wrong:
        with pytest.raises(OAuthError) as refused:
            await wrong.refresh_token(provider.token_url, refresh_token=provider.issue_refresh_token(EMAIL))
    assert refused.value.error == "invalid_client"
    for secret, method in [(OLD_SECRET, "client_secret_basic"), (SECRET, "client_secret_post")]:
        async with authlib_client(secret, token_endpoint_auth_method=method) as client:
            token = await client.refresh_token(provider.token_url, refresh_token=provider.issue_refresh_token(EMAIL))
            assert provider.is_active(token["access_token"])
    assert "client_secret" in provider.token_requests[-1]  # the post method really posted it


async def test_token_errors_are_json_with_status_and_no_store(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    wrong = await http.post(provider.token_url, auth=(CLIENT_ID, "nope"), data={"grant_type": "refresh_token"})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    unknown = await http.post(provider.token_url, auth=(CLIENT_ID, SECRET), data={"grant_type": "password"})
    missing = await http.post(provider.token_url, auth=(CLIENT_ID, SECRET), data={"code": "x"})
    both = await http.post(provider.token_url, auth=(CLIENT_ID, SECRET),
                           data={"grant_type": "refresh_token", "client_secret": SECRET})
    for answer, error in [(unknown, "unsupported_grant_type"), (missing, "invalid_request"), (both, "invalid_request")]:
        assert answer.status_code == 400 and answer.json()["error"] == error and answer.json()["error_description"]
        assert answer.headers["cache-control"] == "no-store"


async def test_oversized_request_is_refused(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    answer = await http.post(provider.token_url, data={"grant_type": "refresh_token", "pad": "x" * 100_000})
    assert answer.status_code == 413


# --- fail modes, as authlib's client reports them


def _is_500_html(e: Any) -> bool:
    return bool(e.response.status_code == 500 and e.response.headers["content-type"].startswith("text/html"))


def _is_503_json(e: Any) -> bool:
    return bool(e.response.status_code == 503 and e.response.json()["error"] == "temporarily_unavailable")


FAILURES: dict[str, tuple[type[Exception], Callable[[Any], bool]]] = {
    "invalid_grant": (OAuthError, lambda e: e.error == "invalid_grant"),
    # authlib raises for any 5xx before it reads the body: a JSON error there is no OAuthError.
    "server_error": (httpx2.HTTPStatusError, _is_500_html),
    "unavailable": (httpx2.HTTPStatusError, _is_503_json),
    "drop": (httpx2.RemoteProtocolError, lambda e: "without sending a response" in str(e)),
}


@pytest.mark.parametrize("mode", FAILURES)
async def test_fail_mode_and_how_authlib_reports_it(provider: OAuthProvider, oauth: AsyncOAuth2Client, mode: str) -> None:
    token = provider.issue_refresh_token(EMAIL)
    provider.fail_mode = mode
    kind, check = FAILURES[mode]
    with pytest.raises(kind) as failed:
        await oauth.refresh_token(provider.token_url, refresh_token=token)
    assert type(failed.value) is kind and check(failed.value)
    provider.fail_mode = None
    answer = await oauth.refresh_token(provider.token_url, refresh_token=token)  # the failure spent nothing
    assert provider.is_active(answer["access_token"]) and provider.refresh_grants == 2


async def test_fail_count_limits_the_failures_then_resets(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    token = provider.issue_refresh_token(EMAIL)
    provider.fail_mode, provider.fail_count = "unavailable", 2
    statuses = [(await refresh(http, provider, token)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert provider.fail_mode is None and provider.fail_count is None and provider.refresh_grants == 3


def test_unknown_fail_mode_is_refused_at_once() -> None:
    with pytest.raises(ValueError):
        OAuthProvider().fail_mode = "server-error"


async def test_no_refresh_token_mode_keeps_the_old_one_valid(provider: OAuthProvider, oauth: AsyncOAuth2Client,
                                                             http: httpx2.AsyncClient) -> None:
    token = provider.issue_refresh_token(EMAIL)
    provider.fail_mode = "no_refresh_token"
    wire = (await refresh(http, provider, token)).json()
    assert "refresh_token" not in wire and provider.is_active(wire["access_token"])
    answer = await oauth.refresh_token(provider.token_url, refresh_token=token)
    assert answer["refresh_token"] == token  # authlib copies the old one into its token when none came back
    provider.fail_mode = None
    rotated = await oauth.refresh_token(provider.token_url, refresh_token=token)
    assert rotated["refresh_token"] != token and provider.is_active(rotated["access_token"])


async def test_no_expires_in_mode(provider: OAuthProvider, http: httpx2.AsyncClient, oauth: AsyncOAuth2Client) -> None:
    provider.fail_mode = "no_expires_in"
    answer = (await refresh(http, provider, provider.issue_refresh_token(EMAIL))).json()
    assert "expires_in" not in answer and provider.is_active(answer["access_token"])
    token = await oauth.refresh_token(provider.token_url, refresh_token=answer["refresh_token"])
    assert "expires_at" not in token and token.is_expired() is None  # authlib then never refreshes on its own


async def test_slow_provider_times_out_and_the_abandoned_refresh_spends_nothing(provider: OAuthProvider,
                                                                                oauth: AsyncOAuth2Client) -> None:
    token = provider.issue_refresh_token(EMAIL)
    provider.delay = 0.3
    with pytest.raises(httpx2.ReadTimeout):
        await oauth.refresh_token(provider.token_url, refresh_token=token, timeout=0.05)
    # Same delay: had the abandoned request lived on, it would answer first, rotate the token
    # and make this one a reuse that revokes the grant.
    answer = await oauth.refresh_token(provider.token_url, refresh_token=token)
    assert provider.is_active(answer["access_token"]) and provider.refresh_grants == 2


async def test_stop_does_not_wait_for_a_delayed_answer(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    provider.delay = 30.0
    pending = asyncio.create_task(refresh(http, provider, provider.issue_refresh_token(EMAIL)))
    while not provider.token_requests:  # the request is in the handler once it is recorded
        await asyncio.sleep(0)
    await asyncio.wait_for(provider.stop(), 0.5)  # aiohttp alone would wait out its shutdown_timeout (1 s)
    with pytest.raises(httpx2.RemoteProtocolError):
        await pending


# --- userinfo, revocation, introspection


async def test_userinfo_needs_a_live_bearer_token(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    access = provider.issue_access_token(EMAIL)
    for method in ("GET", "POST"):
        me = await http.request(method, provider.userinfo_url, headers={"Authorization": f"Bearer {access}"})
        assert me.json() == provider.users[EMAIL]
    expired = provider.issue_access_token(EMAIL, ttl=-1)
    refused = await http.get(provider.userinfo_url, headers={"Authorization": f"Bearer {expired}"})
    assert refused.status_code == 401 and "invalid_token" in refused.headers["www-authenticate"]


async def test_revoking_a_refresh_token_revokes_its_grant(provider: OAuthProvider, oauth: AsyncOAuth2Client,
                                                          http: httpx2.AsyncClient) -> None:
    token = await oauth.refresh_token(provider.token_url, refresh_token=provider.issue_refresh_token(EMAIL))
    answer = await oauth.revoke_token(provider.revoke_url, token=token["refresh_token"], token_type_hint="refresh_token")
    assert answer.status_code == 200
    assert not provider.is_active(token["access_token"])
    assert (await refresh(http, provider, token["refresh_token"])).json()["error"] == "invalid_grant"


async def test_revoking_an_access_token_leaves_the_refresh_token(provider: OAuthProvider, oauth: AsyncOAuth2Client) -> None:
    token = await oauth.refresh_token(provider.token_url, refresh_token=provider.issue_refresh_token(EMAIL))
    await oauth.revoke_token(provider.revoke_url, token=token["access_token"])
    assert not provider.is_active(token["access_token"])
    again = await oauth.refresh_token(provider.token_url, refresh_token=token["refresh_token"])
    assert provider.is_active(again["access_token"])


async def test_revoke_answers_200_for_unknown_tokens_and_needs_client_auth(provider: OAuthProvider,
                                                                           http: httpx2.AsyncClient) -> None:
    unknown = await http.post(provider.revoke_url, auth=(CLIENT_ID, SECRET), data={"token": "no-such-token"})
    assert unknown.status_code == 200
    access = provider.issue_access_token(EMAIL)
    anonymous = await http.post(provider.revoke_url, data={"token": access})
    assert anonymous.status_code == 401 and provider.is_active(access)
    refresh_token = provider.issue_refresh_token(EMAIL)
    foreign = await http.post(provider.revoke_url, auth=("other-client", "other-secret"), data={"token": refresh_token})
    assert foreign.status_code == 200  # answered, but another client's token is left alone
    assert (await refresh(http, provider, refresh_token)).status_code == 200


async def test_revoking_at_the_provider_withdraws_google_style_consent(provider: OAuthProvider,
                                                                       http: httpx2.AsyncClient) -> None:
    google = {"scope": "openid email", "access_type": "offline"}
    verifier = new_verifier()
    code = (await authorize(http, provider, verifier, **google)).params["code"]
    refresh_token = (await exchange(http, provider, code, verifier)).json()["refresh_token"]
    await http.post(provider.revoke_url, auth=(CLIENT_ID, SECRET), data={"token": refresh_token})
    code = (await authorize(http, provider, verifier, **google)).params["code"]
    assert "refresh_token" in (await exchange(http, provider, code, verifier)).json()


async def test_introspection_answers_200_active_or_inactive(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    refresh_token = provider.issue_refresh_token(EMAIL)
    access = (await refresh(http, provider, refresh_token)).json()["access_token"]
    live = await introspect(http, provider, access)
    assert live["active"] is True and live["email"] == live["username"] == EMAIL
    assert live["client_id"] == CLIENT_ID and live["token_type"] == "Bearer" and live["sub"] == provider.users[EMAIL]["sub"]
    expired = provider.issue_access_token(EMAIL, ttl=0)
    for token in ["garbage", "", refresh_token, expired]:
        assert await introspect(http, provider, token) == {"active": False}


async def test_introspection_as_dovecot_calls_it(provider: OAuthProvider, http: httpx2.AsyncClient) -> None:
    access = provider.issue_access_token(EMAIL)
    # introspection_mode = post, exactly as Dovecot 2.3.19 sends it when no client is configured
    post = await http.post(provider.introspect_url, content=f"token={access}&client_id=&client_secret=",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    authenticated = await http.post(provider.introspect_url, auth=(CLIENT_ID, SECRET), data={"token": access})
    bearer = await http.post(provider.introspect_url, headers={"Authorization": f"Bearer {access}"})  # mode auth
    query = await http.get(provider.introspect_url, params={"token": access})  # mode get
    for answer in (post, authenticated, bearer, query):
        assert answer.status_code == 200 and answer.json()["email"] == EMAIL
    wrong = await http.post(provider.introspect_url, auth=(CLIENT_ID, "nope"), data={"token": access})
    assert wrong.status_code == 401


# --- hygiene and the standalone entry point


async def test_no_token_or_secret_reaches_the_log(provider: OAuthProvider, http: httpx2.AsyncClient,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    verifier = new_verifier()
    code = (await authorize(http, provider, verifier)).params["code"]
    token = (await exchange(http, provider, code, verifier)).json()
    await introspect(http, provider, token["access_token"])
    await http.get(provider.introspect_url, params={"token": token["access_token"]})
    await refresh(http, provider, token["refresh_token"])
    # httpx2's own client log names the URL with its query; only the provider's side is checked.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("tests.support", "aiohttp")))
    assert "/introspect" in ours  # the access log is on and was captured
    for secret in [code, verifier, token["access_token"], token["refresh_token"], SECRET]:
        assert secret not in ours


def _inherit_sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# "ignored": what a shell hands to a command it starts in the background (`make test &`, CI
# scripts); the provider used to keep SIGINT ignored then, and outlived the test (issue 12.11).
@pytest.mark.parametrize("inherited", ["default", "ignored"])
async def test_runs_standalone_until_interrupted(inherited: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.oauth_provider", "--port", "0", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=_inherit_sigint_ignored if inherited == "ignored" else None)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        url = line.split()[0]
        assert url.startswith("http://127.0.0.1:")
        async with httpx2.AsyncClient(trust_env=False) as http:
            meta = (await http.get(url + "/.well-known/openid-configuration")).json()
        assert meta["token_endpoint"] == url + "/token"
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_restart_after_stop_serves_again_with_delays_intact(http: httpx2.AsyncClient) -> None:
    provider = OAuthProvider()
    await provider.start()
    await provider.stop()
    await provider.start()
    try:
        provider.delay = 0.01  # a stop that left the provider "stopping" would drop this request
        answer = await refresh(http, provider, provider.issue_refresh_token(EMAIL), auth=("inboxlens-test", "test-secret"))
        assert answer.status_code == 200
    finally:
        await provider.stop()
