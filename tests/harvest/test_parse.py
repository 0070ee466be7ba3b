"""parse_header_block agrees with the stdlib where mail is well formed, and never raises where it is not.

The reference is ``BytesHeaderParser(policy=email.policy.default)`` (with ``getaddresses`` and
``parsedate_to_datetime``) on the same bytes; the places where the parser deliberately
differs (its module docstring lists them) have tests of their own, with the expected value
written out.
"""

from __future__ import annotations

import email.policy
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import format_datetime, formataddr, getaddresses, parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inboxlens.harvest.headers.parse import (MAX_REFERENCES, MAX_TEXT, Address, AuthVerdicts, HeaderRecord, is_automated, parse_header_block, parse_internaldate)

UTC = timezone.utc
INTERNAL = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
TRUSTED = frozenset({"mx.example.net"})
STDLIB = BytesHeaderParser(policy=email.policy.default)


def block(*fields: str | bytes, end: bytes = b"\r\n") -> bytes:
    raw = [f.encode("utf-8", "surrogateescape") if isinstance(f, str) else f for f in fields]
    return b"".join(f + end for f in raw) + end


def parse(*fields: str | bytes, **options: Any) -> HeaderRecord:
    trusted = options.pop("trusted", TRUSTED)
    return parse_header_block(7, INTERNAL, block(*fields), trusted_authserv_ids=trusted, **options)


def reference(*fields: str | bytes) -> Message:
    return STDLIB.parsebytes(block(*fields))


def stdlib_text(value: object) -> str:
    """The stdlib's decoded text as this parser cleans it: tabs as spaces, no surrounding whitespace."""
    return str(value).replace("\t", " ").strip()


def stdlib_addresses(message: Message, name: str) -> list[tuple[str, str]]:
    found = []
    headers: list[Any] = message.get_all(name, [])  # policy.default: AddressHeader objects
    for header in headers:
        for a in header.addresses:
            local, _, domain = a.addr_spec.rpartition("@")
            # the stdlib's own sanitising of raw 8-bit (its str() does it, display_name does not)
            name = a.display_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace").strip()
            found.append((name, f"{local}@{domain.lower()}" if domain else ""))
    return found


def ours(addresses: tuple[Address, ...]) -> list[tuple[str, str]]:
    return [(a.name, a.address) for a in addresses]


def spaced(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(" ".join(name.split()), address) for name, address in pairs]


def stdlib_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# =============================================================================================
# One realistic message, every field

GMAIL_LIKE = (
    "X-Received: by 2002:a05:6a20:dc8d with SMTP id 38eb21bc8e;\r\n        Thu, 04 Apr 2024 09:47:35 -0700",
    "Authentication-Results: mx.example.net;\r\n       dkim=pass header.i=@example.com header.s=s1 header.b=8aba367d;"
    "\r\n       spf=softfail (example.net: domain of bounce@example.com does not designate 192.0.2.1 as permitted sender)"
    " smtp.mailfrom=bounce@example.com;\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com",
    "Received-SPF: softfail (example.net: domain of bounce@example.com) client-ip=192.0.2.1;",
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=Example.com; s=S1;\r\n\th=from:to:subject;"
    " bh=ANyHA3eX=;\r\n\tb=ANyHA3eXg2+3gG5FV7tN\r\n\t jjB29M38oue70M4LG8O4",
    "Date: Thu, 08 Feb 2024 16:40:20 -0700",
    "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus?=\r\n =?utf-8?q?_K=C3=B6ln?= (again)",
    "Message-ID: <8caa9f3a.e60b68c9@example.com>",
    "In-Reply-To: <root@example.com>",
    "References: <root@example.com>\r\n <parent@example.com>",
    "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <Joerg.Mueller@Example.COM>",
    'To: Me Myself <me@example.net>, "Doe, Jane" <jane@example.org>',
    "Cc: team:;, bob@example.org",
    "List-Id: Team chat <team.example.com>",
    "List-Unsubscribe: <mailto:leave@example.com>",
    "Precedence: List",
    "Auto-Submitted: no",
)


