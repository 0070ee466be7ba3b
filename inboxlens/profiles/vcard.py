"""vCards (3.0 and 4.0; 2.1 read alike) into Profiles: only what a correspondent's card shows.

Kept: FN, N, ORG, TITLE, PHOTO, EMAIL, URL, X-SOCIALPROFILE and IMPP. Everything else (NOTE,
postal addresses, telephone numbers, birthdays, ...) is dropped as the card is read.

vobject unfolds the lines (``getLogicalLines``); each line is split into name, parameters
and value here, in one pass (vobject's ``parseLine`` regex backtracks exponentially: a
100-byte line of ``;a`` parameters without a colon took 0.6 s, and each two bytes more 4.5
times that). Its value decoding is not used either: it cuts a text value at the first comma,
which loses a vCard 4.0 ``data:image/png;base64,...`` photo and any URL with a comma, so the
nine properties' values are unescaped here (RFC 6350 3.4, RFC 2426 5).

The input is untrusted (a server's answer, an uploaded file) and bounded by ``VCardLimits``:
a file over its size or card count is refused whole (``BadVCard``: nothing half-imported); a
card over its size, one vobject cannot read, or one without a usable address is skipped, and
its reason counted; a value over its length, a photo over its size, an address of the wrong
shape or a link that is not http(s) is dropped and counted, and the card kept. No reason
quotes the card: it holds someone's name and address.

Encoding: UTF-8 (with or without a BOM; a UTF-16 file with a BOM is read too), else the
charset a CHARSET parameter names, else Latin-1, which reads any byte: never an error.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import io
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vobject.base import getLogicalLines

from inboxlens.profiles.errors import BadVCard
from inboxlens.profiles.match import normalise_address

VERSIONS = frozenset({"2.1", "3.0", "4.0"})
# Only raster images a browser shows without running anything (no SVG), told by their bytes.
_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF87a", "image/gif"),
          (b"GIF89a", "image/gif"))
IMPP_SCHEMES = frozenset({"xmpp", "sip", "sips", "tel", "skype", "matrix", "aim", "ymsgr", "msnim", "irc", "ircs",
                          "icq", "gg", "im", "facetime", "qq"})
_CHARSET = re.compile(rb";CHARSET=\"?([A-Za-z0-9_.:-]{1,40})", re.IGNORECASE)
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_STRUCTURED = re.compile(r"\\.|;|[^;\\]+|\\", re.DOTALL)
_HANDLE = re.compile(r"@?[\w.+-]{1,64}")
_DATA_URI = re.compile(r"data:([a-z0-9.+/-]*)(?:;[^,]*)?;base64,(.*)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class VCardLimits:
    """How much one file or card may make us hold or keep."""

    file_bytes: int = 16 * 1024 * 1024
    cards: int = 10_000
    card_bytes: int = 1024 * 1024  # room for a photo over its bound, which is dropped and the card kept
    photo_bytes: int = 256 * 1024  # decoded
    text_chars: int = 256  # FN, each N part, ORG, TITLE, UID, a link's label
    url_chars: int = 2048
    values: int = 32  # EMAIL lines kept; links kept


DEFAULT_LIMITS = VCardLimits()


@dataclass(frozen=True)
class Photo:
    """A photo inline (``data`` and the ``media_type`` its bytes show) or by ``url`` (http or https)."""

    media_type: str = ""
    data: bytes = field(default=b"", repr=False)
    url: str = ""


@dataclass(frozen=True)
class Link:
    """``kind`` is "url" (URL), "social" (X-SOCIALPROFILE: a URL or a handle) or "impp" (scheme:address)."""

    kind: str
    value: str
    label: str = ""  # the TYPE parameter (work, twitter, ...), lower-case


@dataclass(frozen=True)
class Profile:
    """What one card says about a person; ``emails`` normalised, at least one."""

    emails: tuple[str, ...]
    name: str = ""  # FN, else N's parts in reading order
    name_parts: tuple[str, ...] = ()  # N: family, given, additional, prefixes, suffixes
    organization: str = ""  # ORG's name and units, joined with ", "
    title: str = ""
    photo: Photo | None = None
    links: tuple[Link, ...] = ()
    uid: str = ""


@dataclass(frozen=True)
class Card:
    profile: Profile
    dropped: tuple[str, ...] = ()  # why values were left out, one reason per value


@dataclass(frozen=True)
class Parsed:
    """A file's profiles, in file order; the reasons cards were skipped and values dropped, counted."""

    profiles: tuple[Profile, ...]
    skipped: Mapping[str, int]
    dropped: Mapping[str, int]


