"""The test Dovecot and the mailbox generator, through the stdlib imaplib and raw sockets.

Pins what a harvest implementer relies on: XOAUTH2/OAUTHBEARER against the local OAuth
provider (and what a refusal looks like on the wire), special-use LIST flags, every written
message fetched once with its Message-ID and INTERNALDATE in UID order, IMAPS trusted through
``client_ssl_context()`` only, kicks (also in the middle of a FETCH), UIDVALIDITY changes, and
a stop that leaves no process behind.

imaplib blocks, and the provider that Dovecot asks to introspect tokens runs on this test's
event loop: every imaplib call goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.utils
import imaplib
import itertools
import json
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from email.header import decode_header, make_header

import pytest

from tests.support.dovecot import (DEFAULT_MAILBOXES, GMAIL_LIKE_MAILBOXES, Dovecot, _live_members,
                                   require_dovecot)
from tests.support.maildir import AUTHSERV_ID, FORGED_AUTHSERV_ID, Message, by_folder, realistic_messages
from tests.support.oauth_provider import OAuthProvider

pytestmark = pytest.mark.root

USER = "me@example.test"
TIMEOUT = 10
QUIRKS = {"broken-date", "no-date", "obs-date", "unterminated-encoded-word", "no-message-id", "8bit-utf8-header",
          "8bit-latin1-header", "forged-auth-results", "encoded-subject", "latin1", "encoded-name",
          "folded-subject", "quoted-name"}


@pytest.fixture(scope="module")
def mail20k() -> list[Message]:
    return realistic_messages(USER, count=20_000, seed=2024)


@pytest.fixture
async def provider() -> AsyncIterator[OAuthProvider]:
    p = OAuthProvider(access_token_ttl=600)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture(scope="module")
def shared_dovecot() -> Iterator[Dovecot]:
    """One Dovecot for the module (starting is 0.1 s, stopping 1.1 s); tests keep apart by user."""
    require_dovecot()
    with Dovecot("http://127.0.0.1:9/unset", mailboxes={**DEFAULT_MAILBOXES, "All Mail": "\\All",
                                                         **GMAIL_LIKE_MAILBOXES}) as d:
        yield d


@pytest.fixture
async def dovecot(shared_dovecot: Dovecot, provider: OAuthProvider) -> Dovecot:
    await asyncio.to_thread(shared_dovecot.set_introspect_url, provider.introspect_url)
    return shared_dovecot


_users = itertools.count(1)


@pytest.fixture
def user() -> str:
    """A mailbox of this test's own on the shared Dovecot."""
    return f"user{next(_users)}@example.test"


def xoauth2(user: str, token: str) -> Callable[[bytes], bytes]:
    """imaplib's authobject: the initial response, then an empty answer to an error challenge."""
    def respond(challenge: bytes) -> bytes:
        return b"" if challenge else f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    return respond


def login(d: Dovecot, token: str, user: str, tls: bool = False, mechanism: str = "XOAUTH2") -> imaplib.IMAP4:
    client = (imaplib.IMAP4_SSL(d.host, d.imaps_port, ssl_context=d.client_ssl_context(), timeout=TIMEOUT) if tls
              else imaplib.IMAP4(d.host, d.port, timeout=TIMEOUT))
    try:
        if mechanism == "XOAUTH2":
            client.authenticate("XOAUTH2", xoauth2(user, token))
        else:
            client.authenticate("OAUTHBEARER",
                                lambda c: b"" if c else f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode())
    except BaseException:
        client.shutdown()
        raise
    return client


def raw_authenticate(d: Dovecot, token: str, user: str) -> list[bytes]:
    """XOAUTH2 with SASL-IR over a bare socket; the lines the server sent, in order."""
    with socket.create_connection((d.host, d.port), timeout=TIMEOUT) as s:
        reader = s.makefile("rb")
        lines = [reader.readline()]
        initial = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
        s.sendall(f"a1 AUTHENTICATE XOAUTH2 {initial}\r\n".encode())
        while True:
            line = reader.readline()
            lines.append(line)
            if line.startswith(b"+ "):
                s.sendall(b"\r\n")  # RFC 7628 §3.2.3: answer the error challenge with an empty response
            elif line.startswith(b"a1 ") or not line:
                return lines


