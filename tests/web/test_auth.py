"""Authorization is an explicit check on each handler, never an ``assert`` (``python -O`` strips them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from inboxlens.web.api.errors import ApiError
from inboxlens.web.auth import USER_ID, requires_api_caller, requires_user
from inboxlens.web.pages.views import parse_id
from inboxlens.web.sessions import Session
from inboxlens.web.state import CALLER, Caller

WEB = Path(__file__).parents[2] / "inboxlens" / "web"


def test_no_assert_is_left_in_the_web_package() -> None:
    found = [f"{path.relative_to(WEB)}:{node.lineno}" for path in sorted(WEB.rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(node, ast.Assert)]
    assert found == []


async def _who(request: web.Request) -> web.Response:
    return web.Response(text=str(request[USER_ID]))


@pytest.mark.parametrize("session", [None, Session("anonymous-id", None, "csrf")])
async def test_requires_user_answers_401_to_anyone_not_logged_in(session: Session | None) -> None:
    request = make_mocked_request("POST", "/anything/new")
    request["session"] = session
    response = await requires_user(_who)(request)
    assert response.status == 401 and USER_ID not in request


async def test_requires_user_hands_the_handler_the_user() -> None:
    request = make_mocked_request("GET", "/x")
    request["session"] = Session("id", 42, "csrf")
    response = await requires_user(_who)(request)
    assert isinstance(response, web.Response) and (response.status, response.text) == (200, "42")


async def test_requires_api_caller_refuses_a_request_without_one() -> None:
    with pytest.raises(ApiError) as refused:
        await requires_api_caller(_who)(make_mocked_request("GET", "/api/v1/me"))
    assert refused.value.status == 401
    request = make_mocked_request("GET", "/api/v1/me")
    request[CALLER] = Caller(7, "token:1")
    request[USER_ID] = 7
    assert (await requires_api_caller(_who)(request)).status == 200


@pytest.mark.parametrize("text, expected", [("12", 12), ("١", None), ("１２", None), ("²", None), ("-1", None),
                                            ("", None), ("1" * 19, None), ("007", 7)])
def test_ids_are_ascii_digits_only(text: str, expected: int | None) -> None:
    assert parse_id(text) == expected
