"""API token format, hashing and names (no database)."""

from __future__ import annotations

import hashlib

from inboxlens.web import tokens


def test_tokens_are_prefixed_random_and_well_formed():
    made = {tokens.new_token() for _ in range(100)}
    assert len(made) == 100
    assert all(t.startswith("ilk_") and len(t) == 47 and tokens.well_formed(t) for t in made)


def test_malformed_tokens_are_refused_before_any_lookup():
    good = tokens.new_token()
    for bad in ("", "ilk_", good[:-1], good + "A", "ilk " + good[4:], "xyz_" + good[4:], good[:-1] + "!",
                good[:-1] + "\n"):
        assert not tokens.well_formed(bad), bad


def test_only_the_sha256_is_kept():
    token = tokens.new_token()
    assert tokens.digest(token) == hashlib.sha256(token.encode()).digest() and len(tokens.digest(token)) == 32


def test_names_are_trimmed_and_bounded():
    assert tokens.clean_name("  Chrome \n at   work ") == "Chrome at work"
    assert tokens.clean_name(" \t ") is None
    assert tokens.clean_name("x" * tokens.MAX_NAME) == "x" * tokens.MAX_NAME
    assert tokens.clean_name("x" * (tokens.MAX_NAME + 1)) is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_vouched_for_token_is_trusted_for_its_ttl_only():
    clock, alice = Clock(), tokens.Principal(user_id=1, token_id=7)
    verified = tokens.VerifiedTokens(ttl=1.0, clock=clock)
    verified.put(b"a" * 32, alice)
    clock.now += 0.99
    assert verified.get(b"a" * 32) == alice and verified.get(b"b" * 32) is None
    clock.now += 0.01
    assert verified.get(b"a" * 32) is None


def test_a_token_revoked_here_is_forgotten_at_once_and_the_kept_ones_are_bounded():
    clock = Clock()
    verified = tokens.VerifiedTokens(ttl=1.0, max_size=3, clock=clock)
    for i in range(5):
        verified.put(bytes([i]) * 32, tokens.Principal(user_id=1, token_id=i))
    assert len(verified) == 3 and verified.get(bytes([1]) * 32) is None and verified.get(bytes([4]) * 32) is not None
    verified.forget(4)
    assert verified.get(bytes([4]) * 32) is None and verified.get(bytes([3]) * 32) is not None
    clock.now += 1.0
    verified.put(b"z" * 32, tokens.Principal(user_id=2, token_id=9))  # the stale ones go as new ones come
    assert len(verified) == 1
