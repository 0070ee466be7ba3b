"""The client address behind the per-address limit: X-Forwarded-For only from a trusted proxy."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from inboxlens.web.limits import client_address

PROXY = frozenset({"10.0.0.1", "::1"})


def request(peer: str, *forwarded: str) -> object:
    headers = [("X-Forwarded-For", value) for value in forwarded]
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 40000)
    return make_mocked_request("GET", "/login/x", headers=CIMultiDict(headers), transport=transport)


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("192.0.2.7", ("198.51.100.1",), "192.0.2.7"),  # not from a proxy: the header is anyone's word
    ("10.0.0.1", ("198.51.100.1",), "198.51.100.1"),
    ("10.0.0.1", ("6.6.6.6, 198.51.100.1",), "198.51.100.1"),  # the client may prepend anything
    ("10.0.0.1", ("198.51.100.1, 10.0.0.1",), "198.51.100.1"),  # proxies chained
    ("10.0.0.1", ("6.6.6.6", "198.51.100.1"),  "198.51.100.1"),  # the header repeated
    ("10.0.0.1", ("not-an-address",), "10.0.0.1"),
    ("10.0.0.1", (), "10.0.0.1"),
    ("::1", ("2001:db8::0:1",), "2001:db8::1"),  # one spelling per address
])
def test_client_address(peer: str, forwarded: tuple[str, ...], expected: str) -> None:
    assert client_address(request(peer, *forwarded), PROXY) == expected  # type: ignore[arg-type]