def test_a_realistic_message_gives_every_field() -> None:
    record = parse(*GMAIL_LIKE, flags=["\\Seen"], gm_msgid=17, gm_thrid=4, gm_labels=["\\Inbox", "Work"])
    assert record == HeaderRecord(
        uid=7, internal_date=INTERNAL, date=datetime(2024, 2, 8, 23, 40, 20, tzinfo=UTC),
        message_id="8caa9f3a.e60b68c9@example.com", in_reply_to=("root@example.com",),
        references=("root@example.com", "parent@example.com"), subject="Grüße aus Köln (again)",
        sender=Address("Jörg Müller", "Joerg.Mueller@example.com"),
        to=(Address("Me Myself", "me@example.net"), Address("Doe, Jane", "jane@example.org")),
        cc=(Address("", "bob@example.org"),), list_id="team.example.com", list_unsubscribe=True,
        auto_submitted="no", precedence="list", auth=AuthVerdicts(dkim="pass", spf="softfail", dmarc="pass"),
        dkim_signatures=(("example.com", "s1"),), flags=frozenset({"\\Seen"}), gm_msgid=17, gm_thrid=4,
        gm_labels=("\\Inbox", "Work"), authserv_id="mx.example.net")
    assert record.sender is not None and record.sender.key == "joerg.mueller@example.com"
    assert is_automated(record)


def test_internal_date_is_utc() -> None:
    paris = timezone(timedelta(hours=2))
    record = parse_header_block(1, datetime(2024, 5, 1, 14, 0, tzinfo=paris), b"", trusted_authserv_ids=TRUSTED)
    assert record.internal_date == INTERNAL and record.internal_date.tzinfo == UTC
    naive = parse_header_block(1, datetime(2024, 5, 1, 12, 0), b"", trusted_authserv_ids=TRUSTED)
    assert naive.internal_date == INTERNAL


# =============================================================================================
# Splitting and unfolding

@pytest.mark.parametrize("raw", [b"", b"\r\n", b"\r\n\r\n", b"\n", b"   \r\n", b":\r\n", b"no colon here\r\n"])
def test_empty_or_headerless_blocks_give_an_empty_record(raw: bytes) -> None:
    record = parse_header_block(3, INTERNAL, raw, trusted_authserv_ids=TRUSTED)
    assert (record.subject, record.sender, record.to, record.message_id, record.date) == ("", None, (), None, None)
    assert record.auth == AuthVerdicts(None, None, None) and not is_automated(record)


@pytest.mark.parametrize("end", [b"\r\n", b"\n", b"\r"])
def test_line_endings_fold_and_end_like_the_stdlib(end: bytes) -> None:
    raw = block("Subject: first\r\n\tsecond\r\n  third", "fROM: a@example.com", "subject: ignored", end=end)
    raw = raw.replace(b"\r\n", end) + b"From: body@example.com" + end
    record = parse_header_block(1, INTERNAL, raw, trusted_authserv_ids=TRUSTED)
    expected = STDLIB.parsebytes(raw)
    assert record.subject == stdlib_text(expected["subject"]) == "first second  third"
    assert record.sender == Address("", "a@example.com")


def test_space_before_the_colon_is_accepted() -> None:
    assert parse("Subject : obsolete but seen").subject == "obsolete but seen"


def test_a_line_without_colon_is_skipped_not_the_end() -> None:
    # The stdlib ends the header section there (and loses the From); IMAP has already split fields.
    assert parse("Subject: x", "garbage line", "From: a@example.com").sender == Address("", "a@example.com")


def test_duplicates_first_wins_but_every_to_and_cc_counts() -> None:
    record = parse("Subject: one", "Subject: two", "To: a@example.com", "To: b@example.com", "Cc: c@example.com",
                   "Cc: d@example.com", "From: x@example.com", "From: y@example.com")
    assert record.subject == "one" and record.sender == Address("", "x@example.com")
    assert ours(record.to) == [("", "a@example.com"), ("", "b@example.com")]
    assert ours(record.cc) == [("", "c@example.com"), ("", "d@example.com")]


def test_fields_not_asked_for_are_ignored() -> None:
    record = parse("X-Subject: no", "Subjects: no", "Subject: yes")
    assert record.subject == "yes"


# =============================================================================================
# Subjects: RFC 2047, unfolding, cleaning