def fetch_headers(client: imaplib.IMAP4, mailbox: str) -> list[tuple[int, dt.datetime, str | None]]:
    """(UID, INTERNALDATE, Message-ID) of every message in ``mailbox``, in the server's order."""
    typ, _ = client.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK"
    typ, data = client.uid("FETCH", "1:*", "(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])")
    assert typ == "OK"
    rows = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta, header = item
        uid = int(re.search(rb"\bUID (\d+)", meta).group(1))  # type: ignore[union-attr]
        internal = re.search(rb'INTERNALDATE "([^"]+)"', meta).group(1).decode()  # type: ignore[union-attr]
        message_id = email.message_from_bytes(header)["Message-ID"]
        rows.append((uid, dt.datetime.strptime(internal, "%d-%b-%Y %H:%M:%S %z"), message_id))
    return rows


# --- the generator alone ------------------------------------------------------------------------


def test_generator_is_deterministic_and_its_facts_hold(mail20k: list[Message]) -> None:
    assert realistic_messages(USER, count=300, seed=5) == realistic_messages(USER, count=300, seed=5)
    assert realistic_messages(USER, count=300, seed=5) != realistic_messages(USER, count=300, seed=6)
    assert len(mail20k) == 20_000
    ids = [m.message_id for m in mail20k if m.message_id is not None]
    assert len(ids) == len(set(ids)), "Message-IDs are unique"
    folders = Counter(m.folder for m in mail20k)
    assert set(folders) == {"INBOX", "Sent", "Archive"} and min(folders.values()) > 1000
    assert {m.direction for m in mail20k if m.folder == "Sent"} == {"out"}
    assert {m.direction for m in mail20k if m.folder != "Sent"} == {"in"}
    assert set(Counter(m.kind for m in mail20k)) == {"person", "list", "newsletter", "notification"}
    seen = Counter(q for m in mail20k for q in m.quirks)
    assert set(seen) == QUIRKS and all(n >= 10 for n in seen.values()), seen
    known = set(ids)
    # The owner's replies thread into conversations that started in INBOX and the other way round.
    parents = {m.message_id: m for m in mail20k if m.message_id}
    pairs = Counter((parents[m.in_reply_to].direction, m.direction) for m in mail20k if m.in_reply_to)
    assert pairs[("in", "out")] > 500 and pairs[("out", "in")] > 500
    assert all(r in known for m in mail20k for r in m.references)
    assert [m.internaldate for m in mail20k] == sorted(m.internaldate for m in mail20k)

    for m in mail20k:
        parsed = email.message_from_bytes(m.raw)
        assert parsed["Message-ID"] == m.message_id
        if "8bit-utf8-header" in m.quirks:
            assert f"\nSubject: {m.subject}\n".encode() in m.raw
        elif m.subject is not None:
            unfolded = re.sub(r"\r?\n(?=[ \t])", "", parsed["Subject"])  # RFC 5322 §2.2.3
            assert str(make_header(decode_header(unfolded))) == m.subject, m.raw[:2000]
        if m.date is not None:
            assert email.utils.parsedate_to_datetime(parsed["Date"]) == m.date
        elif "broken-date" in m.quirks:
            with pytest.raises((TypeError, ValueError)):
                email.utils.parsedate_to_datetime(parsed["Date"])
        else:
            assert parsed["Date"] is None
        assert email.utils.parseaddr(parsed["From"])[1].lower() == m.from_addr
        results = [v for v in parsed.get_all("Authentication-Results", []) if v.split(";")[0] == AUTHSERV_ID]
        if m.direction == "in":
            assert len(results) == 1 and f"dkim={m.dkim} " in results[0] and f"spf={m.spf} " in results[0]
        else:
            assert not results and m.dkim is None
        if "forged-auth-results" in m.quirks:
            forged = [v for v in parsed.get_all("Authentication-Results", []) if v.startswith(FORGED_AUTHSERV_ID)]
            assert len(forged) == 1 and "dkim=pass" in forged[0] and m.dkim == "fail"
        if m.kind in ("newsletter", "list"):
            assert parsed["List-Id"] and parsed["List-Unsubscribe"]
        if m.kind == "notification":
            assert parsed["Auto-Submitted"] == "auto-generated"


