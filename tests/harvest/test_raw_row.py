"""What harvest stores as a message's sending time: its Date header, unless that cannot be true."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from inboxlens.harvest.headers.parse import parse_header_block
from inboxlens.harvest.store import raw_row

RECEIVED = datetime(2026, 11, 29, 9, 30, tzinfo=timezone.utc)  # INTERNALDATE


@pytest.mark.parametrize("date, sent_at, reliable", [
    ("Sun, 29 Nov 2026 09:29:00 +0000", datetime(2026, 11, 29, 9, 29, tzinfo=timezone.utc), True),
    # A sender's clock a few hours fast is believed; mail copied in from years ago too.
    ("Sun, 29 Nov 2026 20:00:00 +0000", datetime(2026, 11, 29, 20, 0, tzinfo=timezone.utc), True),
    ("Mon, 3 Mar 2003 10:00:00 +0100", datetime(2003, 3, 3, 9, 0, tzinfo=timezone.utc), True),
    # More than a day after the server received it, or before 1970: INTERNALDATE instead.
    ("Mon, 30 Nov 2026 09:31:00 +0000", RECEIVED, False),
    ("Fri, 31 Dec 9999 23:30:00 +0000", RECEIVED, False),
    ("Thu, 1 Jan 1000 00:00:00 +0000", RECEIVED, False),
    ("not a date", RECEIVED, False),
])
def test_the_sending_time_is_the_date_header_unless_it_cannot_be(date: str, sent_at: datetime, reliable: bool):
    record = parse_header_block(1, RECEIVED, f"Date: {date}\r\nFrom: a@example.test\r\n\r\n".encode(),
                                trusted_authserv_ids=frozenset())
    row = raw_row(7, "INBOX", record, frozenset({"me@example.test"}))
    assert (row.sent_at, row.date_reliable, row.internal_date) == (sent_at, reliable, RECEIVED)