SUBJECTS = [
    "plain ASCII subject",
    "=?utf-8?q?Gr=C3=BC=C3=9Fe?=",
    "=?UTF-8?Q?caf=C3=A9_cr=C3=A8me?=",
    "=?utf-8?b?w5xiZXIgdHJpcCDDvGJlciByw6lzdW3DqQ==?=",
    "=?iso-8859-1?q?Gr=FC=DFe_aus_K=F6ln?=",
    "=?ISO-8859-1?B?SvZyZw==?=",
    "=?windows-1252?q?=93quoted=94_=80100?=",
    "=?utf-8?q?a?= =?utf-8?q?b?=",
    "=?utf-8?q?a?=\r\n =?utf-8?q?b?=",
    "=?utf-8?q?a?=   \t  =?iso-8859-1?q?=E9?=",
    "Re: =?utf-8?q?caf=C3=A9?= and more",
    "before =?utf-8?b?w6k=?= middle =?utf-8?b?w6k=?= after",
    "x=?utf-8?q?a?=y",
    "=?utf-8?q?a_b?==?utf-8?q?c?=",
    "=?utf-8*en?q?with_language?=",
    "=?utf-8?q?hello world?=",
    "=?bogus-charset?q?ascii_only?=",
    "=?utf-8?x?not an encoding?=",
    "=? not an encoded word ?=",
    "Price =?utf-8? 100",
    "=?utf-8?q?",
    "tabs\tinside\tit",
    "a very long subject " * 20,
    "Re: [list] Fwd: (no subject)",
    "emoji =?utf-8?b?8J+OiQ==?= party",
    "=?gb2312?b?xOO6ww==?=",
    "=?iso-2022-jp?b?GyRCRnxLXDhsGyhC?=",
    "=?koi8-r?b?8NLJ18XU?=",
]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_subjects_agree_with_the_stdlib(subject: str) -> None:
    assert parse(f"Subject: {subject}").subject == stdlib_text(reference(f"Subject: {subject}")["subject"])


@pytest.mark.parametrize(("raw", "expected"), [
    # A character split across two encoded words survives (the stdlib gives two U+FFFD).
    (b"Subject: =?utf-8?b?4oI=?= =?utf-8?b?rA==?=", "€"),
    # Raw 8-bit that is not UTF-8 is windows-1252; raw UTF-8 stays UTF-8.
    (b"Subject: caf\xe9 cr\xe8me \x93ok\x94", "café crème “ok”"),
    (b"Subject: caf\xc3\xa9", "café"),
    # ISO-8859-1 labels are read as windows-1252, as browsers do.
    (b"Subject: =?iso-8859-1?q?=80_5?=", "€ 5"),
    # Control characters go; tab, CR and LF become spaces; the ends are stripped.
    (b"Subject: =?utf-8?q?a=00b=0Ac=1Bd?=  ", "ab cd"),
    (b"Subject: \x00\x07bell\x7f", "bell"),
    # A lone surrogate (UTF-7 can make one) cannot be stored: it goes.
    (b"Subject: =?utf-7?q?+2AA-x?=", "x"),
])
def test_subjects_where_we_differ_on_purpose(raw: bytes, expected: str) -> None:
    assert parse(raw).subject == expected


def test_subjects_are_cut_at_998_characters() -> None:
    assert parse("Subject: " + "é" * 2000).subject == "é" * MAX_TEXT


# =============================================================================================
# Addresses

ADDRESS_LISTS = [
    "a@example.com",
    "John Doe <j@example.com>",
    "John   Doe <j@example.com>",
    '"John   Doe" <j@example.com>',
    '"Doe, John" <j@example.com>, b@example.org',
    "John (the man) Doe <j@example.com>",
    "John Q. Public <j@example.com>",
    "undisclosed-recipients:;",
    'Team: a@example.com, "B b" <b@example.com>;, c@example.com',
    "Team: a@example.com, b@example.com;",
    "=?utf-8?q?M=C3=BCller=2C_Hans?= <h@example.com>",
    '"=?utf-8?q?M=C3=BCller?=" <h@example.com>',
    "=?utf-8?b?5p2O6Zu3?= <li@example.cn>",
    "<John@Example.COM>",
    "john @ example.com",
    "<@relay.example,@relay2.example:j@example.com>",
    '"j d"@example.com',
    "a@example.com,,b@example.com",
    '"Joe \\"Q\\" Public" <j@example.com>',
    "a@example.com,\r\n b@example.com,\r\n\t\"C\" <c@example.com>",
    "O'Brien <ob@example.ie>",
    "<a@example.com>, <b@example.com>",
    "a.b+tag@sub.example.co.uk",
    '"Müller, Jörg" <jm@example.de>',
    "Jörg Müller <jm@example.de>",
]


@pytest.mark.parametrize("value", ADDRESS_LISTS)
def test_address_lists_agree_with_the_stdlib(value: str) -> None:
    record = parse(f"To: {value}", f"From: {value}")
    expected = [pair for pair in stdlib_addresses(reference(f"To: {value}"), "to") if pair[1]]
    assert ours(record.to) == expected
    assert record.sender == (Address(*expected[0]) if expected else None)


@pytest.mark.parametrize("value", [v for v in ADDRESS_LISTS if not any(c in v for c in ("=?", ":", "(", ",,"))])
def test_plain_address_lists_agree_with_getaddresses(value: str) -> None:
    expected = [(n, f"{a.rpartition('@')[0]}@{a.rpartition('@')[2].lower()}") for n, a in getaddresses([value])]
    assert ours(parse(f"Cc: {value}").cc) == expected


