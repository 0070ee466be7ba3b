"""CORS on /api/v1: only the configured extension origin, echoed exactly; nothing for anyone else."""

from __future__ import annotations

from typing import Any

import pytest

from tests.web.conftest import Stack, api, bearer, connect, new_token

EXTENSION = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
ELSEWHERE = "https://evil.example"
PREFLIGHT = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}


@pytest.fixture
def web_settings() -> dict[str, Any]:
    return {"cors_origins": [EXTENSION, "https://dashboard.example"]}


def no_cors(headers: Any) -> bool:
    return not any(name.lower().startswith("access-control-") for name in headers)


async def test_preflight_from_the_extension_is_answered(stack: Stack):
    async with stack.browser() as client:
        response = await client.options("/api/v1/accounts/1/sync", headers={
            "Origin": EXTENSION, **PREFLIGHT, "Access-Control-Request-Method": "POST"})
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == EXTENSION
    assert response.headers["Vary"] == "Origin"
    assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "DELETE"}
    assert set(response.headers["Access-Control-Allow-Headers"].split(", ")) == {
        "Authorization", "Content-Type", "X-CSRF-Token"}
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("origin", [ELSEWHERE, "null", EXTENSION + "x", "chrome-extension://other",
                                    EXTENSION.upper()])
async def test_preflight_from_any_other_origin_gets_no_cors(stack: Stack, origin: str):
    async with stack.browser() as client:
        response = await client.options("/api/v1/me", headers={"Origin": origin, **PREFLIGHT})
        body = await response.json()
    assert (response.status, body["error"]["code"]) == (403, "origin_not_allowed")
    assert no_cors(response.headers) and response.headers["Vary"] == "Origin"


async def test_answers_carry_cors_for_the_extension_only(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, "alice@example.test")
        token = await new_token(browser)
    async with stack.browser() as client:
        ours, body = await api(client, "GET", "/me", token, headers={"Origin": EXTENSION})
        theirs, _ = await api(client, "GET", "/me", token, headers={"Origin": ELSEWHERE})
        plain, _ = await api(client, "GET", "/me", token)
        refused, error = await api(client, "GET", "/me", headers={"Origin": EXTENSION, **bearer("ilk_bad")})
    assert ours.status == 200 and body["user"]["email"] == "alice@example.test"
    assert ours.headers["Access-Control-Allow-Origin"] == EXTENSION
    assert "Access-Control-Allow-Credentials" not in ours.headers
    assert "Retry-After" in ours.headers["Access-Control-Expose-Headers"]
    # Another origin still gets its answer (a bearer token is no ambient authority): the browser hides it.
    assert theirs.status == 200 and no_cors(theirs.headers) and no_cors(plain.headers)
    assert all(r.headers["Vary"] == "Origin" for r in (ours, theirs, plain))
    # The extension can read why it was refused.
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == EXTENSION
    assert error["error"]["code"] == "unauthorized"


async def test_pages_outside_the_api_get_no_cors(stack: Stack):
    async with stack.browser() as client:
        response = await client.get("/", headers={"Origin": EXTENSION})
        preflight = await client.options("/logout", headers={"Origin": EXTENSION, **PREFLIGHT})
    assert no_cors(response.headers) and no_cors(preflight.headers)