def parse_vcards(data: bytes, limits: VCardLimits = DEFAULT_LIMITS) -> Parsed:
    """Every card of a .vcf file; ``BadVCard`` refuses the file whole (too large, too many cards, none)."""
    if len(data) > limits.file_bytes:
        raise BadVCard(f"the file is over {limits.file_bytes} bytes")
    chunks = split_cards(data)
    if not chunks:
        raise BadVCard("the file holds no vCard (BEGIN:VCARD ... END:VCARD)")
    if len(chunks) > limits.cards:
        raise BadVCard(f"the file holds more than {limits.cards} vCards")
    profiles, skipped, dropped = [], Counter[str](), Counter[str]()
    for chunk in chunks:
        try:
            card = parse_card(chunk, limits)
        except BadVCard as e:
            skipped[e.reason] += 1
            continue
        profiles.append(card.profile)
        dropped.update(card.dropped)
    return Parsed(tuple(profiles), dict(skipped), dict(dropped))


def split_cards(data: bytes) -> list[bytes]:
    """The file's top-level BEGIN:VCARD ... END:VCARD blocks (an unterminated last one too)."""
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        data = data.decode("utf-16", "replace").encode()
    data = data.removeprefix(codecs.BOM_UTF8)
    cards, current, depth = [], list[bytes](), 0
    for line in data.splitlines(keepends=True):
        word = line.strip().upper()
        depth += word == b"BEGIN:VCARD"
        if depth:
            current.append(line)
        if word == b"END:VCARD" and depth:
            depth -= 1
            if not depth:
                cards.append(b"".join(current))
                current = []
    return cards + [b"".join(current)] if current else cards


