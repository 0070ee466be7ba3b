"""``msg_key``: one message, one 16-byte key per account, defined here and nowhere else.

Harvest keys every raw row with it (so a message fetched twice, from another mailbox
or under a new UIDVALIDITY, is one row), and both metric backends key a reply's
parents with it, from the Message-IDs in In-Reply-To/References alone. The two must
agree byte for byte, or replies stop matching their parents: so the PostgreSQL fold
takes its SQL from ``message_id_key_sql`` below, and
``tests/harvest/test_keys_functional.py`` checks on many generated Message-IDs that
PostgreSQL computes what ``message_id_key`` does.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Sequence

KEY_BYTES = 16  # 128 bits: collisions are out of reach for any one account's mail
_ID_PREFIX = "id\0"  # keeps a Message-ID's key apart from a key made of header fields


def message_id_key(message_id: str) -> bytes:
    """The key of a message that has a Message-ID (without angle brackets)."""
    return _digest(_ID_PREFIX + message_id)


def msg_key(message_id: str | None, sender: str, sent: datetime, subject: str, to: Sequence[str]) -> bytes:
    """One message, one key: its Message-ID, else what its headers say about it."""
    if message_id:
        return message_id_key(message_id)
    return _digest("\0".join(("hdr", sender, sent.isoformat(), subject, ",".join(to))))


def message_id_key_sql(column: str) -> str:
    """``message_id_key`` in PostgreSQL, of the text expression ``column``.

    Python encodes with "surrogatepass" where PostgreSQL's text can hold no surrogate (nor
    NUL): for every string PostgreSQL can store, the two encodings are the same UTF-8.
    """
    prefix = _ID_PREFIX.encode().hex()
    return f"substring(sha256('\\x{prefix}'::bytea || convert_to({column}, 'UTF8')) FOR {KEY_BYTES})"


def _digest(basis: str) -> bytes:
    return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES]
