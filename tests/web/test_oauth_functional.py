"""web/oauth.py against the test provider on loopback: claims from the ID token and userinfo,
email_verified, default scopes for an issuer, and one TLS context per process."""

from __future__ import annotations

import ssl
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from inboxlens.config.vault import ProviderConfig
from inboxlens.web.oauth import FlowError, Providers, new_secret
from tests.support.oauth_provider import OAuthProvider

CLIENT_ID, SECRET, EMAIL = "inboxlens-test", "oauth-test-secret-91d", "carol@example.test"
REDIRECT_BASE = "http://127.0.0.1:1"


@pytest.fixture(params=[False, True], ids=["claims-in-id-token", "conforming"])
async def oauth(request: pytest.FixtureRequest) -> AsyncIterator[OAuthProvider]:
    provider = OAuthProvider(clients={CLIENT_ID: [SECRET]}, conforming=request.param)
    await provider.start()
    yield provider
    await provider.stop()


def providers(oauth: OAuthProvider, **overrides: Any) -> Providers:
    config = ProviderConfig(issuer=oauth.issuer, client_id=CLIENT_ID, client_secrets=(SECRET,), **overrides)
    return Providers({"generic": config}, REDIRECT_BASE)


async def sign_in(oauth: OAuthProvider, flows: Providers, *, mailbox: bool = True) -> Any:
    """Run the authorization request at the provider as a browser would; the exchange's Grant."""
    state, verifier, nonce = new_secret(), new_secret(), new_secret()
    url = await flows.authorization_url("generic", mailbox=mailbox, state=state, verifier=verifier, nonce=nonce)
    async with aiohttp.ClientSession() as browser:
        answer = await browser.get(url, allow_redirects=False)
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == [state], query
    return await flows.exchange("generic", query["code"][0], verifier, nonce)


async def test_the_e_mail_comes_from_the_id_token_or_else_from_userinfo(oauth: OAuthProvider) -> None:
    oauth.login = EMAIL
    flows = providers(oauth)
    try:
        grant = await sign_in(oauth, flows)
    finally:
        await flows.close()
    assert (grant.email, grant.subject) == (EMAIL, oauth.users[EMAIL]["sub"])
    assert grant.refresh_token is not None  # offline_access and prompt=consent were asked for by default


async def test_an_unverified_address_is_refused_with_the_reason(oauth: OAuthProvider) -> None:
    oauth.login = EMAIL
    oauth._user(EMAIL)["email_verified"] = False
    flows = providers(oauth)
    try:
        with pytest.raises(FlowError) as refused:
            await sign_in(oauth, flows)
    finally:
        await flows.close()
    assert refused.value.status == 403 and "not verified" in str(refused.value)
    assert refused.value.reason == "email_verified is false"


async def test_userinfo_about_someone_else_is_refused() -> None:
    """Core 5.3.2: userinfo's sub must be the ID token's, or its e-mail is someone else's."""
    oauth = OAuthProvider(clients={CLIENT_ID: [SECRET]}, conforming=True)
    await oauth.start()
    flows = providers(oauth)
    asked: list[str] = []

    async def someone_else(endpoints: Any, token: Any) -> dict[str, Any]:
        asked.append("userinfo")
        return {"sub": "someone-else", "email": EMAIL, "email_verified": True}

    flows._userinfo = someone_else  # type: ignore[method-assign]
    try:
        oauth.login = EMAIL
        with pytest.raises(FlowError) as refused:
            await sign_in(oauth, flows)
    finally:
        await flows.close()
        await oauth.stop()
    assert asked == ["userinfo"] and refused.value.reason == "userinfo sub differs from the ID token's"


async def test_an_issuer_alone_gets_openid_scopes_offline_access_and_consent(oauth: OAuthProvider) -> None:
    flows = providers(oauth, mail_scope="mail.imap")
    try:
        url = await flows.authorization_url("generic", mailbox=True, state="s", verifier=new_secret(), nonce="n")
        login = await flows.authorization_url("generic", mailbox=False, state="s", verifier=new_secret(), nonce="n")
    finally:
        await flows.close()
    query, login_query = parse_qs(urlsplit(url).query), parse_qs(urlsplit(login).query)
    assert query["scope"] == ["openid email offline_access mail.imap"] and query["prompt"] == ["consent"]
    assert login_query["scope"] == ["openid email"] and "prompt" not in login_query


async def test_configured_scopes_and_prompt_win() -> None:
    flows = Providers({"p": ProviderConfig(authorization_url="https://id.test/a", token_url="https://id.test/t",
                                           client_id="c", scopes=("openid", "mail"),
                                           authorize_params={"prompt": "select_account"})}, REDIRECT_BASE)
    try:
        url = await flows.authorization_url("p", mailbox=True, state="s", verifier=new_secret(), nonce="n")
    finally:
        await flows.close()
    query = parse_qs(urlsplit(url).query)
    assert query["scope"] == ["openid mail"] and query["prompt"] == ["select_account"]


async def test_starting_flows_builds_no_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each flow used to build an authlib client, and with it ssl.create_default_context (50-70 ms)."""
    made: list[int] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    flows = Providers({"p": ProviderConfig(authorization_url="https://id.test/a", token_url="https://id.test/t",
                                           client_id="c", scopes=("openid",))}, REDIRECT_BASE)
    at_start = len(made)
    try:
        for _ in range(20):
            await flows.authorization_url("p", mailbox=True, state=new_secret(), verifier=new_secret(), nonce="n")
    finally:
        await flows.close()
    assert at_start <= 1 and len(made) == at_start
