"""The IMAP layer's pure parts: FETCH answers, UID sets, mailbox choice, the linear FETCH check."""

from __future__ import annotations

import asyncio

import pytest

from inboxlens.config.vault import ProviderConfig
from inboxlens.harvest.imap import ImapSession, _LinearFetch, _uid_set, is_loopback, parse_fetch
from inboxlens.harvest.sync import Mailbox, choose_mailboxes
from inboxlens.service_errors import MailServerError


def test_parse_fetch_reads_attributes_before_and_after_the_literal():
    lines = [
        b'12 FETCH (UID 40 INTERNALDATE "17-Jul-2024 02:44:25 -0700" FLAGS (\\Seen \\Answered) '
        b"BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] {43}",
        bytearray(b"Message-ID: <a@b>\r\nSubject: (paren) test\r\n"),
        b" X-GM-MSGID 1278455344230334865 X-GM-THRID 1266894439832287888 X-GM-LABELS (\\Inbox Work))",
        b"13 FETCH (FLAGS (\\Seen))",  # unsolicited: a flag change, not one of ours
        b'14 FETCH (UID 41 INTERNALDATE "17-Jul-2024 03:00:00 +0000" FLAGS () BODY[HEADER.FIELDS (SUBJECT)] {0}',
        bytearray(b""),
        b")",
        b"Fetch completed.",
    ]
    first, second = parse_fetch(lines)
    assert (first.uid, first.internal_date, first.flags) == (40, "17-Jul-2024 02:44:25 -0700",
                                                             frozenset({"\\Seen", "\\Answered"}))
    assert first.header.startswith(b"Message-ID: <a@b>")
    assert (first.gm_msgid, first.gm_thrid, first.gm_labels) == (1278455344230334865, 1266894439832287888,
                                                                 ("\\Inbox", "Work"))
    assert (second.uid, second.header, second.gm_thrid) == (41, b"", None)


@pytest.mark.parametrize("uids, text", [([1, 2, 3, 5, 7, 8], "1:3,5,7:8"), ([9], "9"), ([3, 1, 2, 2], "1:3")])
def test_uid_sets_are_compact(uids, text):
    assert _uid_set(uids) == text


def test_mailboxes_gmail_all_else_inbox_and_sent():
    boxes = [Mailbox("INBOX", frozenset()), Mailbox("[Gmail]/Sent Mail", frozenset({"\\Sent"})),
             Mailbox("[Gmail]/All Mail", frozenset({"\\All", "\\HasNoChildren"}))]
    assert choose_mailboxes(boxes, gmail=True) == ["[Gmail]/All Mail"]
    assert choose_mailboxes(boxes, gmail=False) == ["INBOX", "[Gmail]/Sent Mail"]
    assert choose_mailboxes(boxes[:1], gmail=True) == ["INBOX"]  # no \All: fall back


async def test_linear_fetch_counts_protocol_lines_not_literal_bytes():
    command = _LinearFetch("A1", "1:*", "(UID)", prefix="UID", loop=asyncio.get_running_loop())
    command.append_to_resp(b"1 FETCH (UID 5 BODY[HEADER.FIELDS (SUBJECT)] {12}")
    assert command.wait_data()
    command.begin_literal_data(12)
    command.append_literal_data(b"Subject: ((\r\n")  # parentheses inside the literal are data
    assert command.wait_data()
    command.append_to_resp(b")")
    assert not command.wait_data()


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("10.0.0.1", False), ("imap.example.com", False)])
def test_only_loopback_counts_as_loopback(host, loopback):
    assert is_loopback(host) == loopback


async def test_plain_text_imap_is_refused_off_loopback():
    with pytest.raises(MailServerError, match="only loopback may go without TLS"):
        await ImapSession.open(ProviderConfig(imap_host="imap.example.com", imap_port=143, imap_tls="plain"))


def test_ascending_filters_sorts_and_dedupes():
    from inboxlens.harvest.sync import ascending
    assert list(ascending([1, 2, 3, 10], 2)) == [3, 10]
    assert list(ascending([9, 3, 3, 7], 0)) == [3, 7, 9]
    assert list(ascending([], 0)) == []


async def test_linear_fetch_arms_its_timer_once_not_per_line_received():
    # aioimaplib rearmed the command's timer (a call_later and a cancel) for every line and literal:
    # a third of the receive path. ImapSession._call bounds the whole exchange instead.
    command = _LinearFetch("A1", "1:*", "(UID)", prefix="UID", loop=asyncio.get_running_loop(), timeout=60)
    armed = command._timer
    for uid in range(1, 4):
        command.append_to_resp(f"{uid} FETCH (UID {uid} BODY[HEADER.FIELDS (SUBJECT)] {{4}}".encode())
        command.begin_literal_data(4)
        command.append_literal_data(b"x\r\n\r")
        command.append_to_resp(b")")
    assert command._timer is armed and not armed.cancelled()
    command.close(b"done", "OK")
    assert armed.cancelled()