# --- Dovecot ----------------------------------------------------------------------------------


async def test_xoauth2_accepts_live_tokens_and_refuses_the_rest_quickly(dovecot: Dovecot, provider: OAuthProvider,
                                                                        user: str) -> None:
    token = provider.issue_access_token(user)
    foreign = provider.issue_access_token("someone-else@example.test")

    def good_logins() -> tuple[list[bytes], list[bytes]]:
        client = login(dovecot, token, user)
        try:
            typ, _ = client.xatom("ID", "NIL")
            assert typ == "OK"
            id_answer = [line for line in client.untagged_responses.pop("ID", []) if isinstance(line, bytes)]
            typ, capability = client.capability()
            assert typ == "OK"
        finally:
            client.logout()
        login(dovecot, token, user.upper()).logout()  # user names are compared lower-cased
        login(dovecot, token, user, mechanism="OAUTHBEARER").logout()
        return id_answer, [bytes(line) for line in capability]

    id_answer, capability = await asyncio.to_thread(good_logins)
    assert id_answer == [b'("name" "Dovecot")'], id_answer
    # (the first entry is the untagged CAPABILITY Dovecot sends after AUTHENTICATE)
    assert b"X-GM-EXT-1" not in capability[-1] and b"SPECIAL-USE" in capability[-1] and b"UIDPLUS" in capability[-1]

    async def refused(bad: str) -> None:
        started = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
            await asyncio.to_thread(login, dovecot, bad, user)
        # auth_failure_delay = 0 and no anvil penalty; 2.3.19 still answers on its 0.5 s tick.
        assert time.monotonic() - started < 2.0

    for _ in range(2):  # repeated refusals do not slow anything down (no auth penalty)
        await refused("garbage")
        await refused(foreign)  # "Username ... did not match"
    provider.revoke_grant_for(user)
    assert not provider.is_active(token)
    await refused(token)

    # The refusal on the wire: an error challenge first, NO only after the empty response.
    lines = await asyncio.to_thread(raw_authenticate, dovecot, "garbage", user)
    assert lines[0].startswith(b"* OK")
    assert lines[1].startswith(b"+ ")
    assert json.loads(base64.b64decode(lines[1][2:])) == {"status": "401", "schemes": "bearer", "scope": "mail"}
    assert lines[2] == b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    ok = await asyncio.to_thread(raw_authenticate, dovecot, provider.issue_access_token(user), user)
    assert ok[1].startswith(b"a1 OK [CAPABILITY IMAP4rev1 ") and ok[1].endswith(b"] Logged in\r\n")
    assert "oauth2 failed: Introspection failed" in dovecot.log()


async def test_one_dovecot_can_follow_each_tests_provider(dovecot: Dovecot, provider: OAuthProvider,
                                                          user: str) -> None:
    session = await asyncio.to_thread(login, dovecot, provider.issue_access_token(user), user)
    other = OAuthProvider()
    await other.start()
    try:
        await asyncio.to_thread(dovecot.set_introspect_url, other.introspect_url)
        fresh = await asyncio.to_thread(login, dovecot, other.issue_access_token(user), user)
        await asyncio.to_thread(fresh.logout)
        with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED"):
            await asyncio.to_thread(login, dovecot, provider.issue_access_token(user), user)
        assert (await asyncio.to_thread(session.noop))[0] == "OK"  # sessions survive the reload
    finally:
        await asyncio.to_thread(dovecot.set_introspect_url, provider.introspect_url)
        await other.stop()
    await asyncio.to_thread(session.logout)