@pytest.mark.parametrize(("value", "sender", "to"), [
    # An old-style comment is the name when there is no display name (the stdlib drops it).
    ("j@example.com (John Doe)", Address("John Doe", "j@example.com"), [("John Doe", "j@example.com")]),
    # Forgotten brackets: name and address (the stdlib makes the address '"John Doe j"@example.com').
    ("John Doe j@example.com", Address("John Doe", "j@example.com"), [("John Doe", "j@example.com")]),
    # An unterminated quote is dropped (the stdlib swallows the rest into the address).
    ('"John <j@example.com>', Address("John", "j@example.com"), [("John", "j@example.com")]),
    ("John <j@example.com", Address("John", "j@example.com"), [("John", "j@example.com")]),
    # Two mailboxes without the comma between.
    ("A <a@example.com> B <b@example.com>", Address("A", "a@example.com"), [("A", "a@example.com"), ("B", "b@example.com")]),
    # Encoded words in a display name join without the space (RFC 2047 §6.2).
    ("=?utf-8?q?Hans?= =?utf-8?q?-Peter?= <hp@example.com>", Address("Hans-Peter", "hp@example.com"),
     [("Hans-Peter", "hp@example.com")]),
    # No address at all: From keeps the name; To and Cc drop the entry.
    ("MAILER-DAEMON", Address("MAILER-DAEMON", ""), []),
    ("Undisclosed recipients", Address("Undisclosed recipients", ""), []),
    ("<not an address>", None, []),
    ("x <a@b@c>", Address("x", ""), []),
    ("", None, []),
])
def test_addresses_where_we_differ_on_purpose(value: str, sender: Address | None, to: list[tuple[str, str]]) -> None:
    record = parse(f"From: {value}", f"To: {value}")
    assert (record.sender, ours(record.to)) == (sender, to)


def test_a_group_as_sender_gives_its_first_member() -> None:
    assert parse("From: Team: a@example.com, b@example.com;").sender == Address("", "a@example.com")


def test_address_keeps_local_part_and_lowers_domain() -> None:
    sender = parse("From: Big.Boss@Example.COM").sender
    assert sender == Address("", "Big.Boss@example.com") and sender.key == "big.boss@example.com"


# =============================================================================================
# Dates

DATES = [
    "Thu, 08 Feb 2024 16:40:20 -0700",
    "Thu, 8 Feb 2024 16:40:20 +0000",
    "8 Feb 2024 16:40:20 +0530",
    "Thu,8 Feb 2024 16:40:20 +0100",
    "Thu, 08 Feb 2024 16:40 -0700",
    "Thu, 08 Feb 24 16:40:20 GMT",
    "Thu, 08 Feb 99 16:40:20 UT",
    "Thu, 08 Feb 2024 16:40:20 EST",
    "Thu, 08 Feb 2024 16:40:20 PDT",
    "Thu, 08 Feb 2024 16:40:20 z",
    "Thu, 08 Feb 2024 16:40:20 +0000 (UTC)",
    "Thu, 08 Feb 2024 16:40:20 -0800 (PST)",
    "Thu, 08 Feb 2024 16:40:20 -0000",
    "Thu, 08 Feb 2024 16:40:20 CEST",
    "Thu, 08 Feb 2024 16:40:20",
    "Thu, 08 February 2024 16:40:20 +0100",
    "THU, 08 FEB 2024 16:40:20 +0100",
    "Thursday, 08-Feb-24 16:40:20 GMT",
    "Thu Feb  8 16:40:20 2024",
    "08 Feb 2024 16.40.20 +0100",
    "Thu, 08 Feb 2024 16:40:20+0100",
    "Thu, 08 Feb 2024 16:40:20 +0099",
    "Thu, 08 Feb 2024 16:40:20 GMT+0100",
    "   Thu, 08 Feb 2024 16:40:20 +0100   ",
    # broken: None
    "", "not a date", "Thu, 31 Feb 2024 16:40:20 +0000", "Thu, 08 Foo 2024 16:40:20 +0000",
    "Thu, 08 Feb 2024 25:40:20 +0000", "Thu, 08 Feb 2024 16:40:20 +2400", "Thu, 08 Feb 2024", "2024-02-08T16:40:20Z",
    "Thu, 08 Feb 99999 16:40:20 +0000",
]


