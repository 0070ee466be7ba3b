"""Authentication headers: the verdicts our own server wrote, and who signed a message.

Anyone can write an ``Authentication-Results`` header (RFC 8601): a sender forging
``dkim=pass`` only has to put one in the message. So a header counts only when its
authserv-id is one the operator trusts (the receiving server's own id, e.g.
``mx.google.com``), and of several trusted ones only the topmost: a receiving server adds its
header on top, so the first trusted header in the block is the one it wrote last; a header
further down claiming the same id is at best an older hop and at worst forged (RFC 8601
§5 asks servers to delete those, but not all do). The topmost trusted header wins whole:
a method it does not report is not filled in from a lower one, or a forger could supply
what the real header left out.

``DKIM-Signature`` only names the signer (``d=``, ``s=``): without the body the signature
cannot be verified, so it says who claims to have signed, not that they did.

No library: ``authres`` (the RFC 8601 parser on PyPI) is unmaintained since 2019 and parses
about 3,000 headers a second here, a tenth of the harvest's whole budget per message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# RFC 7208 §9.1: the results a Received-SPF header may carry.
SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
MAX_SIGNATURES = 16
MAX_COMMENT_PASSES = 3

# method[/version]=result at the start of each resinfo (after a ';', comments gone): a result
# is a whole token, up to whitespace, ';' or the end; a longer or stranger one is no result.
_RESINFO = re.compile(r";\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?:/\s*[0-9]+\s*)?=\s*([A-Za-z0-9_-]{1,32})(?![^\s;])")
_KEYWORD = re.compile(r"\s*([A-Za-z]+)")
# A left-to-right lexer: a quoted string is opaque (its ';' or '(' mean nothing), and so is
# a comment, which may nest and in which '"' means nothing.
_LEX = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^"(]+|["(]', re.S)
_INNERMOST_COMMENT = re.compile(r"\([^()\\]*(?:\\.[^()\\]*)*\)", re.S)
_COMMENT_TEXT = re.compile(r"[^()\\]+|\\.|\\", re.S)
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._@+-]")
_DKIM_TAGS = re.compile(rb";\s*([ds])\s*=([^;]*)")  # searched in ";" + value: a literal first is fast
_DKIM_WHOLE_TAGS = re.compile(rb";\s*([ds])\s*=([^;]*)(?=;)")


@dataclass(frozen=True, slots=True)
class AuthVerdicts:
    """Results as the trusted server wrote them (lower-cased), or None where it said nothing."""

    dkim: str | None
    spf: str | None
    dmarc: str | None


NO_VERDICTS = AuthVerdicts(None, None, None)


def verdicts(results: list[str], received_spf: str, trusted: frozenset[str]) -> AuthVerdicts:
    """The topmost trusted Authentication-Results, with the topmost Received-SPF as a fallback for spf.

    ``results``: the Authentication-Results values, topmost first; ``received_spf``: the
    topmost Received-SPF value or ""; ``trusted``: lower-cased authserv-ids.

    Received-SPF (RFC 7208 §9.1) is weaker evidence: it names no authserv-id, so nothing
    tells whether our server or someone upstream (or the sender) wrote it. Only the
    topmost is considered, being the one most likely added by the last hop, and only when
    no trusted Authentication-Results gave an spf result.
    """
    found = NO_VERDICTS
    for value in results:
        if authserv_id(value) in trusted:
            found = _parse_results(value)
            break
    if found.spf is None and received_spf:
        spf = _first_keyword(received_spf)
        if spf in SPF_RESULTS:
            return AuthVerdicts(found.dkim, spf, found.dmarc)
    return found


def authserv_id(value: str) -> str | None:
    """The lower-cased authserv-id of one Authentication-Results value, or None."""
    head = value.partition(";")[0]
    if "(" in head or '"' in head:
        head = _flatten(value).partition(";")[0]
    words = head.split(None, 1)
    return words[0].lower() if words else None


def _parse_results(value: str) -> AuthVerdicts:
    found: dict[str, str] = {}
    for method, result in _RESINFO.findall(_flatten(value)):
        method, result = method.lower(), result.lower()
        # Several DKIM signatures: DMARC needs one that passes, so one pass is the verdict.
        if method not in found or (method == "dkim" and result == "pass"):
            found[method] = result
    return AuthVerdicts(found.get("dkim"), found.get("spf"), found.get("dmarc"))


def _flatten(value: str) -> str:
    """The value with comments dropped and quoted strings reduced to inert tokens."""
    if "(" not in value:
        return value if '"' not in value else _lex(value)
    if '"' in value:
        return _lex(value)
    # Without quoted strings, dropping innermost comments until none is left is exact. Each
    # pass costs the whole value: deeper nesting goes to the lexer, which is linear.
    for _ in range(MAX_COMMENT_PASSES):
        dropped = _INNERMOST_COMMENT.sub(" ", value)
        if dropped == value:
            return value.partition("(")[0]  # an unterminated comment runs to the end
        value = dropped
        if "(" not in value:
            return value
    return _lex(value)


def _lex(value: str) -> str:
    out: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        match = _LEX.match(value, pos)
        if match is None:  # cannot happen: the lexer accepts any character
            break
        token = match.group()
        if token == "(":
            pos = skip_comment(value, pos)
            out.append(" ")
            continue
        if token == '"':
            break  # an unterminated quoted string runs to the end
        if token[0] == '"':
            token = _NOT_TOKEN.sub("_", token[1:-1])
        out.append(token)
        pos = match.end()
    return "".join(out)


def skip_comment(value: str, pos: int) -> int:
    """Where the (possibly nested) comment opening at ``value[pos]`` ends; the end if it never does."""
    depth, end = 0, len(value)
    while pos < end:
        char = value[pos]
        if char == "(":
            depth += 1
            pos += 1
        elif char == ")":
            depth -= 1
            pos += 1
            if depth == 0:
                return pos
        else:
            match = _COMMENT_TEXT.match(value, pos)
            pos = match.end() if match else pos + 1
    return end


def _first_keyword(value: str) -> str | None:
    match = _KEYWORD.match(value)
    return match.group(1).lower() if match else None


def dkim_signers(occurrences: list[list[bytes]]) -> tuple[tuple[str, str], ...]:
    """(d=, s=) of each DKIM-Signature, given as its lines; lower-cased, "" for a missing or garbled tag."""
    signers: list[tuple[str, str]] = []
    for lines in occurrences[:MAX_SIGNATURES]:
        signer = _signer_in_first_line(lines[0]) or _signer(b"".join(lines))
        if signer != ("", ""):
            signers.append(signer)
    return tuple(signers)


@lru_cache(maxsize=1024)
def _signer_in_first_line(line: bytes) -> tuple[str, str] | None:
    """Both tags, if the first line holds them whole, else None.

    It often does, and then it is the same line in every message of that sender: cached.
    """
    tags = dict(reversed(_DKIM_WHOLE_TAGS.findall(b";" + line)))
    return (_tag(tags[b"d"]), _tag(tags[b"s"])) if b"d" in tags and b"s" in tags else None


def _signer(value: bytes) -> tuple[str, str]:
    tags = dict(reversed(_DKIM_TAGS.findall(b";" + value)))  # the first of each wins
    return _tag(tags.get(b"d", b"")), _tag(tags.get(b"s", b""))


def _tag(value: bytes) -> str:
    text = value.decode("utf-8", "replace").strip()
    if not text.isprintable() or " " in text:
        text = "".join(text.split())  # folded inside the value
    return text.lower() if len(text) <= 255 and text.isprintable() else ""
