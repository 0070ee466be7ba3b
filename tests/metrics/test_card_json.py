"""A card as the API sends it: p90 beside median, each waiting message's Message-ID, and the
OpenAPI schema saying exactly that (the extension reads these names)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from inboxlens.metrics.model import AuthFlag, Card, CheckCount, DomainAuth, Pending, Relationship, ReplyStats, ReplyTimes
from inboxlens.web.api.openapi import DOCUMENT
from inboxlens.web.api.views import card_json, plain

NOW = datetime(2024, 6, 20, 12, tzinfo=timezone.utc)


def card(replies: ReplyStats) -> Card:
    who = Relationship("ann@x.test", NOW, NOW, 1, 1, 2, 2, 2, 1.0, 50.0, (0,) * 24, False)
    owed = [Pending("ab" * 16, "ann@x.test", NOW - timedelta(days=2), timedelta(days=2), "q1@x.test"),
            Pending("cd" * 16, "ann@x.test", NOW - timedelta(days=3), timedelta(days=3))]
    return Card.capped(who, replies, owed, [], None, [])


def valid(body: Any) -> None:
    schema = {**DOCUMENT["components"]["schemas"]["Card"], "components": DOCUMENT["components"]}
    jsonschema.validate(body, schema)


def test_reply_times_carry_a_90th_percentile_beside_the_median() -> None:
    times = ReplyTimes.of([60, 600, 3600, 7200, 86400])
    assert times.median == 3600 and times.p90 == pytest.approx(7200 + 0.6 * (86400 - 7200))  # rank 3.6 of 0..4
    body = plain(card(ReplyStats(yours=times)))
    assert list(body["replies"]["yours"])[:3] == ["count", "median", "p90"]
    assert body["replies"]["yours"]["p90"] == times.p90 and body["replies"]["theirs"]["p90"] is None
    valid(body)


def test_waiting_messages_carry_their_message_id_or_null() -> None:
    body = plain(card(ReplyStats()))
    assert [p["message_id"] for p in body["owed"]] == ["q1@x.test", None]
    valid(body)
    body["owed"][0]["message_id"] = 7
    try:
        valid(body)
    except jsonschema.ValidationError:
        return
    raise AssertionError("the schema let a number through as a Message-ID")


def test_a_cards_answer_is_its_plain_json_byte_for_byte_however_often() -> None:
    kept = ReplyStats(yours=ReplyTimes.of([60, 600, 3600]))
    flags = (AuthFlag("ef" * 16, "x.test", "ann@x.test", NOW, ("dkim", "dmarc")),)
    domain = DomainAuth("x.test", 3, CheckCount(3, 2), CheckCount(3, 3), CheckCount(0, 0), NOW)
    for answer in (card(kept), replace(card(kept), flags=flags, domain=domain), card(ReplyStats())) * 2:
        expected = json.dumps(plain({"account_id": 7, "correspondent": "änn@x.test", "card": answer}))
        assert card_json(7, "änn@x.test", answer) == expected
