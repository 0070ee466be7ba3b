"""One IMAP header block and its fetch attributes in, one typed HeaderRecord out: the harvest's hot path.

Untrusted input: the header block is whatever senders and relays wrote (folded lines, raw
8-bit bytes, duplicate or empty fields, broken encoded words, unterminated quotes, NULs).
``parse_header_block`` never raises on it: a part it cannot read becomes None, "" or empty
and the message is kept.

Speed: the stdlib's ``email.policy.default`` builds a full parse tree for every header and
runs about 30 times slower than the IMAP fetch itself. This module reads only the fields the
harvest stores, splits and unfolds them with bytes operations, decodes RFC 2047 encoded
words only where "=?" appears, and parses the common shapes of address lists and dates with
one regular expression each, falling back to a careful tokenizer (addresses) or the stdlib's
lenient ``parsedate_tz`` (dates) for anything else.

Where it deliberately differs from the stdlib (``tests/harvest/test_parse.py`` checks that it
otherwise agrees):

- Raw 8-bit bytes that are not UTF-8 are read as windows-1252 (legacy Western mail), not
  replaced by U+FFFD; so are encoded words labelled ISO-8859-1 (as browsers do) or with an
  unknown charset.
- Adjacent encoded words with the same charset are joined as bytes before decoding, so a
  character split across two of them survives; whitespace between encoded words is dropped
  in display names too (RFC 2047 §6.2; the stdlib keeps it there).
- Text fields lose control characters (tab, CR and LF become a space) and surrounding
  whitespace, and are cut at 998 characters; PostgreSQL cannot store NUL anyway.
- Addresses: the domain is lower-cased; ``a@x (Name)`` gives the comment as the name when
  there is no display name; ``Name a@x`` (brackets forgotten) gives name and address rather
  than the address ``"Name a"@x``; an unterminated quote is dropped rather than swallowing
  the rest. All To and Cc fields count, not just the first.
- Dates: a 3-digit year is 1900 + year (RFC 5322 §4.3); second 60 becomes 59; an unknown
  zone or -0000 is UTC, where the stdlib returns a naive datetime.
- A line without a colon is skipped, where the stdlib ends the header section there.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_tz
from functools import lru_cache

from inboxlens.harvest.headers.authresults import AuthVerdicts, authserv_id, dkim_signers, skip_comment, verdicts

__all__ = ["FIELDS", "Address", "AuthVerdicts", "HeaderRecord", "is_automated", "parse_header_block", "parse_internaldate"]

MAX_TEXT = 998  # RFC 5322's line limit, also applied to every decoded string
MAX_ADDRESS = 320
MAX_REFERENCES = 100  # the thread root and the 99 nearest ancestors
UTC = timezone.utc

# The header fields harvest fetches, all of which this module reads: one list, so the FETCH
# asks for nothing the parser drops. X-Received is not among them: it is Gmail's internal
# relay stamp (a server and a time), and no insight uses relay paths; the time the
# mailbox received a message is INTERNALDATE, which every server gives. The fetch of
# X-Received cost bytes on every message and was never parsed.
FIELDS = ("MESSAGE-ID", "IN-REPLY-TO", "REFERENCES", "SUBJECT", "FROM", "TO", "CC", "DATE", "RECEIVED-SPF",
          "DKIM-SIGNATURE", "AUTHENTICATION-RESULTS", "LIST-ID", "LIST-UNSUBSCRIBE", "AUTO-SUBMITTED", "PRECEDENCE")
_WANTED = frozenset(f.lower().encode("ascii") for f in FIELDS)


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: ``address`` keeps the local part as written and lower-cases the domain; "" if unreadable."""

    name: str
    address: str

    @property
    def key(self) -> str:
        """The address as compared: entirely lower-case."""
        return self.address.lower()