@pytest.mark.parametrize("value", DATES)
def test_dates_agree_with_the_stdlib(value: str) -> None:
    assert parse(f"Date: {value}").date == stdlib_date(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("Thu, 08 Feb 124 16:40:20 +0000", datetime(2024, 2, 8, 16, 40, 20, tzinfo=UTC)),  # RFC 5322: 3 digits + 1900
    ("Sat, 31 Dec 2016 23:59:60 +0000", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),  # leap second
    ("Thu, 08 Feb 2024 16:40:20 CEST", datetime(2024, 2, 8, 16, 40, 20, tzinfo=UTC)),  # unknown zone: UTC, aware
    ("Fri, 31 Dec 9999 23:00:00 -0100", None),  # past year 9999 in UTC
])
def test_dates_where_we_differ_on_purpose(value: str, expected: datetime | None) -> None:
    assert parse(f"Date: {value}").date == expected


def test_dates_are_aware_utc() -> None:
    date = parse("Date: Thu, 08 Feb 2024 16:40:20 -0700").date
    assert date is not None and date.tzinfo == UTC and date.hour == 23


@pytest.mark.parametrize(("value", "expected"), [
    ("17-Jul-1996 02:44:25 -0700", datetime(1996, 7, 17, 9, 44, 25, tzinfo=UTC)),
    ('"17-Jul-1996 02:44:25 -0700"', datetime(1996, 7, 17, 9, 44, 25, tzinfo=UTC)),
    (" 7-Jul-1996 02:44:25 +0000", datetime(1996, 7, 7, 2, 44, 25, tzinfo=UTC)),
    ("01-jan-2024 00:30:00 +0100", datetime(2023, 12, 31, 23, 30, tzinfo=UTC)),
])
def test_internaldate(value: str, expected: datetime) -> None:
    assert parse_internaldate(value) == expected


@pytest.mark.parametrize("value", ["", "17-Jul-96 02:44:25 -0700", "32-Jul-1996 02:44:25 -0700", "17-Foo-1996 02:44:25 -0700",
                                   "Wed, 17 Jul 1996 02:44:25 -0700", "17-Jul-1996 02:44:25"])
def test_internaldate_refuses_anything_else(value: str) -> None:
    with pytest.raises(ValueError):
        parse_internaldate(value)


# =============================================================================================
# Message ids

@pytest.mark.parametrize(("value", "expected"), [
    ("<abc@example.com>", "abc@example.com"),
    ("  <abc@example.com>  (a comment)", "abc@example.com"),
    ("(comment) <abc@example.com>", "abc@example.com"),
    ("abc@example.com", "abc@example.com"),
    ("no-brackets-no-at", "no-brackets-no-at"),
    ("<abc\r\n @example.com>", "abc@example.com"),
    ("<>", None),
    ("", None),
    ("<" + "x" * 2000 + "@example.com>", "x" * MAX_TEXT),
])
def test_message_id(value: str, expected: str | None) -> None:
    assert parse(f"Message-ID: {value}").message_id == expected


def test_message_id_agrees_with_the_stdlib() -> None:
    value = "<CAK=4fXo+ab_cd.ef@mail.example.com>"
    assert parse(f"Message-ID: {value}").message_id == str(reference(f"Message-ID: {value}")["message-id"])[1:-1]


def test_references_and_in_reply_to() -> None:
    record = parse("In-Reply-To: <p@example.com> (Jane's message of Mon)",
                   "References: <r@example.com>\r\n <a@example.com> <r@example.com>\r\n\t<p@example.com>")
    assert record.in_reply_to == ("p@example.com",)
    assert record.references == ("r@example.com", "a@example.com", "p@example.com")


def test_obsolete_in_reply_to_keeps_only_ids() -> None:
    record = parse('In-Reply-To: Message from "Jane" of "Mon, 1 Jan 2024" r@example.com, x')
    assert record.in_reply_to == ("r@example.com",)


def test_references_keep_the_root_and_the_nearest() -> None:
    ids = [f"<m{i}@example.com>" for i in range(300)]
    references = parse("References: " + "\r\n ".join(ids)).references
    assert len(references) == MAX_REFERENCES
    assert references[0] == "m0@example.com" and references[-1] == "m299@example.com"
    assert references[1] == f"m{300 - MAX_REFERENCES + 1}@example.com"


# =============================================================================================
# Authentication-Results, Received-SPF, DKIM-Signature

def test_a_forged_authentication_results_is_ignored() -> None:
    record = parse("Authentication-Results: mx.evil.example; dkim=pass; spf=pass; dmarc=pass")
    assert record.auth == AuthVerdicts(None, None, None)