async def test_list_shows_special_use_flags(dovecot: Dovecot, provider: OAuthProvider, user: str) -> None:
    token = provider.issue_access_token(user)

    def listing() -> tuple[list[bytes], list[bytes]]:
        client = login(dovecot, token, user)
        try:
            typ, everything = client.list()
            assert typ == "OK"
            typ, special = client._simple_command("LIST", "(SPECIAL-USE)", '""', "*")  # RFC 6154 selection
            assert typ == "OK"
            _, special = client._untagged_response(typ, special, "LIST")
        finally:
            client.logout()
        return everything, special  # type: ignore[return-value]

    everything, special = await asyncio.to_thread(listing)
    flags = {}
    for line in everything:
        match = re.fullmatch(rb'\(([^)]*)\) "/" (.+)', line)
        assert match, line
        flags[match.group(2).strip(b'"').decode()] = set(match.group(1).decode().split())
    assert flags["INBOX"] == {"\\HasNoChildren"}
    for name, use in {**DEFAULT_MAILBOXES, "All Mail": "\\All", **GMAIL_LIKE_MAILBOXES}.items():
        assert use in flags[name], (name, flags)
    # Auto-created "[Gmail]/..." children do not make Dovecot list a "[Gmail]" parent.
    assert set(flags) == {"INBOX", *DEFAULT_MAILBOXES, "All Mail", *GMAIL_LIKE_MAILBOXES}
    assert len(special) == len(DEFAULT_MAILBOXES) + 1 + len(GMAIL_LIKE_MAILBOXES)


async def test_uid_fetch_returns_every_message_once(dovecot: Dovecot, provider: OAuthProvider, user: str,
                                                    mail20k: list[Message]) -> None:
    started = time.monotonic()
    written = dovecot.deliver(user, mail20k)
    assert time.monotonic() - started < 10
    assert {f: len(p) for f, p in written.items()} == {f: len(ms) for f, ms in by_folder(mail20k).items()}
    token = provider.issue_access_token(user)

    def fetch_all() -> dict[str, list[tuple[int, dt.datetime, str | None]]]:
        client = login(dovecot, token, user)
        try:
            return {folder: fetch_headers(client, folder) for folder in ("INBOX", "Sent", "Archive", "All Mail")}
        finally:
            client.logout()

    fetched = await asyncio.to_thread(fetch_all)
    assert fetched["All Mail"] == []
    for folder, expected in by_folder(mail20k).items():
        rows = fetched[folder]
        assert [uid for uid, _, _ in rows] == list(range(1, len(expected) + 1))  # UIDs in the order written
        assert [mid for _, _, mid in rows] == [m.message_id for m in expected]
        assert [when for _, when, _ in rows] == [m.internaldate for m in expected]
    status = await dovecot.mailbox_status(user, "INBOX")
    assert status["messages"] == len(by_folder(mail20k)["INBOX"])


async def test_imaps_is_trusted_through_the_test_ca_only(dovecot: Dovecot, provider: OAuthProvider, user: str) -> None:
    token = provider.issue_access_token(user)

    def over_tls() -> str:
        client = login(dovecot, token, user, tls=True)
        try:
            assert client.select("INBOX")[0] == "OK"
            return client.sock.version()  # type: ignore[attr-defined,no-any-return]
        finally:
            client.logout()

    assert await asyncio.to_thread(over_tls) in ("TLSv1.2", "TLSv1.3")

    def with_system_trust() -> None:
        imaplib.IMAP4_SSL(dovecot.host, dovecot.imaps_port, ssl_context=ssl.create_default_context(), timeout=TIMEOUT)

    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.to_thread(with_system_trust)