@dataclass(frozen=True, slots=True)
class HeaderRecord:
    """What the harvest stores of one message.

    Dates are aware UTC (``date`` None if missing or unreadable: fall back to
    ``internal_date``); ids are without angle brackets; text is decoded, without control
    characters, at most 998 characters; ``sender`` is From's first mailbox; ``to`` and
    ``cc`` hold only mailboxes with an address; ``auth`` is what the trusted server wrote;
    ``dkim_signatures`` are (d=, s=) pairs, unverified.
    """

    uid: int
    internal_date: datetime
    date: datetime | None
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    list_id: str | None
    list_unsubscribe: bool
    auto_submitted: str | None
    precedence: str | None
    auth: AuthVerdicts
    dkim_signatures: tuple[tuple[str, str], ...]
    flags: frozenset[str]
    gm_msgid: int | None
    gm_thrid: int | None
    gm_labels: tuple[str, ...]
    authserv_id: str | None = None  # the topmost Authentication-Results' authserv-id, trusted or not


def parse_header_block(uid: int, internal_date: datetime, header_block: bytes, *,
                       trusted_authserv_ids: frozenset[str], flags: Iterable[str] = frozenset(),
                       gm_msgid: int | None = None, gm_thrid: int | None = None,
                       gm_labels: Iterable[str] = ()) -> HeaderRecord:
    """The record for one message; never raises on ``header_block``.

    ``trusted_authserv_ids``: the authserv-ids whose Authentication-Results count (any case).
    A naive ``internal_date`` is taken as UTC.
    """
    fields = _fields(header_block)
    text = _first_text
    results = _all_text(fields, b"authentication-results")
    return HeaderRecord(  # positional, in field order: measurably faster on this path
        uid,
        internal_date.replace(tzinfo=UTC) if internal_date.tzinfo is None else internal_date.astimezone(UTC),
        _date(text(fields, b"date")),
        next(iter(_message_ids(text(fields, b"message-id"), bare=True)), None),
        _message_ids(text(fields, b"in-reply-to")),
        _references(text(fields, b"references")),
        _clean(decode_words(text(fields, b"subject"))),
        next(iter(_addresses(text(fields, b"from"))), None),
        _recipients(fields.get(b"to")),
        _recipients(fields.get(b"cc")),
        _list_id(text(fields, b"list-id")),
        _present(fields.get(b"list-unsubscribe")),
        _keyword(text(fields, b"auto-submitted")),
        _keyword(text(fields, b"precedence")),
        verdicts(results, text(fields, b"received-spf"), _lowered(trusted_authserv_ids)),
        dkim_signers(fields.get(b"dkim-signature", [])),
        frozenset(flags),
        gm_msgid,
        gm_thrid,
        tuple(gm_labels),
        _authserv_token(results[0]) if results else None,
    )


_AUTHSERV = re.compile(r"[a-z0-9][a-z0-9._-]{0,253}")  # a host name, as an operator would write it in the config


def _authserv_token(value: str) -> str | None:
    """The header's authserv-id if it reads as a host name (it is shown to the operator), else None."""
    found = authserv_id(value)
    return found if found is not None and _AUTHSERV.fullmatch(found) else None


# ---------------------------------------------------------------------------------------------
# Fields: split, unfold, decode

Fields = dict[bytes, list[list[bytes]]]


def _fields(block: bytes) -> Fields:
    """Wanted fields by lower-cased name, each occurrence as its lines: joined, they are unfolded.

    Like the stdlib, a line ends at CRLF, LF or a lone CR, and unfolding drops the line
    break and keeps the space or tab after it.
    """
    fields: Fields = {}
    parts: list[bytes] | None = None
    for line in block.splitlines():
        if not line:
            break  # the blank line that ends the header section
        if line[0] in b" \t":
            if parts is not None:
                parts.append(line)
            continue
        name, colon, value = line.partition(b":")
        key = name.lower()
        if key not in _WANTED:
            key = key.rstrip(b" \t")  # obsolete syntax allows space before the colon
            if not colon or key not in _WANTED:
                parts = None
                continue
        parts = [value]
        occurrences = fields.get(key)
        if occurrences is None:
            fields[key] = [parts]
        else:
            occurrences.append(parts)
    return fields


def _first_text(fields: Fields, key: bytes) -> str:
    found = fields.get(key)
    return _text(b"".join(found[0])) if found else ""


def _present(occurrences: list[list[bytes]] | None) -> bool:
    """Whether a field occurs with a value that is not blank."""
    return occurrences is not None and any(b"".join(parts).strip() for parts in occurrences)