def test_the_topmost_trusted_header_wins_whole() -> None:
    record = parse("Authentication-Results: evil.example; dkim=pass; spf=pass; dmarc=pass",
                   "Authentication-Results: MX.Example.NET 1; dkim=fail header.d=example.com; spf=none",
                   "Authentication-Results: mx.example.net; dkim=pass; spf=pass; dmarc=pass")
    assert record.auth == AuthVerdicts(dkim="fail", spf="none", dmarc=None)


def test_the_topmost_authserv_id_is_kept_trusted_or_not_if_it_reads_as_a_host_name() -> None:
    record = parse("Authentication-Results: MX.Corp.Example (comment); dkim=pass",
                   "Authentication-Results: mx.example.net; dkim=pass", trusted=frozenset())
    assert (record.authserv_id, record.auth) == ("mx.corp.example", AuthVerdicts(None, None, None))
    assert parse("Subject: none").authserv_id is None
    for odd in ("\x1b[31mred; dkim=pass", "a@b!c; spf=pass", ";dkim=pass", "x" * 300 + "; spf=pass"):
        assert parse(f"Authentication-Results: {odd}").authserv_id is None, odd


def test_trusted_ids_compare_without_case() -> None:
    record = parse("Authentication-Results: mx.example.net; dmarc=FAIL", trusted=frozenset({"MX.Example.Net"}))
    assert record.auth.dmarc == "fail"


@pytest.mark.parametrize(("value", "expected"), [
    ("mx.example.net; none", AuthVerdicts(None, None, None)),
    ("mx.example.net;\r\n dkim=fail header.d=a.example; dkim=pass header.d=b.example", AuthVerdicts("pass", None, None)),
    ("mx.example.net; dkim=temperror; dkim=policy", AuthVerdicts("temperror", None, None)),
    ("mx.example.net; dkim/1=pass; spf = neutral smtp.mailfrom=x", AuthVerdicts("pass", "neutral", None)),
    ("(comment; dkim=fail) mx.example.net (another; spf=fail); dmarc=pass", AuthVerdicts(None, None, "pass")),
    ("mx.example.net; spf=pass (nested (comment; dkim=pass) here) smtp.mailfrom=a@b; dmarc=none",
     AuthVerdicts(None, "pass", "none")),
    # A sender-chosen quoted local part cannot smuggle in a verdict...
    ('mx.example.net; spf=fail smtp.mailfrom="x;dkim=pass"@evil.example; dmarc=fail', AuthVerdicts(None, "fail", "fail")),
    # ...nor can a quote or parenthesis inside a comment.
    ('mx.example.net; spf=fail (domain of "x@evil; dkim=pass); dmarc=fail', AuthVerdicts(None, "fail", "fail")),
    ("mx.example.net; spf=fail (unterminated; dkim=pass", AuthVerdicts(None, "fail", None)),
    ('"mx.example.net"; spf=pass', AuthVerdicts(None, "pass", None)),
    ("mx.example.net; dkim=passed", AuthVerdicts("passed", None, None)),  # as written
    ("mx.example.net; dkim=pass;spf=fail;dmarc=pass", AuthVerdicts("pass", "fail", "pass")),
    ("mx.example.net; dkim=pass(x)", AuthVerdicts("pass", None, None)),
])
def test_authentication_results(value: str, expected: AuthVerdicts) -> None:
    assert parse(f"Authentication-Results: {value}").auth == expected


def test_received_spf_only_fills_a_missing_spf() -> None:
    topmost = "Received-SPF: SoftFail (mx.example.net: domain of x) client-ip=192.0.2.1"
    lower = "Received-SPF: pass (forged by the sender)"
    assert parse(topmost, lower).auth.spf == "softfail"
    assert parse(lower.replace("pass", "garbage"), topmost).auth.spf is None  # only the topmost counts
    assert parse(topmost, "Authentication-Results: mx.example.net; spf=pass").auth.spf == "pass"
    assert parse(topmost, "Authentication-Results: mx.example.net; dkim=pass").auth == AuthVerdicts("pass", "softfail", None)
    assert parse(topmost, "Authentication-Results: evil.example; spf=pass").auth.spf == "softfail"


def test_dkim_signatures() -> None:
    record = parse("DKIM-Signature: v=1; d=Example.COM; s=Sel1; b=abc",
                   "DKIM-Signature: v=1; s=k1;\r\n\td=esp.example;\r\n\tb=ab\r\n\t cd; d=ignored.example",
                   "DKIM-Signature: v=1; a=rsa-sha256; bh=x; b=y",
                   "DKIM-Signature: s = spaced ; d = spaced.example",
                   "DKIM-Signature: d=\x01bad; s=ok")
    assert record.dkim_signatures == (("example.com", "sel1"), ("esp.example", "k1"),
                                      ("spaced.example", "spaced"), ("", "ok"))