def decode(data: bytes) -> str:
    """A card's text: UTF-8, else its CHARSET parameter's (an ASCII-compatible one), else Latin-1."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    named = _CHARSET.search(data)
    if named is not None:
        try:
            if "BEGIN:VCARD".encode(named.group(1).decode()) == b"BEGIN:VCARD":
                return data.decode(named.group(1).decode())
        except (LookupError, UnicodeError):
            pass
    return data.decode("latin-1")


def parse_card(data: str | bytes, limits: VCardLimits = DEFAULT_LIMITS) -> Card:
    """One card; ``BadVCard`` (with a reason that quotes nothing of it) when it yields no profile."""
    if len(data) > limits.card_bytes:
        raise BadVCard(f"a card is over {limits.card_bytes} bytes")
    reader = _CardReader(limits)
    for name, params, value in _properties(data if isinstance(data, str) else decode(data)):
        handler = _HANDLERS.get(name)
        if handler is not None:
            handler(reader, params, value)
    return reader.card()


Params = dict[str, list[str]]
_LINE_NAME = re.compile(r"(?:[A-Za-z0-9_-]+\.)?([A-Za-z0-9_-]+)")  # [group.]name: no nested quantifier


def content_line(line: str) -> tuple[str, list[list[str]], str]:
    """``[group.]NAME *(;param) : value`` in one pass: (NAME, [[param, value...]...], value).
    A parameter is ``name=v1,v2`` (a quoted value is one, commas and all) or a bare 2.1
    ``TYPE`` value (``[name]``); the value is everything after the first colon outside quotes."""
    found = _LINE_NAME.match(line)
    if found is None:
        raise BadVCard("a card has a line that is not a vCard property")
    params: list[list[str]] = []
    i, end = found.end(), len(line)
    while i < end and line[i] == ";":
        j = i + 1
        while j < end and line[j] not in "=;:":
            j += 1
        param = [line[i + 1:j]]
        if j < end and line[j] == "=":
            j = _param_values(line, j + 1, param)
        params.append(param)
        i = j
    if i >= end or line[i] != ":":
        raise BadVCard("a card has a line that is not a vCard property")
    return found.group(1), params, line[i + 1:]


def _param_values(line: str, j: int, into: list[str]) -> int:
    """The values from ``j`` on, appended to ``into``; where they end."""
    while True:
        if j < len(line) and line[j] == '"':
            close = line.find('"', j + 1)
            if close < 0:
                raise BadVCard("a card has a parameter with an unclosed quote")
            into.append(line[j + 1:close])
            j = close + 1
        else:
            k = j
            while k < len(line) and line[k] not in ",;:":
                k += 1
            into.append(line[j:k])
            j = k
        if j < len(line) and line[j] == ",":
            j += 1
            continue
        return j


def _properties(text: str) -> list[tuple[str, Params, str]]:
    """The card's own properties (not a nested card's), names upper-case, values raw."""
    found: list[tuple[str, Params, str]] = []
    depth, ended = 0, False
    try:
        for line, number in getLogicalLines(io.StringIO(text)):
            name, params, value = content_line(line)
            name = name.upper()
            if ended:
                raise BadVCard("more than one card where one was expected")
            if not depth and (name, str(value).strip().upper()) != ("BEGIN", "VCARD"):
                raise BadVCard("a card does not begin with BEGIN:VCARD")
            depth += (name == "BEGIN") - (name == "END")
            ended = depth == 0
            if depth == 1 and name not in ("BEGIN", "END"):
                found.append((name, {str(p[0]).upper(): [str(v) for v in p[1:]] for p in params}, str(value)))
    except BadVCard:
        raise
    except Exception:  # vobject reads untrusted text: whatever it raises means "unreadable" here
        raise BadVCard("a card has a line that is not a vCard property") from None
    if not ended:
        raise BadVCard("a card has no END:VCARD")
    return found


class _CardReader:
    """Collects one card's kept values; ``card()`` judges the whole."""

    def __init__(self, limits: VCardLimits) -> None:
        self.limits = limits
        self.name, self.organization, self.title, self.uid = "", "", "", ""
        self.name_parts: tuple[str, ...] = ()
        self.photo: Photo | None = None
        self.emails: list[str] = []
        self.links: list[Link] = []
        self.dropped: list[str] = []

    def card(self) -> Card:
        if not self.emails:
            raise BadVCard("a card has no usable EMAIL address")
        family, given, additional, prefixes, suffixes = (self.name_parts + ("",) * 5)[:5]
        name = self.name or " ".join(p for p in (prefixes, given, additional, family, suffixes) if p)
        profile = Profile(tuple(dict.fromkeys(self.emails)), name, self.name_parts, self.organization, self.title,
                          self.photo, tuple(dict.fromkeys(self.links)), self.uid)
        return Card(profile, tuple(self.dropped))

    def text(self, prop: str, value: str) -> str:
        """``value`` on one line, without control characters; "" (and a reason) when over the bound."""
        cleaned = "".join(c for c in " ".join(value.split()) if c.isprintable())
        if len(cleaned) > self.limits.text_chars:
            self.dropped.append(f"{prop} over {self.limits.text_chars} characters")
            return ""
        return cleaned

    # A single-valued field keeps the first non-empty value the card gives it.
    def on_version(self, params: Params, value: str) -> None:
        if value.strip() not in VERSIONS:
            raise BadVCard("a card has a VERSION other than 2.1, 3.0 or 4.0")

    def on_fn(self, params: Params, value: str) -> None:
        self.name = self.name or self.text("FN", _unescape(value))

    def on_n(self, params: Params, value: str) -> None:
        parts = tuple(self.text("N", part) for part in _components(value)[:5])
        self.name_parts = self.name_parts or (parts if any(parts) else ())

    def on_org(self, params: Params, value: str) -> None:
        units = ", ".join(p.strip() for p in _components(value) if p.strip())
        self.organization = self.organization or self.text("ORG", units)

    def on_title(self, params: Params, value: str) -> None:
        self.title = self.title or self.text("TITLE", _unescape(value))

    def on_uid(self, params: Params, value: str) -> None:
        self.uid = self.uid or self.text("UID", _unescape(value))

    def on_email(self, params: Params, value: str) -> None:
        address = normalise_address(_unescape(value))
        if address is None:
            self.dropped.append("EMAIL not an address")
        elif len(self.emails) >= self.limits.values:
            self.dropped.append(f"EMAIL beyond the first {self.limits.values}")
        else:
            self.emails.append(address)

    def on_photo(self, params: Params, value: str) -> None:
        self.photo = self.photo or self.read_photo(params, value)

    def read_photo(self, params: Params, value: str) -> Photo | None:
        encoding = [e.lower() for e in params.get("ENCODING", [])]
        if "b" in encoding or "base64" in encoding:
            return self.inline_photo(value)
        uri = _unescape(value).strip()
        inline = _DATA_URI.fullmatch(uri)
        if inline is not None:
            return self.inline_photo(inline.group(2))
        url = self.web_url(uri)
        if url is None:
            self.dropped.append("PHOTO neither inline nor an http(s) URL")
        return Photo(url=url) if url else None

    def inline_photo(self, encoded: str) -> Photo | None:
        encoded = "".join(encoded.split())
        if len(encoded) // 4 * 3 > self.limits.photo_bytes + 2:
            self.dropped.append(f"PHOTO over {self.limits.photo_bytes} bytes")
            return None
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            self.dropped.append("PHOTO not valid base64")
            return None
        media_type = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
        if media_type is None or len(data) > self.limits.photo_bytes:
            self.dropped.append("PHOTO not a JPEG, PNG or GIF image within its bound")
            return None
        return Photo(media_type=media_type, data=data)

    def on_url(self, params: Params, value: str) -> None:
        url = self.web_url(_unescape(value))
        if url is None:
            self.dropped.append("URL not an http(s) URL")
        else:
            self.link(Link("url", url, self.label(params)))

    def on_socialprofile(self, params: Params, value: str) -> None:
        url = self.web_url(_unescape(value))
        handle = (params.get("X-USER") or [""])[0] if url is None else ""
        if url is None and _HANDLE.fullmatch(handle) is None:
            self.dropped.append("X-SOCIALPROFILE neither an http(s) URL nor a handle")
        else:
            self.link(Link("social", url or handle, self.label(params)))

    def on_impp(self, params: Params, value: str) -> None:
        uri = _unescape(value).strip()
        scheme, colon, rest = uri.partition(":")
        if not colon or scheme.lower() not in IMPP_SCHEMES or not rest or len(uri) > self.limits.url_chars \
                or any(c.isspace() or not c.isprintable() for c in uri):
            self.dropped.append("IMPP not an address of a known messaging scheme")
        else:
            self.link(Link("impp", f"{scheme.lower()}:{rest}", self.label(params)))

    def link(self, link: Link) -> None:
        if len(self.links) >= self.limits.values:
            self.dropped.append(f"links beyond the first {self.limits.values}")
        else:
            self.links.append(link)

    def label(self, params: Params) -> str:
        types = [t for value in params.get("TYPE", []) for t in value.split(",") if t.lower() != "pref"]
        return self.text("TYPE", types[0].lower()) if types else ""

    def web_url(self, value: str) -> str | None:
        """``value`` when it is an absolute http or https URL with a host, within the bound."""
        value = value.strip()
        if len(value) > self.limits.url_chars or any(c.isspace() or not c.isprintable() for c in value):
            return None
        try:
            parts = urlsplit(value)
            return value if parts.scheme.lower() in ("http", "https") and parts.hostname else None
        except ValueError:
            return None


_HANDLERS: dict[str, Callable[[_CardReader, Params, str], None]] = {
    "VERSION": _CardReader.on_version, "FN": _CardReader.on_fn, "N": _CardReader.on_n, "ORG": _CardReader.on_org,
    "TITLE": _CardReader.on_title, "UID": _CardReader.on_uid, "EMAIL": _CardReader.on_email, "PHOTO": _CardReader.on_photo,
    "URL": _CardReader.on_url, "X-SOCIALPROFILE": _CardReader.on_socialprofile, "IMPP": _CardReader.on_impp,
}


def _unescape(value: str) -> str:
    return _ESCAPED.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), value)


def _components(value: str) -> list[str]:
    """A structured value (N, ORG) split at its unescaped semicolons, each part unescaped."""
    parts = [""]
    for token in _STRUCTURED.findall(value):
        if token == ";":
            parts.append("")
        else:
            parts[-1] += token
    return [_unescape(part) for part in parts]