def _all_text(fields: Fields, key: bytes) -> list[str]:
    return [_text(b"".join(parts)) for parts in fields.get(key, ())]


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SPACE_LIKE = frozenset("\t\r\n")


def _clean(text: str, limit: int = MAX_TEXT) -> str:
    """Without control characters (tab, CR, LF become spaces) or surrounding whitespace, at most ``limit`` long."""
    if not text.isprintable():
        text = _UNPRINTABLE.sub(_replace_control, text)
    return text.strip()[:limit]


def _replace_control(match: re.Match[str]) -> str:
    return " " if match.group() in _SPACE_LIKE else ""


@lru_cache(maxsize=8)
def _lowered(ids: frozenset[str]) -> frozenset[str]:
    return frozenset(i.lower() for i in ids)


# ---------------------------------------------------------------------------------------------
# RFC 2047 encoded words

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([!->@-~ ]*)\?=")


def decode_words(text: str) -> str:
    """``text`` with its encoded words decoded; whitespace between two of them dropped."""
    if "=?" not in text:
        return text
    out: list[str] = []
    run: list[bytes] = []  # bytes of adjacent encoded words in one charset
    charset = ""
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        label, encoding, encoded = match.groups()
        try:
            data = binascii.a2b_qp(encoded, header=True) if encoding in "qQ" else binascii.a2b_base64(encoded + "==")
        except (binascii.Error, ValueError):
            continue  # left as it is, part of the next gap
        start, end = match.span()
        gap = text[pos:start]
        label = label.lower()
        if run and label == charset and not gap.strip(" \t"):
            run.append(data)
        else:
            if run:
                out.append(_decode(b"".join(run), charset))
            if not run or gap.strip(" \t"):
                out.append(gap)
            run, charset = [data], label
        pos = end
    if run:
        out.append(_decode(b"".join(run), charset))
    out.append(text[pos:])
    return "".join(out)


def _decode(data: bytes, label: str) -> str:
    codec = _codec(label)
    if codec is None:
        return _text(data)
    try:
        return data.decode(codec, "replace")
    except (LookupError, ValueError):
        return _text(data)


@lru_cache(maxsize=256)
def _codec(label: str) -> str | None:
    """The codec for a charset label; None for unknown ones and ASCII (read as UTF-8, then windows-1252)."""
    try:
        info = codecs.lookup(label.partition("*")[0])  # RFC 2231 language suffix
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name == "ascii":
        return None
    return "cp1252" if info.name == "iso8859-1" else info.name


# ---------------------------------------------------------------------------------------------
# Message ids

_ANGLE = re.compile(r"<([^<>]*)>")
_CLEAN_ID = re.compile("<([!-;=?-~\u00a0-\ud7ff\ue000-\U0010ffff]{1,998})>")


def _message_ids(value: str, bare: bool = False) -> tuple[str, ...]:
    """Ids between angle brackets; without any, the words with an '@' (or, if ``bare``, the first word)."""
    if not value:
        return ()
    found = _CLEAN_ID.findall(value)
    if found and len(found) == value.count("<"):
        return tuple(dict.fromkeys(found))  # every id printable, no space, not too long
    found = _ANGLE.findall(value)
    if not found:
        words = value.replace(",", " ").split()
        found = words[:1] if bare else [w for w in words if "@" in w]
    ids = (_clean("".join(i.split())) for i in found)
    return tuple(dict.fromkeys(i for i in ids if i))


def _references(value: str) -> tuple[str, ...]:
    ids = _message_ids(value)
    return ids if len(ids) <= MAX_REFERENCES else ids[:1] + ids[1 - MAX_REFERENCES:]


def _list_id(value: str) -> str | None:
    if not value:
        return None
    match = _ANGLE.search(value)
    words = (match.group(1) if match else value).split()
    return _clean(words[0].lower()) or None if words else None


_KEYWORD = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9_.-]{0,63})")


def _keyword(value: str) -> str | None:
    if not value:
        return None
    match = _KEYWORD.match(value)
    return match.group(1).lower() if match else None


# ---------------------------------------------------------------------------------------------
# Addresses

