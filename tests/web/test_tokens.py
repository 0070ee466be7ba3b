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
    verified.put(b"a" * 32, alice, clock.now)
    clock.now += 0.99
    assert verified.get(b"a" * 32) == alice and verified.get(b"b" * 32) is None
    clock.now += 0.01
    assert verified.get(b"a" * 32) is None


def test_a_token_revoked_here_is_forgotten_at_once_and_the_kept_ones_are_bounded():
    clock = Clock()
    verified = tokens.VerifiedTokens(ttl=1.0, max_size=3, clock=clock)
    for i in range(5):
        verified.put(bytes([i]) * 32, tokens.Principal(user_id=1, token_id=i), clock.now)
    assert len(verified) == 3 and verified.get(bytes([1]) * 32) is None and verified.get(bytes([4]) * 32) is not None
    verified.forget(4)
    assert verified.get(bytes([4]) * 32) is None and verified.get(bytes([3]) * 32) is not None
    clock.now += 1.0
    verified.put(b"z" * 32, tokens.Principal(user_id=2, token_id=9), clock.now)  # the stale ones go as new ones come
    assert len(verified) == 1


def test_a_lookup_under_way_when_its_token_is_revoked_here_vouches_for_nothing():
    """The ttl counts from when the lookup began, and a lookup that began before a revocation on
    this process cannot put the token back (before: put() after forget() trusted it one more ttl)."""
    clock, bob = Clock(), tokens.Principal(user_id=2, token_id=8)
    verified = tokens.VerifiedTokens(ttl=1.0, clock=clock)
    asked = clock.now  # authenticate() reads the row ...
    clock.now += 0.2
    verified.forget(8)  # ... the settings page revokes the token meanwhile ...
    clock.now += 0.2
    verified.put(b"b" * 32, bob, asked)  # ... and the lookup's answer arrives
    assert verified.get(b"b" * 32) is None
    slow = clock.now - 0.9  # a lookup that began 0.9 s ago (a busy pool): trusted 0.1 s more, not 1 s
    verified.put(b"c" * 32, tokens.Principal(user_id=3, token_id=9), slow)
    clock.now += 0.1
    assert verified.get(b"c" * 32) is None
    clock.now += 1.0  # a revocation is remembered for one ttl, then a new lookup is trusted again
    verified.put(b"b" * 32, bob, clock.now)
    assert verified.get(b"b" * 32) == bob