# =============================================================================================
# Lists and machine mail

@pytest.mark.parametrize(("fields", "automated"), [
    (["From: Jane <jane@example.com>"], False),
    (["From: Jane <jane@example.com>", "List-Id: <dev.lists.example.org>"], True),
    (["From: Jane <jane@example.com>", "List-Unsubscribe: <mailto:u@example.com>"], True),
    (["From: Jane <jane@example.com>", "List-Unsubscribe:   "], False),
    (["From: Jane <jane@example.com>", "Auto-Submitted: auto-replied (vacation)"], True),
    (["From: Jane <jane@example.com>", "Auto-Submitted: No"], False),
    (["From: Jane <jane@example.com>", "Precedence: bulk"], True),
    (["From: Jane <jane@example.com>", "Precedence: junk"], True),
    (["From: Jane <jane@example.com>", "Precedence: first-class"], False),
    (["From: noreply@example.com"], True),
    (["From: No-Reply <no.reply@example.com>"], True),
    (["From: do_not_reply@example.com"], True),
    (["From: DoNotReply+x@example.com"], True),
    (["From: notifications@github.com"], True),
    (["From: account-notification@bank.example"], True),
    (["From: messages-noreply@linkedin.com"], True),
    (["From: noreply2@example.com"], True),
    (["From: MAILER-DAEMON@mx.example.com"], True),
    (["From: MAILER-DAEMON"], True),
    (["From: bruno.reply@example.com"], False),
    (["From: notify-me-please@example.com"], False),
    (["From: postmaster@example.com"], False),
    (["From: support@example.com"], False),
    (["From: info@example.com"], False),
    ([], False),
])
def test_is_automated(fields: list[str], automated: bool) -> None:
    assert is_automated(parse(*fields)) is automated


@pytest.mark.parametrize(("value", "expected"), [
    ("Team chat <Team.Example.COM>", "team.example.com"),
    ("<dev.lists.example.org>", "dev.lists.example.org"),
    ("bare.list.example.org", "bare.list.example.org"),
    ("=?utf-8?q?Gruppe?= <g.example.de>", "g.example.de"),
    ("", None),
    ("<>", None),
])
def test_list_id(value: str, expected: str | None) -> None:
    assert parse(f"List-Id: {value}").list_id == expected


def test_keywords_are_lower_case_first_tokens() -> None:
    record = parse("Auto-Submitted: Auto-Generated; owner=x", "Precedence: BULK (comment)")
    assert (record.auto_submitted, record.precedence) == ("auto-generated", "bulk")
    assert (parse("Precedence: ").precedence, parse("Precedence: (x)").precedence) == (None, None)


# =============================================================================================
# Never raises: arbitrary bytes and header-ish text

NAMES = ["Message-ID", "In-Reply-To", "References", "Subject", "From", "To", "Cc", "Date", "Received-SPF",
         "DKIM-Signature", "Authentication-Results", "List-Id", "List-Unsubscribe", "Auto-Submitted", "Precedence",
         "X-Received", "subject ", "FROM"]
PIECES = ['"', "\\", "(", ")", "<", ">", ",", ";", ":", "@", ".", "=?", "?=", "?q?", "?B?", "=?utf-8?q?", "=?utf-7?b?",
          "=?x?b?", "=C3", "=", "_", " ", "\t", "\r\n ", "\r\n", "\n", "\r", "\x00", "\x7f", "é", "\udce9", "\u202e",
          "dkim=pass", "spf=", "d=", "s=", "mx.example.net", "a@example.com", "Mon, 3 Jul 2023 10:00:00 +0000",
          "31 Feb", "99999", "-0000", "undisclosed-recipients:;", "+2AA-", "\U0001f389"]
header_values = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=30).map("".join)
header_blocks = st.lists(st.tuples(st.sampled_from(NAMES), header_values), max_size=12).map(
    lambda fields: block(*(f"{name}: {value}" for name, value in fields)))


def check_record(record: HeaderRecord) -> None:
    texts = [record.subject, *record.in_reply_to, *record.references, *record.gm_labels,
             *(x for x in (record.message_id, record.list_id, record.auto_submitted, record.precedence) if x is not None),
             *(x for pair in record.dkim_signatures for x in pair),
             *(x for x in (record.auth.dkim, record.auth.spf, record.auth.dmarc) if x is not None)]
    for mailbox in (*record.to, *record.cc, *([record.sender] if record.sender else [])):
        texts += [mailbox.name, mailbox.address]
        assert mailbox.address == "" or "@" in mailbox.address
    for text in texts:
        assert isinstance(text, str) and len(text) <= MAX_TEXT
        # no control character, no lone surrogate: storable in PostgreSQL as UTF-8
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) <= 0xDFFF for c in text), repr(text)
    assert all(a.address for a in (*record.to, *record.cc))
    assert record.authserv_id is None or record.authserv_id.isprintable() and len(record.authserv_id) <= 254
    assert record.date is None or record.date.tzinfo == UTC
    is_automated(record)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    check_record(parse_header_block(1, INTERNAL, raw, trusted_authserv_ids=TRUSTED))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_blocks)