_ATEXT = r'[^\s"<>()\[\]\\,:;@\x00-\x1f\x7f-\x9f]'
# One mailbox of the common shapes, then a comma or the end: "Name" <a@b>, Name <a@b>, a@b.
_MAILBOX = re.compile(rf"""
    [ \t]*
    (?:
        (?:"(?P<quoted>[^"\\]*(?:\\.[^"\\]*)*)"|(?P<plain>[^"<>()\\,:;@\s](?:[^"<>()\\,:;@]*[^"<>()\\,:;@\s])?))?
        [ \t]*<[ \t]*(?P<local>{_ATEXT}{{1,64}})@(?P<domain>{_ATEXT}{{1,255}})[ \t]*>
      | (?P<bare_local>{_ATEXT}{{1,64}})@(?P<bare_domain>{_ATEXT}{{1,255}})
    )
    [ \t]*(?:,|\Z)
""", re.VERBOSE | re.DOTALL)
_TOKEN_ALTERNATIVES = r"""
    (?P<space>\s+)
  | <(?P<angle>[^<>]*)>?
  | (?P<atom>[^\s"<>(),:;]+)
  | (?P<special>.)
"""
_ADDRESS_TOKEN = re.compile(r"""(?P<quoted>"[^"\\]*(?:\\.[^"\\]*)*")|""" + _TOKEN_ALTERNATIVES, re.VERBOSE | re.DOTALL)
# After one quote failed to close, none after it can (it would close the first): not looking
# for them again keeps a value like '"\"\"\"...' linear.
_ADDRESS_TOKEN_NO_QUOTES = re.compile(_TOKEN_ALTERNATIVES, re.VERBOSE | re.DOTALL)
_LOCAL_PART = re.compile(rf'{_ATEXT}+|"[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*"', re.DOTALL)
_DOMAIN = re.compile(rf"{_ATEXT}+|\[[^\[\]\\\s\x00-\x1f]*\]")
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)

Word = tuple[str, bool]  # a token of a phrase or addr-spec, and whether whitespace preceded it


def _recipients(occurrences: list[list[bytes]] | None) -> tuple[Address, ...]:
    """The mailboxes of every occurrence of a To or Cc field that have an address."""
    if not occurrences:
        return ()
    found = [a for parts in occurrences for a in _addresses(_text(b"".join(parts))) if a.address]
    return tuple(found)


@lru_cache(maxsize=4096)
def _addresses(value: str) -> tuple[Address, ...]:
    """The mailboxes of an address list, group members included; no address gives address "".

    Cached: a mailbox sees the same From, To and Cc values over and over, and the result
    is immutable.
    """
    if not value:
        return ()
    found: list[Address] = []
    pos, end = 0, len(value)
    while pos < end:
        match = _MAILBOX.match(value, pos)
        if match is None:
            return _addresses_slow(value)
        quoted, plain, local, domain, bare_local, bare_domain = match.groups()
        if local is None:
            found.append(Address("", f"{bare_local}@{bare_domain.lower()}"))
        else:
            if quoted is not None:
                name = (_ESCAPED.sub(r"\1", quoted) if "\\" in quoted else quoted).strip()
            elif plain is not None:
                name = " ".join(plain.split()) if "  " in plain or "\t" in plain else plain
            else:
                name = ""
            if "=?" in name or not name.isprintable():
                name = _clean(decode_words(name))
            found.append(Address(name, f"{local}@{domain.lower()}"))
        pos = match.end()
    return tuple(found)


