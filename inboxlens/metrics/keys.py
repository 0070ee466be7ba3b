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
_THREAD_PREFIX = "thrid\0"  # and a provider's thread id's key apart from both


def message_id_key(message_id: str) -> bytes:
    """The key of a message that has a Message-ID (without angle brackets)."""
    return _digest(_ID_PREFIX + message_id)


def msg_key(message_id: str | None, sender: str, sent: datetime, subject: str, to: Sequence[str]) -> bytes:
    """One message, one key: its Message-ID, else what its headers say about it."""
    if message_id:
        return message_id_key(message_id)
    return _digest("\0".join(("hdr", sender, sent.isoformat(), subject, ",".join(to))))


def gm_thread_key(gm_thread_id: int) -> bytes:
    """The thread key of every message in one Gmail thread (X-GM-THRID)."""
    return _digest(_THREAD_PREFIX + str(gm_thread_id))


def thread_key(msg_key_: bytes, in_reply_to: Sequence[str], refs: Sequence[str], gm_thread_id: int | None) -> bytes:
    """One key for a conversation, from the message's own headers (so whichever of a thread's
    messages is folded first, each gets the same key): the provider's thread id, else the
    root of its References chain, else its (first) In-Reply-To, else the message itself."""
    if gm_thread_id is not None:
        return gm_thread_key(gm_thread_id)
    root = refs[:1] or in_reply_to[:1]
    return message_id_key(root[0]) if root else msg_key_


def message_id_key_sql(column: str) -> str:
    """``message_id_key`` in PostgreSQL, of the text expression ``column``.

    Python encodes with "surrogatepass" where PostgreSQL's text can hold no surrogate (nor
    NUL): for every string PostgreSQL can store, the two encodings are the same UTF-8.
    """
    return _digest_sql(_ID_PREFIX, column)


def gm_thread_key_sql(column: str) -> str:
    """``gm_thread_key`` in PostgreSQL, of the bigint expression ``column``."""
    return _digest_sql(_THREAD_PREFIX, f"({column})::text")


def thread_key_sql(msg_key_: str, in_reply_to: str, refs: str, gm_thread_id: str) -> str:
    """``thread_key`` in PostgreSQL, of the columns named."""
    return (f"CASE WHEN {gm_thread_id} IS NOT NULL THEN {gm_thread_key_sql(gm_thread_id)} "
            f"WHEN cardinality({refs}) > 0 THEN {message_id_key_sql(f'{refs}[1]')} "
            f"WHEN cardinality({in_reply_to}) > 0 THEN {message_id_key_sql(f'{in_reply_to}[1]')} "
            f"ELSE {msg_key_} END")


def _digest_sql(prefix: str, column: str) -> str:
    return f"substring(sha256('\\x{prefix.encode().hex()}'::bytea || convert_to({column}, 'UTF8')) FOR {KEY_BYTES})"


def _digest(basis: str) -> bytes:
    return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES]
