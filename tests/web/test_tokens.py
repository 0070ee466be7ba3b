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
