"""Public profiles without a network: who counts as a person, what of a Gravatar profile is kept,
the hash, the token bucket and the admin's settings (the lookups: test_public_functional.py)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from inboxlens.config.schema import ProfilesConfig
from inboxlens.metrics.model import Relationship
from inboxlens.profiles.public import Settings, TokenBucket, address_hash, gravatar_fields, is_person

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


def who(address: str, automated: bool = False) -> Relationship:
    return Relationship(address, T, T, 3, 2, 1, 2, 5, 0.8, 50.0, (0,) * 24, automated)


@pytest.mark.parametrize("address", ["ann@example.org", "ann.lee+work@example.org", "sales.team.lead@example.org",
                                     "inform@example.org", "noreplyguy@example.org", "bob_b@example.co.uk"])
def test_people(address: str) -> None:
    assert is_person(who(address))


@pytest.mark.parametrize("address", [
    "noreply@example.org", "no-reply@example.org", "no_reply@example.org", "do.not.reply@example.org",
    "donotreply7@example.org", "notifications@github.example", "account-notification@example.org",
    "bounces+123@example.org", "info@example.org", "Support@Example.org", "support+ticket-9@example.org",
    "postmaster@example.org", "mailer-daemon@example.org", "owner-dev@lists.example", "dev-request@lists.example",
    "dev-owner@lists.example", "hello@example.org", "not an address", "ann@localhost", ""])
def test_not_people(address: str) -> None:
    assert not is_person(who(address))


def test_a_machine_sender_by_the_metrics_is_not_a_person() -> None:
    assert not is_person(who("ann@example.org", automated=True))


def test_the_hash_is_sha256_of_the_trimmed_lower_cased_address() -> None:
    assert address_hash("  Ann@Example.ORG \n") == hashlib.sha256(b"ann@example.org").digest()
    assert len(address_hash("a@b.example")) == 32


def test_gravatar_fields_keep_only_checked_values() -> None:
    document = {
        "display_name": "  Ann\u200b \x1b[31mLee\n\t ", "company": 42, "job_title": "x" * 1000,
        "avatar_url": "https://0.gravatar.com/avatar/abc", "description": "kept nowhere", "location": "Berlin",
        "profile_url": "javascript:alert(1)",
        "verified_accounts": [{"service_label": "Mastodon", "url": "https://m.example/@ann"},
                              {"service_label": "Dup", "url": "https://m.example/@ann"},
                              {"service_label": "Hidden", "url": "https://h.example/", "is_hidden": True},
                              {"service_label": "Creds", "url": "https://user:pw@h.example/"},
                              "not a dict", {"url": "https://no-label.example/"}],
        "links": {"not": "a list"},
    }
    fields = gravatar_fields(document)
    assert fields == {"name": "Ann [31mLee", "title": "x" * 256, "links": [
        {"kind": "social", "value": "https://m.example/@ann", "label": "Mastodon"},
        {"kind": "social", "value": "https://no-label.example/", "label": ""}]}
    assert gravatar_fields({}) == {}
    many = {"links": [{"label": str(n), "url": f"https://e.example/{n}"} for n in range(100)]}
    assert len(gravatar_fields(many)["links"]) == 32


def test_the_token_bucket_paces_and_fills_only_to_its_capacity() -> None:
    clock = [100.0]
    bucket = TokenBucket(60, capacity=2, clock=lambda: clock[0])
    taken = 0
    for _ in range(5):
        if bucket.delay() == 0:
            bucket.tokens -= 1
            taken += 1
    assert taken == 2 and bucket.delay() == pytest.approx(1.0)
    clock[0] += 0.5
    assert bucket.delay() == pytest.approx(0.5)
    clock[0] += 10  # idle time fills up to the capacity only
    assert bucket.delay() == 0 and bucket.tokens == 2


def test_settings_follow_the_admin() -> None:
    settings = Settings.of(replace(ProfilesConfig(), gravatar=False, public_cache_days=3,
                                   libravatar_avatar_url="https://avatars.example/avatar/"))
    assert settings.sources == ("libravatar",) and settings.cache == timedelta(days=3)
    assert settings.libravatar_avatar_url == "https://avatars.example/avatar"
    assert Settings.of(ProfilesConfig()).sources == ("gravatar", "libravatar")
