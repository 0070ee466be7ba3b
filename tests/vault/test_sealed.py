from __future__ import annotations

import pytest
from nacl.public import PrivateKey

from inboxlens.errors import SealedTokenError
from inboxlens.vault import sealed

KEY = PrivateKey.generate()


def test_round_trip_and_key_id():
    blob = sealed.seal(KEY.public_key, 7, "acct-1", "google", "1//refresh")
    assert sealed.key_id_of(blob) == 7
    assert sealed.open_sealed(KEY, blob, "acct-1", "google") == "1//refresh"
    assert b"1//refresh" not in blob


@pytest.mark.parametrize("account, provider", [("acct-2", "google"), ("acct-1", "microsoft")])
def test_binding_to_account_and_provider(account, provider):
    blob = sealed.seal(KEY.public_key, 1, "acct-1", "google", "rt")
    with pytest.raises(SealedTokenError):
        sealed.open_sealed(KEY, blob, account, provider)


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 1]) + blob[index + 1:]


@pytest.mark.parametrize("mangle", [
    lambda b: _flip(b, 0),             # version
    lambda b: _flip(b, len(b) - 1),    # MAC
    lambda b: _flip(b, 10),            # ephemeral public key
    lambda b: b[:5],                   # header only
    lambda b: b"",
    lambda b: b[:-1],
])
def test_every_corruption_gives_the_same_opaque_error(mangle):
    blob = sealed.seal(KEY.public_key, 1, "acct-1", "google", "rt")
    with pytest.raises(SealedTokenError) as e:
        sealed.open_sealed(KEY, mangle(blob), "acct-1", "google")
    assert str(e.value) == str(SealedTokenError())


def test_another_key_cannot_open():
    blob = sealed.seal(KEY.public_key, 1, "acct-1", "google", "rt")
    with pytest.raises(SealedTokenError):
        sealed.open_sealed(PrivateKey.generate(), blob, "acct-1", "google")


@pytest.mark.parametrize("token", ["", "x" * 4097])
def test_token_size_is_bounded(token):
    with pytest.raises(ValueError):
        sealed.seal(KEY.public_key, 1, "acct-1", "google", token)