def _addresses_slow(value: str) -> tuple[Address, ...]:
    """Any address list: comments, groups, routes, quoted local parts, missing brackets and commas."""
    found: list[Address] = []
    words: list[Word] = []  # since the last mailbox ended, or since its <...>
    named: list[Word] = []  # the words before its <...>
    angle: str | None = None
    comment = ""
    space = False
    tokens = _ADDRESS_TOKEN
    pos, end = 0, len(value)
    while pos < end:
        match = tokens.match(value, pos)
        if match is None:  # cannot happen: the last alternative takes any character
            break
        pos, kind, token = match.end(), match.lastgroup, match.group()
        if kind == "quoted" or kind == "atom":
            words.append((token, space))
            space = False
        elif kind == "angle":
            if angle is not None:  # a second <...> without a comma between: a new mailbox
                _flush(found, named, angle, comment)
                comment = ""
            named, words, angle = words, [], match.group("angle")
        elif token == "(":
            pos = skip_comment(value, match.start())
            comment = comment or value[match.start() + 1:pos].removesuffix(")")
            space = True
        elif token in ",;" or (token == ":" and angle is None):
            if token != ":":  # a colon opens a group: its name is no mailbox
                _flush(found, words if angle is None else named, angle, comment)
            words, named, angle, comment = [], [], None, ""
        else:
            space = True  # whitespace, or a stray quote, '>' or ')'
            if token == '"':
                tokens = _ADDRESS_TOKEN_NO_QUOTES
    _flush(found, words if angle is None else named, angle, comment)
    return tuple(found)


def _flush(found: list[Address], words: list[Word], angle: str | None, comment: str) -> None:
    if angle is not None:
        mailbox = Address(_phrase(words) or _clean(comment), _address(angle))
        if mailbox.name or mailbox.address:
            found.append(mailbox)
        return
    chunks = _glue(words)
    for i in range(len(chunks) - 1, -1, -1):
        if "@" in "".join(t for t, _ in chunks[i]):
            name = _phrase([w for chunk in chunks[:i] for w in chunk])
            found.append(Address(name or _clean(comment), _address("".join(t for t, _ in chunks[i]))))
            return
    name = _phrase(words) or _clean(comment)
    if name:
        found.append(Address(name, ""))


def _glue(words: list[Word]) -> list[list[Word]]:
    """Words split where whitespace separates them, unless a '.' or '@' joins them (obsolete addr-spec)."""
    chunks: list[list[Word]] = []
    for token, spaced in words:
        if chunks and (not spaced or token[0] in "@." or chunks[-1][-1][0][-1] in "@."):
            chunks[-1].append((token, spaced))
        else:
            chunks.append([(token, spaced)])
    return chunks


def _phrase(words: list[Word]) -> str:
    parts: list[str] = []
    for token, spaced in words:
        if spaced and parts:
            parts.append(" ")
        parts.append(_ESCAPED.sub(r"\1", token[1:-1]) if token[0] == '"' else token)
    return _clean(decode_words("".join(parts)))


def _address(spec: str) -> str:
    """A bare addr-spec checked and with its domain lower-cased; "" if it is none."""
    spec = spec.strip()
    if spec.startswith("@"):  # obsolete source route: <@relay,@relay:user@domain>
        spec = spec.rpartition(":")[2].strip()
    local, at, domain = spec.rpartition("@")
    if not at or len(spec) > MAX_ADDRESS or _LOCAL_PART.fullmatch(local) is None or _DOMAIN.fullmatch(domain) is None:
        return ""
    return f"{local}@{domain.lower()}"


# ---------------------------------------------------------------------------------------------
# Dates

_MONTHS = {name: i % 12 + 1 for i, name in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec january february march april may june july "
    "august september october november december".split())}
# RFC 5322 §4.3's obsolete zones, in minutes east of UTC; any other name means UTC (-0000).
_ZONES = {"UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "AST": -240, "ADT": -180, "EST": -300, "EDT": -240,
          "CST": -360, "CDT": -300, "MST": -420, "MDT": -360, "PST": -480, "PDT": -420}
# The forms nearly all mail uses; any other goes to the stdlib (IGNORECASE would slow it down).
_DATE = re.compile(r"""
    \s*(?:[A-Za-z]+,\s*|(?:[Mm]on|[Tt]ue|[Ww]ed|[Tt]hu|[Ff]ri|[Ss]at|[Ss]un)\s+)?
    (\d{1,2})\s+([A-Za-z]{3,9})\s+(\d{2,4})\s+(\d{1,2}):(\d\d)(?::(\d\d))?
    (?:\s*([+-])(\d\d)(\d\d)|\s+([A-Za-z]{1,5}))?
    \s*(?:\(.*)?$
""", re.VERBOSE | re.ASCII | re.DOTALL)
_INTERNALDATE = re.compile(r'\s*"?\s?(\d{1,2})-([a-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"?\s*$',
                           re.IGNORECASE | re.ASCII)


