"""The sealed-token format: ``version | key_id | libsodium sealed box``.

Anyone with the public key can seal (web does, at connect time); only the vault, with
the private key ``key_id`` names, can open. The plaintext binds the refresh token to its
account and provider: a ciphertext copied to another account's row does not open. Every
failure to open is the same opaque SealedTokenError, whatever the cause (as
``crypto_box_seal_open``).
"""

from __future__ import annotations

import json
import struct

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from inboxlens.errors import SealedTokenError

VERSION = 1
_HEADER = struct.Struct(">BI")  # version, key id
HEADER_SIZE = _HEADER.size
MAX_TOKEN_BYTES = 4096


def seal(public_key: PublicKey, key_id: int, account_id: str, provider: str, refresh_token: str) -> bytes:
    """Seal a refresh token for one account under one public key."""
    if not refresh_token or len(refresh_token.encode()) > MAX_TOKEN_BYTES:
        raise ValueError(f"a refresh token is 1 to {MAX_TOKEN_BYTES} bytes")
    plaintext = json.dumps({"account": account_id, "provider": provider, "refresh_token": refresh_token},
                           sort_keys=True, separators=(",", ":")).encode()
    return _HEADER.pack(VERSION, key_id) + SealedBox(public_key).encrypt(plaintext)


def key_id_of(sealed: bytes) -> int:
    """The key id a sealed token names; SealedTokenError if the header is not ours."""
    if len(sealed) <= HEADER_SIZE or sealed[0] != VERSION:
        raise SealedTokenError()
    return int(_HEADER.unpack_from(sealed)[1])


def open_sealed(private_key: PrivateKey, sealed: bytes, account_id: str, provider: str) -> str:
    """Open a sealed token and check it belongs to this account and provider."""
    key_id_of(sealed)
    try:
        plaintext = SealedBox(private_key).decrypt(sealed[HEADER_SIZE:])
        fields = json.loads(plaintext)
    except (CryptoError, ValueError):
        raise SealedTokenError() from None
    if not isinstance(fields, dict) or fields.get("account") != account_id or fields.get("provider") != provider:
        raise SealedTokenError()
    token = fields.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise SealedTokenError()
    return token
