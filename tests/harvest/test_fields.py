"""The header fields fetched are the header fields parsed: none is fetched and then dropped."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from inboxlens.harvest.headers.parse import parse_header_block
from inboxlens.harvest.sync import HEADER_FIELDS

WHEN = datetime(2024, 7, 17, tzinfo=timezone.utc)
TRUSTED = frozenset({"mx.example.test"})
# A value each field's parser reads into the record (anything the fetch asks for needs one).
VALUES = {
    "MESSAGE-ID": "<a@b.test>", "IN-REPLY-TO": "<p@b.test>", "REFERENCES": "<r@b.test>", "SUBJECT": "hello",
    "FROM": "Ann <ann@b.test>", "TO": "me@b.test", "CC": "cc@b.test", "DATE": "Tue, 16 Jul 2024 10:00:00 +0000",
    "RECEIVED-SPF": "pass (mx.example.test: domain of b.test designates 192.0.2.1 as permitted sender)",
    "DKIM-SIGNATURE": "v=1; a=rsa-sha256; d=b.test; s=sel; h=from; bh=x; b=y",
    "AUTHENTICATION-RESULTS": "mx.example.test; dkim=pass header.d=b.test", "LIST-ID": "<list.b.test>",
    "LIST-UNSUBSCRIBE": "<mailto:u@b.test>", "AUTO-SUBMITTED": "auto-generated", "PRECEDENCE": "bulk",
}


def _parse(block: bytes):
    return parse_header_block(1, WHEN, block, trusted_authserv_ids=TRUSTED)


@pytest.mark.parametrize("field", HEADER_FIELDS)
def test_every_fetched_field_is_read_into_the_record(field):
    assert field in VALUES, f"{field} is fetched: give it a value here, or stop fetching it"
    block = f"{field.title()}: {VALUES[field]}\r\n\r\n".encode()
    assert _parse(block) != _parse(b"\r\n"), f"{field} is fetched but the parser ignores it"


def test_a_field_the_parser_ignores_is_not_fetched():
    # X-Received fed no insight (INTERNALDATE already says when the mailbox got a message).
    assert "X-RECEIVED" not in HEADER_FIELDS
    assert _parse(b"X-Received: by 10.0.0.1 with SMTP id x; Tue, 16 Jul 2024 10:00:00 -0700\r\n\r\n") == \
        _parse(b"\r\n")
