"""Bounded IMAP answers: a hostile server on loopback cannot make harvest hold more than the limits."""

from __future__ import annotations

import asyncio

import pytest

from inboxlens.config.vault import ProviderConfig
from inboxlens.harvest.imap import ImapLimits, ImapSession
from inboxlens.harvest.sync import HEADER_FIELDS
from inboxlens.service_errors import MailServerError
from tests.support.hostile_imap import CHUNK, HostileImap

LIMITS = ImapLimits(literal_bytes=64 << 10, line_bytes=64 << 10, response_bytes=1 << 20)
READ = 256 << 10  # the most one socket read hands the protocol (asyncio reads up to 256 KiB)


async def _fetch(server: HostileImap, limits: ImapLimits = LIMITS) -> tuple[ImapSession, list[object]]:
    provider = ProviderConfig(imap_host="127.0.0.1", imap_port=server.port, imap_tls="plain")
    session = await ImapSession.open(provider, timeout=10, limits=limits)
    await session.authenticate("me@hostile.test", "token-not-checked")
    await session.examine("INBOX")
    try:
        return session, list(await session.fetch_headers(await session.search_above(0), HEADER_FIELDS, False))
    finally:
        await session.logout()


@pytest.mark.parametrize("scenario, cause", [
    ("huge_literal", "a 2147483648-byte literal, over 65536 (harvest.max_literal_bytes)"),
    ("endless_line", "a line over 65536 bytes (harvest.max_line_bytes)"),
    ("many_literals", "an answer over 1048576 bytes (harvest.max_response_bytes)"),
])
async def test_an_answer_over_a_limit_drops_the_connection_in_words(scenario, cause):
    async with HostileImap(scenario, stream_cap=64 << 20) as server:
        with pytest.raises(MailServerError) as refused:
            await _fetch(server)
        session_error = str(refused.value)
    assert session_error == f"127.0.0.1:{server.port}: {cause} (UID FETCH)"
    # Refused as it arrived, not when the server ran dry (it stops at stream_cap only if never refused).
    assert server.streamed < server.stream_cap


async def test_what_the_connection_held_is_bounded_by_the_limit():
    for scenario, bound in (("huge_literal", 0), ("endless_line", LIMITS.line_bytes),
                            ("many_literals", LIMITS.response_bytes)):
        async with HostileImap(scenario) as server:
            provider = ProviderConfig(imap_host="127.0.0.1", imap_port=server.port, imap_tls="plain")
            session = await ImapSession.open(provider, timeout=10, limits=LIMITS)
            await session.authenticate("me@hostile.test", "t")
            await session.examine("INBOX")
            with pytest.raises(MailServerError):
                await session.fetch_headers([1], HEADER_FIELDS, False)
            protocol = session.client.protocol
            assert protocol.peak <= bound + READ + CHUNK, scenario
            # Memory comes back: nothing buffered is kept, and the socket is closed.
            assert protocol.incomplete_line == b"" and protocol.lost
            assert protocol.transport.is_closing()
            await session.logout()


async def test_a_connection_dropped_mid_fetch_fails_at_once_in_words():
    async with HostileImap("drop") as server:
        started = asyncio.get_running_loop().time()
        with pytest.raises(MailServerError, match=rf"^127\.0\.0\.1:{server.port}: the server closed the connection"):
            await _fetch(server)
    assert asyncio.get_running_loop().time() - started < 5  # not the 10 s command timeout


async def test_a_well_behaved_answer_passes_under_the_same_limits():
    async with HostileImap("good", messages=20) as server:
        _, fetched = await _fetch(server)
    assert [f.uid for f in fetched] == list(range(1, 21))  # type: ignore[attr-defined]


async def test_the_fetch_asks_for_exactly_the_fields_the_parser_reads():
    async with HostileImap("good") as server:
        await _fetch(server)
    asked = server.fetch_items[0].split("HEADER.FIELDS (")[1].split(")")[0].split()
    assert asked == list(HEADER_FIELDS) and "X-RECEIVED" not in asked