def test_never_raises_on_header_ish_blocks(raw: bytes) -> None:
    check_record(parse_header_block(1, INTERNAL, raw, trusted_authserv_ids=TRUSTED))


@pytest.mark.parametrize("raw", [
    b"Subject: " + b"x" * 1_000_000,
    b"To: " + b"a@b, " * 50_000,
    b"References: " + b"<a@b> " * 50_000,
    b"Authentication-Results: mx.example.net; " + b"(" * 100_000,
    b"Authentication-Results: mx.example.net; " + b'"' * 100_001,
    b"From: " + b"(" * 100_000 + b"a@b",
    b"From: " + b'"\\' * 100_000,
    b"Subject: " + b"=?utf-8?q?" * 100_000,
    b"Date: " + b"1 " * 100_000,
    b"DKIM-Signature: " + b";d=" * 100_000,
    b"Subject: a\r\n" + b" b\r\n" * 100_000,
    b"\x00" * 100_000,
    b"To: " + b"\\" * 100_001,
    b"From: <" * 100_000,
    b"Authentication-Results: mx.example.net; " + b'"\\' * 100_000,
    b"Authentication-Results: mx.example.net; " + b"(" * 50_000 + b")" * 50_000 + b"; dkim=pass",
    b"Authentication-Results: mx.example.net; " + b"(a" * 50_000 + b")" * 50_000 + b'"; dkim=pass',
    b"Subject: " + b"=?utf-8?q?a?= " * 50_000,
    b"From: " + b"a " * 100_000 + b"<",
])
def test_never_raises_on_huge_fields(raw: bytes) -> None:
    check_record(parse_header_block(1, INTERNAL, raw + b"\r\n\r\n", trusted_authserv_ids=TRUSTED))


# =============================================================================================
# Property: on well-formed headers made by the stdlib's own writers, we read what it reads

name_text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30).map(str.strip)
local_parts = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9._+-]{0,20}[a-zA-Z0-9])?", fullmatch=True).filter(lambda s: ".." not in s)
domains = st.from_regex(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?\.){1,3}[a-zA-Z]{2,6}", fullmatch=True)
mailboxes = st.tuples(name_text, st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains))
subjects = st.tuples(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=120),
                     st.sampled_from(["utf-8", "iso-8859-1", "us-ascii"]))
moments = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1),
                       timezones=st.builds(timezone, st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timedelta(minutes=m)))
                       ).map(lambda moment: moment.replace(microsecond=0))


def encoded_subject(text: str, charset: str) -> str:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    return Header(text, charset, header_name="Subject").encode(linesep="\r\n")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=subjects, sender=mailboxes, recipients=st.lists(mailboxes, min_size=1, max_size=4),
       moment=moments, local=local_parts, domain=domains)
def test_agrees_with_the_stdlib_on_well_formed_headers(subject: tuple[str, str], sender: tuple[str, str],
                                                       recipients: list[tuple[str, str]], moment: datetime,
                                                       local: str, domain: str) -> None:
    fields = [f"Subject: {encoded_subject(*subject)}", f"From: {formataddr(sender, 'utf-8')}",
              "To: " + ",\r\n ".join(formataddr(r, "utf-8") for r in recipients),
              f"Date: {format_datetime(moment)}", f"Message-ID: <{local}@{domain}>"]
    record, expected = parse(*fields), reference(*fields)
    assert record.subject == stdlib_text(expected["subject"])
    # Display names compared with runs of whitespace folded: inside a decoded encoded-word the
    # stdlib folds some runs ("0  ¡" and "0 \xa0¡" become "0 ¡") but not others ("0\u2003 ¡"), and
    # we keep the text as sent; what a name shows is the same either way.
    assert spaced(ours((record.sender,))) == spaced(stdlib_addresses(expected, "from")[:1])
    assert spaced(ours(record.to)) == spaced(stdlib_addresses(expected, "to"))
    date: Any = expected["date"]  # policy.default: a DateHeader
    assert record.date == date.datetime == moment
    assert record.message_id == str(expected["message-id"])[1:-1] == f"{local}@{domain}"