def _date(value: str) -> datetime | None:
    """A Date: value as an aware UTC datetime, or None."""
    match = _DATE.match(value)
    month = _MONTHS.get(match.group(2).lower()) if match else None
    if match is None or month is None:
        return _date_fallback(value) if value else None
    day, _, year, hour, minute, second, sign, zone_h, zone_m, zone = match.groups()
    if sign:
        offset = (int(zone_h) * 60 + int(zone_m)) * (-60 if sign == "-" else 60)
    else:
        offset = _ZONES.get(zone.upper(), 0) * 60 if zone else 0
    return _utc(int(year), month, int(day), int(hour), int(minute), int(second or 0), offset)


def _date_fallback(value: str) -> datetime | None:
    """The stdlib's lenient parser, for the forms the fast one does not take (RFC 850, asctime, ...)."""
    try:
        parsed = parsedate_tz(value)
    except (ValueError, IndexError, TypeError, OverflowError):
        return None
    if parsed is None:
        return None
    return _utc(*parsed[:6], parsed[9] or 0)


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int, offset: int) -> datetime | None:
    if year < 100:
        year += 1900 if year > 68 else 2000
    elif year < 1000:
        year += 1900
    if not -86400 < offset < 86400:
        return None
    try:
        moment = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
        return moment - timedelta(seconds=offset) if offset else moment
    except (ValueError, OverflowError, TypeError):
        return None


def parse_internaldate(text: str) -> datetime:
    """IMAP INTERNALDATE (``"17-Jul-1996 02:44:25 -0700"``, quotes optional) as aware UTC.

    Raises ValueError: the server, not a sender, wrote it, so garbage is a protocol error.
    """
    match = _INTERNALDATE.match(text)
    month = _MONTHS.get(match.group(2).lower()) if match else None
    if match is None or month is None:
        raise ValueError(f"not an IMAP INTERNALDATE: {text[:64]!r}")
    day, _, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    offset = (int(zone_h) * 60 + int(zone_m)) * (-60 if sign == "-" else 60)
    result = _utc(int(year), month, int(day), int(hour), int(minute), int(second), offset)
    if result is None:
        raise ValueError(f"not an IMAP INTERNALDATE: {text[:64]!r}")
    return result


# ---------------------------------------------------------------------------------------------
# Machine mail

AUTOMATED_PRECEDENCE = frozenset({"bulk", "list", "junk", "auto_reply"})
# Local parts (case, '.' and '_' ignored; '+tag' dropped) that only machines send from: a
# token noreply / no-reply / donotreply / do-not-reply / notification(s), optionally
# followed by digits, anywhere in the local part (notifications-noreply@, noreply2@,
# account-notifications@); or exactly mailer-daemon. Deliberately absent, because people
# answer them: postmaster, abuse, info, support, hello, news, alerts, bounce (a return path,
# rarely a From).
_NO_REPLY = re.compile(r"(?:^|-)(?:no-?reply|do-?not-?reply|notifications?)(?:\d*)(?:-|$)|^mailer-daemon$")
_SEPARATORS = str.maketrans("._", "--")


def is_automated(record: HeaderRecord) -> bool:
    """Machine mail: a mailing list, an auto-submitted or bulk message, or a no-reply sender.

    List-Id or List-Unsubscribe present; Auto-Submitted other than "no" (RFC 3834);
    Precedence bulk, list, junk or auto_reply; or a sender whose local part matches the
    list above (a sender with no address is judged by its name, e.g. ``MAILER-DAEMON``).
    """
    if record.list_id is not None or record.list_unsubscribe:
        return True
    if record.auto_submitted not in (None, "no") or record.precedence in AUTOMATED_PRECEDENCE:
        return True
    sender = record.sender
    if sender is None:
        return False
    local = sender.address.rpartition("@")[0] if sender.address else sender.name
    local = local.strip('"').lower().partition("+")[0].translate(_SEPARATORS)
    return _NO_REPLY.search(local) is not None