async def test_kicks_end_sessions_gracefully_or_in_the_middle_of_a_fetch(dovecot: Dovecot, provider: OAuthProvider,
                                                                         user: str, mail20k: list[Message]) -> None:
    inbox = by_folder(mail20k)["INBOX"]
    dovecot.deliver(user, inbox)
    token = provider.issue_access_token(user)
    assert await dovecot.kill_connections(user) == 0

    idle = await asyncio.to_thread(login, dovecot, token, user)
    bystander = "bystander@example.test"
    other = await asyncio.to_thread(login, dovecot, provider.issue_access_token(bystander), bystander)
    assert len(await asyncio.to_thread(dovecot.sessions, user)) == 1
    assert await dovecot.kill_connections(user, graceful=True) == 1
    with pytest.raises(imaplib.IMAP4.abort, match="Server shutting down"):
        await asyncio.to_thread(idle.noop)  # the BYE was waiting; the session is gone
    idle.shutdown()
    assert (await asyncio.to_thread(other.noop))[0] == "OK"  # other users' sessions stay
    await asyncio.to_thread(other.logout)

    # Full bodies of ~12,000 messages (~23 MB) cannot fit in socket buffers: the server is
    # still writing the FETCH answer when its process is killed.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(TIMEOUT)
    s.connect((dovecot.host, dovecot.port))
    initial = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()

    def start_fetch() -> bytes:
        assert s.recv(4096).startswith(b"* OK")
        s.sendall(f"a AUTHENTICATE XOAUTH2 {initial}\r\nb SELECT INBOX\r\nc UID FETCH 1:* (UID BODY.PEEK[])\r\n".encode())
        received = b""
        while received.count(b" FETCH (") < 100:
            received += s.recv(65536)
        return received

    def drain() -> bytes:
        chunks = []
        while chunk := s.recv(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        head = await asyncio.to_thread(start_fetch)
        assert head.startswith(b"a OK") and b"\r\nb OK" in head
        assert await dovecot.kill_connections(user) == 1
        rest = await asyncio.to_thread(drain)  # what the kernel still held, then EOF
    finally:
        s.close()
    answer = head + rest
    assert b"\r\nc OK" not in answer and b"* BYE" not in answer
    assert 100 <= answer.count(b" FETCH (") < len(inbox)
    assert len(answer) < sum(len(m.raw) for m in inbox)


async def test_uidvalidity_can_change_with_or_without_renumbering(dovecot: Dovecot, provider: OAuthProvider,
                                                                  user: str) -> None:
    messages = by_folder(realistic_messages(user, count=60, seed=9))["INBOX"]
    dovecot.deliver(user, messages)
    token = provider.issue_access_token(user)

    def snapshot() -> tuple[int, list[tuple[int, str | None]]]:
        client = login(dovecot, token, user)
        try:
            rows = fetch_headers(client, "INBOX")
            validity = client.untagged_responses["UIDVALIDITY"][-1]
            assert isinstance(validity, bytes)
            return int(validity), [(uid, mid) for uid, _, mid in rows]
        finally:
            client.logout()

    validity, rows = await asyncio.to_thread(snapshot)
    assert rows == [(i + 1, m.message_id) for i, m in enumerate(messages)]

    selected = await asyncio.to_thread(login, dovecot, token, user)
    await asyncio.to_thread(selected.select, "INBOX")
    await dovecot.set_uidvalidity(user, "INBOX", validity + 100, kick=False)
    with pytest.raises(imaplib.IMAP4.abort, match="IMAP session state is inconsistent, please relogin"):
        await asyncio.to_thread(selected.noop)
    selected.shutdown()
    assert await asyncio.to_thread(snapshot) == (validity + 100, rows)

    uids = [10 * (i + 1) for i in range(len(messages) - 5)]
    await dovecot.replace_mailbox(user, "INBOX", messages[5:], uids=uids)
    assert await asyncio.to_thread(snapshot) == (validity + 101, list(zip(uids, [m.message_id for m in messages[5:]])))
    assert (await dovecot.mailbox_status(user, "INBOX"))["uidnext"] == uids[-1] + 1


async def test_start_and_stop_leave_no_process_behind(provider: OAuthProvider, user: str) -> None:
    require_dovecot()
    d = Dovecot(provider.introspect_url)
    started = time.monotonic()
    async with d:
        assert time.monotonic() - started < 5
        root, group = d.root, d.pid
        assert group is not None and len(_live_members(group)) >= 5  # master, log, config, anvil, auth...
        client = await asyncio.to_thread(login, d, provider.issue_access_token(user), user)  # and an imap process
        assert (await asyncio.to_thread(client.select, "INBOX"))[0] == "OK"
    assert _live_members(group) == []
    assert not root.exists()
    with pytest.raises(imaplib.IMAP4.abort, match="Server shutting down"):
        await asyncio.to_thread(client.noop)
    client.shutdown()
