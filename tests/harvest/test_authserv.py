"""Which authserv-id tops a sync's received mail: tallied per sync, bounded, sent mail ignored."""

from __future__ import annotations

from datetime import datetime, timezone

from inboxlens.harvest.headers.parse import HeaderRecord, parse_header_block
from inboxlens.harvest.sync import MAX_AUTHSERV_IDS, AuthservTally

OWN = frozenset({"me@home.test"})


def record(sender: str, top: str | None) -> HeaderRecord:
    lines = [f"From: {sender}"] + ([f"Authentication-Results: {top}; spf=pass"] if top else [])
    return parse_header_block(1, datetime(2024, 6, 1, tzinfo=timezone.utc),
                              ("\r\n".join(lines) + "\r\n\r\n").encode(), trusted_authserv_ids=frozenset())


def test_the_most_frequent_on_received_mail_wins_and_sent_mail_does_not_count() -> None:
    tally = AuthservTally()
    assert tally.most_frequent() is None
    tally.add([record("a@x.test", "mx.home.test"), record("b@y.test", "MX.Home.Test"), record("c@z.test", None),
               record("d@w.test", "relay.other.test")], OWN)
    tally.add([record("Me@Home.test", "smtp.home.test")] * 5, OWN)  # your own mail, as a relay stamped it
    assert tally.counts == {"mx.home.test": 2, "relay.other.test": 1}
    assert tally.most_frequent() == "mx.home.test"
    tally.add([record("e@v.test", "a.test"), record("f@v.test", "relay.other.test")], OWN)
    assert tally.most_frequent() == "mx.home.test"  # 2 each: the first by name, so every run says the same


def test_a_flood_of_forged_ids_is_bounded_and_does_not_hide_the_real_one() -> None:
    tally = AuthservTally()
    for i in range(1000):
        tally.add([record("a@x.test", f"forged{i}.test"), record("b@x.test", "mx.home.test")], OWN)
        assert len(tally.counts) <= MAX_AUTHSERV_IDS
    assert tally.most_frequent() == "mx.home.test"
