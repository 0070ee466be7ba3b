"""Realistic, deterministic mailboxes written straight into Maildir ``cur/`` for Dovecot.

``realistic_messages(owner, count, seed)`` makes ``count`` messages (the same ones for the same
arguments) in folders INBOX, Sent and Archive: conversations with people in both directions
(the owner's replies go to Sent, with In-Reply-To/References into the INBOX thread), mailing
list traffic, newsletters and notifications. Each ``Message`` carries its raw bytes and the
facts a harvest test checks (Message-ID, direction, parsed Date, INTERNALDATE, decoded
subject, addresses, thread, authentication results by ``mx.example.test``, quirks), so a test
can count every message exactly once.

Header realism: Received, X-Received, Received-SPF, DKIM-Signature, Authentication-Results
(authserv-id ``mx.example.test``), List-Id/List-Unsubscribe/Precedence/Auto-Submitted on
machine mail, RFC 2047 subjects and display names (UTF-8 B and Q, ISO-8859-1 Q), folded
headers. About 1 % of messages carry one deliberate defect each, named in ``quirks``:

* ``broken-date`` (unparseable Date), ``no-date``, ``obs-date`` (RFC 5322 obsolete syntax,
  parseable: ``date`` is set);
* ``unterminated-encoded-word`` (``=?UTF-8?B?...`` without ``?=``; ``subject`` is None);
* ``no-message-id`` (``message_id`` is None; such messages start no thread);
* ``8bit-utf8-header`` (raw UTF-8 Subject; ``subject`` is the text), ``8bit-latin1-header``
  (raw ISO-8859-1 bytes in Subject; ``subject`` is None, there is no right answer);
* ``forged-auth-results``: an older Authentication-Results from another authserv-id claims
  ``pass`` where ours says ``fail`` (``auth`` holds ours).

Other quirks, all well-formed: ``encoded-subject``, ``latin1``, ``encoded-name``,
``folded-subject``, ``quoted-name``.

``write_mailbox(path, (uid, gid), messages)`` writes one Maildir folder: file names carry
``S=``/``W=`` sizes and ``:2,`` flags, mtime is INTERNALDATE, and Dovecot assigns UIDs in list
order (for messages written into a mailbox in one call, after any already there).
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

AUTHSERV_ID = "mx.example.test"
FORGED_AUTHSERV_ID = "mx.example.test.forger.example"
END = dt.datetime(2024, 6, 30, 18, 0, tzinfo=dt.timezone.utc)
SPAN = dt.timedelta(days=730)
FOLDERS = ("INBOX", "Sent", "Archive")


@dataclass(frozen=True, slots=True)
class Message:
    raw: bytes                      # the message as stored, LF line endings
    folder: str                     # "INBOX", "Sent" or "Archive"
    internaldate: dt.datetime       # UTC, whole seconds: the file's mtime, IMAP INTERNALDATE
    flags: str                      # Maildir flags, sorted: "S", "RS", "FS", "" ...
    message_id: str | None          # Message-ID as written, "<...>"; None when absent
    direction: str                  # "in" (someone to the owner) or "out" (the owner's, in Sent)
    kind: str                       # "person", "list", "newsletter" or "notification"
    date: dt.datetime | None        # the Date header parsed (aware); None when absent or broken
    subject: str | None             # decoded subject; None when it cannot be decoded unambiguously
    from_addr: str                  # lower-case address
    from_name: str                  # decoded display name ("" when none)
    to_addrs: tuple[str, ...]
    cc_addrs: tuple[str, ...]
    in_reply_to: str | None
    references: tuple[str, ...]
    thread: int                     # conversation number; replies share it with their root
    # Results by AUTHSERV_ID ("pass", "fail", "softfail"); None on the owner's own (Sent) mail.
    spf: str | None = None
    dkim: str | None = None
    dmarc: str | None = None
    quirks: frozenset[str] = frozenset()

    @property
    def machine(self) -> bool:
        return self.kind in ("newsletter", "notification")

    def copy_to(self, folder: str) -> Message:
        """The same message in another folder (e.g. Gmail's All Mail holds a copy of everything)."""
        return replace(self, folder=folder)


# --- RFC 2047 ------------------------------------------------------------------------------

_Q_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!*+-/")


def _chunks(text: str, charset: str, limit: int, width: Callable[[bytes], int]) -> list[bytes]:
    chunks: list[bytes] = []
    current = b""
    for ch in text:
        b = ch.encode(charset)
        if current and width(current + b) > limit:
            chunks.append(current)
            current = b""
        current += b
    if current:
        chunks.append(current)
    return chunks


def _q(data: bytes) -> str:
    return "".join("_" if c == 0x20 else chr(c) if c in _Q_SAFE else f"={c:02X}" for c in data)


def encode_words(text: str, charset: str = "UTF-8", encoding: str = "B") -> str:
    """``text`` as RFC 2047 encoded words of at most 75 characters, folded onto lines of their own."""
    prefix = f"=?{charset}?{encoding}?"
    room = 75 - len(prefix) - 2
    if encoding == "B":
        parts = [base64.b64encode(c).decode() for c in _chunks(text, charset, room * 3 // 4, len)]
    else:
        parts = [_q(c) for c in _chunks(text, charset, room, lambda b: len(_q(b)))]
    return "\n ".join(f"{prefix}{p}?=" for p in parts)


# --- people and content ------------------------------------------------------------------

_FIRST = ["Anna", "Ben", "Chloé", "Dmitri", "Eva", "François", "Grete", "Hiroshi", "Ingrid", "José", "Kai",
          "Łukasz", "Mária", "Nils", "Olga", "Pål", "Quentin", "Renée", "Søren", "Tomás", "Ursula", "Václav",
          "Wen", "Xavier", "Yusuf", "Zoë", "Maria", "John", "Priya", "Omar"]
_LAST = ["Andersen", "Bauer", "Çelik", "Dubois", "Eriksson", "Fischer", "García", "Hansen", "Ivanova", "Jäger",
         "Kowalski", "López", "Müller", "Nowak", "OBrien", "Petrović", "Quinn", "Rossi", "Schmidt", "Taylor",
         "Ünal", "Varga", "Weiß", "Xu", "Yamamoto", "Zieliński", "Smith", "Patel", "Kim", "Okafor"]
_CJK = ["李雷", "田中 太郎", "김민수", "王芳"]
_DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "corp.example", "uni.example"]
_TOPICS = ["Meeting on Thursday", "Quarterly report", "Lunch next week?", "Invoice 2024-{n}", "Trip to Lisbon",
           "Draft for review", "Question about the contract", "Photos from the weekend", "Budget {n}",
           "Project kickoff", "Your feedback, please", "Re-scheduling our call", "Conference travel",
           "Café tomorrow?", "Grüße aus München", "Résumé attached", "会议纪要 {n}", "Привет из Москвы",
           "Ñandú sighting in the park", "🎉 Party on Friday", "Über das Angebot", "Smörgåsbord planning",
           "A rather long subject line that goes on and on about the many agenda items for the offsite {n}",
           "Straße, Größe und Maße: die Liste für die Renovierung der Wohnung im zweiten Stock {n}"]
_LISTS = [("dev", "dev.lists.example.org", "Developers' discussion"), ("users", "users.lists.example.org", "Users"),
          ("café", "cafe.lists.example.net", "Café club")]
_NEWSLETTERS = [("news@news.example.com", "Example Weekly", "Your weekly digest #{n}"),
                ("offers@shop.example.net", "Shop Example", "Up to {n}% off this weekend"),
                ("hello@travel.example.org", "Travel Example", "Fernweh? Angebote für {n} Reiseziele")]
_NOTIFIERS = [("no-reply@git.example.com", "Example Git", "[repo] Pipeline #{n} failed"),
              ("noreply@bank.example.org", "Example Bank", "Your statement {n} is ready"),
              ("alerts@monitor.example.net", "Monitor", "ALERT: disk usage {n}% on host-3")]
_LINES = ["Thanks for the update.", "Sounds good to me.", "Can we move this to next week?",
          "I've attached the numbers below.", "Let me check and get back to you.", "Vielen Dank für die schnelle Antwort!",
          "Je serai là à 10h.", "See you there.", "Could you take a look at the second point?", "Agreed, let's do it."]
_TZ = [dt.timezone(dt.timedelta(hours=h, minutes=m)) for h, m in
       [(0, 0), (1, 0), (2, 0), (-5, 0), (-8, 0), (5, 30), (9, 0), (-3, 0), (10, 0), (-7, 0)]]


def _fold(name: str, value: str) -> str:
    """A header, folded at spaces before 78 columns where possible."""
    line, out = f"{name}: ", []
    for word in value.split(" "):
        if len(line) + len(word) + 1 > 78 and line.strip() and not line.endswith(": "):
            out.append(line.rstrip())
            line = " "
        line += word + " "
    out.append(line.rstrip())
    return "\n".join(out)


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _Person:
    name: str
    addr: str


class _Generator:
    def __init__(self, owner: str, count: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.owner = owner.lower()
        self.owner_name = "Alex Example"
        self.count = count
        self.messages: list[Message] = []
        self.thread = 0
        self.ids: set[str] = set()
        self.bodies: dict[int, str] = {}  # id(message) -> its own text, for quoting
        self.people = [self._person() for _ in range(max(20, min(400, count // 20)))]

    def _person(self) -> _Person:
        rng = self.rng
        if rng.random() < 0.06:
            name = rng.choice(_CJK)
            local = f"user{rng.randrange(10000)}"
        else:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            name = f"{first} {last}"
            local = f"{first}.{last}".encode("ascii", "ignore").decode().lower() or "someone"
            local = f"{local}{rng.randrange(100)}" if rng.random() < 0.3 else local
        return _Person(name, f"{local}@{rng.choice(_DOMAINS)}")

    def _id(self, domain: str) -> str:
        while True:
            mid = f"<{self.rng.getrandbits(64):016x}.{self.rng.getrandbits(24):x}@{domain}>"
            if mid not in self.ids:
                self.ids.add(mid)
                return mid

    # --- encoding helpers: each returns (header text, decoded text or None, quirks)

    def _subject(self, text: str, forced: str | None = None) -> tuple[str, str | None, set[str]]:
        rng = self.rng
        quirks: set[str] = set()
        if forced == "unterminated-encoded-word":
            enc = base64.b64encode(text.encode()).decode()
            return f"Subject: =?UTF-8?B?{enc}", None, {forced}
        if forced in ("8bit-utf8-header", "8bit-latin1-header"):
            return f"Subject: {text}", (text if forced == "8bit-utf8-header" else None), {forced}
        if text.isascii() and rng.random() > 0.04:
            header = _fold("Subject", text)
            if "\n" in header:
                quirks.add("folded-subject")
            return header, text, quirks
        quirks.add("encoded-subject")
        if _is_latin1(text) and rng.random() < 0.35:
            quirks.add("latin1")
            words = encode_words(text, "ISO-8859-1", "Q")
        else:
            words = encode_words(text, "UTF-8", rng.choice("BQ"))
        if "\n" in words:
            quirks.add("folded-subject")
        return "Subject: " + words, text, quirks

    def _mailbox(self, person: _Person, quirks: set[str]) -> str:
        name = person.name
        if not name:
            return person.addr
        if name.isascii():
            if self.rng.random() < 0.15:  # "Last, First" needs quoting
                quirks.add("quoted-name")
                first, _, last = name.partition(" ")
                return f'"{last}, {first}" <{person.addr}>'
            return f"{name} <{person.addr}>"
        quirks.add("encoded-name")
        if _is_latin1(name) and self.rng.random() < 0.35:
            quirks.add("latin1")
            return f"{encode_words(name, 'ISO-8859-1', 'Q')} <{person.addr}>"
        return f"{encode_words(name, 'UTF-8', self.rng.choice('BQ'))} <{person.addr}>"

    def _display_name(self, person: _Person, header: str) -> str:
        if header.startswith('"'):
            return header[1:header.index('"', 1)]
        return person.name

    # --- messages

    def _trace_headers(self, sender: _Person, when: dt.datetime, received: dt.datetime,
                       auth: dict[str, str], forged: bool) -> list[str]:
        rng = self.rng
        domain = sender.addr.split("@")[1]
        ip = f"192.0.2.{rng.randrange(1, 255)}"
        host = f"mail-{rng.getrandbits(20):05x}.{domain}"
        local_received = email.utils.format_datetime(received)
        spf_text = {"pass": f"domain of {sender.addr} designates {ip} as permitted sender",
                    "softfail": f"domain of transitioning {sender.addr} does not designate {ip} as permitted sender",
                    "fail": f"domain of {sender.addr} does not designate {ip} as permitted sender"}[auth["spf"]]
        b = base64.b64encode(rng.randbytes(128)).decode()
        bh = base64.b64encode(rng.randbytes(32)).decode()
        lines = [
            f"Return-Path: <{sender.addr}>",
            f"Delivered-To: {self.owner}",
            f"Received: from {host} ({host} [{ip}])\n\tby {AUTHSERV_ID} (Postfix) with ESMTPS id "
            f"{rng.getrandbits(40):010X}\n\tfor <{self.owner}>; {local_received}",
            f"Authentication-Results: {AUTHSERV_ID};\n\tdkim={auth['dkim']} header.d={domain} header.s=s1"
            f" header.b={b[:8]};\n\tspf={auth['spf']} ({AUTHSERV_ID}: {spf_text}) smtp.mailfrom={sender.addr};"
            f"\n\tdmarc={auth['dmarc']} (p=NONE sp=NONE dis=NONE) header.from={domain}",
            f"Received-SPF: {auth['spf'].capitalize()} ({AUTHSERV_ID}: {spf_text}) client-ip={ip};"
            f"\n\tenvelope-from=<{sender.addr}>; helo={host}; receiver={AUTHSERV_ID};",
        ]
        if rng.random() < 0.5:
            xr = email.utils.format_datetime((when + dt.timedelta(seconds=1)).astimezone(_TZ[4]))
            lines.append(f"X-Received: by 2002:a05:6a00:{rng.getrandbits(16):x}:b0:{rng.getrandbits(12):x} with SMTP id "
                         f"{rng.getrandbits(32):x}-{rng.getrandbits(24):x}.{rng.randrange(99)}.{rng.randrange(9999)};\n"
                         f"        {xr} (PST)")
        if forged:  # older than ours: the sender's own claim, further down the header block
            lines.append(f"Authentication-Results: {FORGED_AUTHSERV_ID};\n\tdkim=pass header.d={domain};"
                         f" spf=pass smtp.mailfrom={sender.addr};\n\tdmarc=pass header.from={domain}")
            lines.append(f"Received: from [10.1.2.3] (unknown [10.1.2.3])\n\tby {host} with ESMTPSA; "
                         f"{email.utils.format_datetime(when)}")
        lines.append(
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=s1;\n"
            f"        t={int(when.timestamp())}; h=from:to:subject:date:message-id:in-reply-to:references;\n"
            f"        bh={bh};\n        b={b[:64]}\n         {b[64:128]}\n         {b[128:]}")
        return lines

    def _auth(self, quirks: set[str]) -> dict[str, str]:
        # forged-auth-results: ours says fail, the forger's says pass.
        if "forged-auth-results" in quirks or self.rng.random() < 0.08:
            return {"spf": self.rng.choice(["softfail", "fail"]), "dkim": "fail", "dmarc": "fail"}
        return {"spf": "pass", "dkim": "pass", "dmarc": "pass"}

    def _pick_quirk(self, allow_no_id: bool, incoming: bool = True) -> str | None:
        r = self.rng.random()
        options = ["broken-date", "no-date", "obs-date", "unterminated-encoded-word", "8bit-utf8-header",
                   "8bit-latin1-header"] + (["forged-auth-results"] if incoming else []) + (
                   ["no-message-id"] if allow_no_id else [])
        if r < 0.012:
            return self.rng.choice(options)
        return None

    def _emit(self, *, folder: str, direction: str, kind: str, sender: _Person, to: Sequence[_Person],
              cc: Sequence[_Person], subject: str, when: dt.datetime, parent: Message | None,
              extra: Sequence[str] = (), quirk: str | None = None, flags: str = "S", body: str = "") -> Message:
        rng = self.rng
        quirks: set[str] = {quirk} if quirk else set()
        if quirk == "8bit-latin1-header" and not _is_latin1(subject):
            subject = ("Re: " if parent is not None else "") + "Grüße aus München"
        domain = sender.addr.split("@")[1]
        message_id = None if quirk == "no-message-id" else self._id(domain)
        received = when + dt.timedelta(seconds=rng.randrange(1, 180)) if direction == "in" else when
        internaldate = received.astimezone(dt.timezone.utc).replace(microsecond=0)
        local = when.astimezone(rng.choice(_TZ))
        lines: list[str] = []
        auth: dict[str, str] = {}
        if direction == "in":
            auth = self._auth(quirks)
            lines += self._trace_headers(sender, local, internaldate, auth, quirk == "forged-auth-results")
        date: dt.datetime | None = local.replace(microsecond=0)
        if quirk == "broken-date":
            lines.append(rng.choice(["Date: Mon, 32 Foo 2023 25:61:00 +9999", "Date: yesterday at noon",
                                     "Date: 2023-13-45T99:99:99", "Date: Tue, 4 Jun"]))
            date = None
        elif quirk == "no-date":
            date = None
        elif quirk == "obs-date":  # two-digit year and a zone name (RFC 5322 §4.3)
            utc = local.astimezone(dt.timezone.utc)
            lines.append(f"Date: {utc.strftime('%d %b %y %H:%M:%S')} GMT")
        else:
            lines.append(f"Date: {email.utils.format_datetime(local.replace(microsecond=0))}")
        from_header = self._mailbox(sender, quirks)
        lines.append(f"From: {from_header}")
        if to:
            lines.append(_fold("To", ", ".join(self._mailbox(p, quirks) for p in to)))
        if cc:
            lines.append(_fold("Cc", ", ".join(self._mailbox(p, quirks) for p in cc)))
        header, decoded, subject_quirks = self._subject(subject, quirk if quirk in (
            "unterminated-encoded-word", "8bit-utf8-header", "8bit-latin1-header") else None)
        quirks |= subject_quirks
        lines.append(header)
        if message_id is not None:
            lines.append(f"Message-ID: {message_id}")
        references: tuple[str, ...] = ()
        in_reply_to = None
        if parent is not None and parent.message_id is not None:
            in_reply_to = parent.message_id
            references = (*parent.references, parent.message_id)
            lines.append(f"In-Reply-To: {in_reply_to}")
            lines.append("References: " + "\n ".join(references))
        lines.extend(extra)
        lines.append("MIME-Version: 1.0")
        body = body or "\n".join(rng.sample(_LINES, 2))
        if parent is not None:
            body += "\n\n" + "\n".join("> " + line for line in self.bodies[id(parent)].splitlines()[:3] if line)
        if body.isascii():
            lines.append('Content-Type: text/plain; charset="us-ascii"\nContent-Transfer-Encoding: 7bit')
            payload = body
        elif rng.random() < 0.5:
            lines.append('Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 8bit')
            payload = body
        else:
            lines.append('Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: quoted-printable')
            payload = "".join(c if c.isascii() and c != "=" else "".join(f"={b:02X}" for b in c.encode())
                              for c in body)
        if direction == "out":
            lines.append("User-Agent: Mozilla/5.0 Thunderbird/115.10.1")
        text = "\n".join(lines) + "\n\n" + payload + "\n"
        raw = text.encode("utf-8")
        if quirk == "8bit-latin1-header":
            raw = raw.replace(f"Subject: {subject}".encode(), f"Subject: {subject}".encode("latin-1"), 1)
        message = Message(
            raw=raw, folder=folder, internaldate=internaldate, flags=flags, message_id=message_id,
            direction=direction, kind=kind, date=date, subject=decoded, from_addr=sender.addr.lower(),
            from_name=self._display_name(sender, from_header), to_addrs=tuple(p.addr.lower() for p in to),
            cc_addrs=tuple(p.addr.lower() for p in cc), in_reply_to=in_reply_to, references=references,
            thread=self.thread, spf=auth.get("spf"), dkim=auth.get("dkim"), dmarc=auth.get("dmarc"),
            quirks=frozenset(quirks))
        self.bodies[id(message)] = body
        self.messages.append(message)
        return message

    def _when(self) -> dt.datetime:
        return END - SPAN * self.rng.random()

    def _conversation(self) -> None:
        rng = self.rng
        contact = rng.choice(self.people)
        others = rng.sample(self.people, rng.choice([0, 0, 0, 1, 2]))
        me = _Person(self.owner_name, self.owner)
        # Gives 1..6 messages, mostly short; a few threads are long.
        length = min(6, 1 + int(rng.expovariate(0.9)))
        if rng.random() < 0.02:
            length = rng.randrange(8, 25)
        topic = rng.choice(_TOPICS).format(n=rng.randrange(10, 99))
        when = self._when()
        outgoing = rng.random() < 0.3
        parent: Message | None = None
        for i in range(length):
            if len(self.messages) >= self.count or when > END:
                return
            replying = i + 1 < length  # is the next message a reply by the other side?
            if outgoing:
                folder, sender, to, cc = "Sent", me, [contact], others
            else:
                folder = "Archive" if rng.random() < 0.15 else "INBOX"
                sender, to = contact, [me]
                cc = others
                if others and rng.random() < 0.3:  # the owner only in Cc
                    to, cc = [others[0]], [me, *others[1:]]
            quirk = self._pick_quirk(allow_no_id=length == 1, incoming=not outgoing)
            if outgoing:
                flags = "S"
            else:
                flags = "RS" if replying else ("" if END - when < dt.timedelta(days=10) else "S")
                if rng.random() < 0.05:
                    flags = "F" + flags
            parent = self._emit(folder=folder, direction="out" if outgoing else "in", kind="person",
                                sender=sender, to=to, cc=cc, subject=("Re: " if i else "") + topic,
                                when=when, parent=parent, quirk=quirk, flags="".join(sorted(flags)))
            when += dt.timedelta(minutes=rng.randrange(3, 60 * 72))
            outgoing = not outgoing if rng.random() < 0.85 else outgoing

    def _list_post(self) -> None:
        rng = self.rng
        name, list_domain, description = rng.choice(_LISTS)
        list_addr = f"{name.encode('ascii', 'ignore').decode() or 'cafe'}@{list_domain.split('.', 1)[1]}"
        poster = rng.choice(self.people)
        extra = [f"List-Id: {description} <{list_domain}>",
                 f"List-Unsubscribe: <mailto:{name.encode('ascii', 'ignore').decode() or 'cafe'}-leave@"
                 f"{list_domain.split('.', 1)[1]}>",
                 f"List-Post: <mailto:{list_addr}>", "Precedence: list"]
        self._emit(folder="INBOX", direction="in", kind="list", sender=poster, to=[_Person("", list_addr)], cc=[],
                   subject=f"[{name}] " + rng.choice(_TOPICS).format(n=rng.randrange(10, 99)), when=self._when(),
                   parent=None, extra=extra, quirk=self._pick_quirk(allow_no_id=True))

    def _machine(self) -> None:
        rng = self.rng
        me = _Person(self.owner_name, self.owner)
        when = self._when()
        if rng.random() < 0.5:
            addr, name, subject = rng.choice(_NEWSLETTERS)
            kind = "newsletter"
            domain = addr.split("@")[1]
            token = f"{rng.getrandbits(48):012x}"
            extra = [f"List-Id: {name} <newsletter.{domain}>",
                     f"List-Unsubscribe: <https://{domain}/unsubscribe/{token}>,\n <mailto:unsubscribe@{domain}?subject={token}>",
                     "List-Unsubscribe-Post: List-Unsubscribe=One-Click", "Precedence: bulk"]
        else:
            addr, name, subject = rng.choice(_NOTIFIERS)
            kind = "notification"
            extra = ["Auto-Submitted: auto-generated", "X-Auto-Response-Suppress: All"]
        flags = "" if END - when < dt.timedelta(days=30) or rng.random() < 0.3 else "S"
        self._emit(folder="Archive" if rng.random() < 0.1 else "INBOX", direction="in", kind=kind,
                   sender=_Person(name, addr), to=[me], cc=[], subject=subject.format(n=rng.randrange(2, 99)),
                   when=when, parent=None, extra=extra, quirk=self._pick_quirk(allow_no_id=True), flags=flags)

    def run(self) -> list[Message]:
        while len(self.messages) < self.count:
            self.thread += 1
            r = self.rng.random()
            if r < 0.55:
                self._conversation()
            elif r < 0.65:
                self._list_post()
            else:
                self._machine()
        self.messages.sort(key=lambda m: m.internaldate)  # stable: a thread's order survives ties
        return self.messages


def realistic_messages(owner: str = "me@example.test", count: int = 500, seed: int = 0) -> list[Message]:
    """``count`` messages for ``owner``, sorted by INTERNALDATE; the same for the same arguments."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return _Generator(owner, count, seed).run()


# --- writing ---------------------------------------------------------------------------------

_batch = 0
_sequence = 1_000_000_000  # the "seconds" of every file name written by this process, in order


def write_mailbox(path: Path, owner_uid_gid: tuple[int, int] | None, messages: Iterable[Message], *,
                  uids: Sequence[int] | None = None, uidvalidity: int | None = None) -> list[Path]:
    """Write ``messages`` into the Maildir folder ``path`` (its cur/ is created if missing),
    whatever their ``folder``; returns the files in order. ``owner_uid_gid`` owns the files
    (None: leave them to the current user).

    Dovecot assigns UIDs in this order, after any messages already there. To choose them
    instead (gaps, as after expunges) and the UIDVALIDITY, pass ``uids`` (ascending, one per
    message) and/or ``uidvalidity``: this writes Dovecot's ``dovecot-uidlist``, so the folder
    must hold no messages and no Dovecot files yet (see ``Dovecot.replace_mailbox``)."""
    global _batch, _sequence
    messages = list(messages)
    pinned = uids is not None or uidvalidity is not None
    if pinned:
        if uids is None:
            uids = range(1, len(messages) + 1)
        if len(uids) != len(messages) or any(b <= a for a, b in zip(uids, uids[1:])) or (uids and uids[0] < 1):
            raise ValueError("uids must be ascending positive numbers, one per message")
        if any((Path(path) / name).exists() for name in ("dovecot-uidlist", "dovecot.index", "dovecot.index.log")) \
                or any(any((Path(path) / sub).iterdir()) for sub in ("cur", "new") if (Path(path) / sub).is_dir()):
            raise ValueError(f"{path} is not empty: cannot pin UIDs")
    _batch += 1
    cur = Path(path) / "cur"
    for sub in ("cur", "new", "tmp"):
        d = Path(path) / sub
        if not d.is_dir():
            d.mkdir(parents=True, mode=0o700)
            if owner_uid_gid is not None:
                os.chown(d, *owner_uid_gid)
    # "<seconds>.M<microseconds>P<pid>.<host>": Dovecot gives new files UIDs in the order of
    # those numbers. Seconds here are a counter, not a time: UIDs follow the order of writing
    # whatever the INTERNALDATEs (which are the files' mtimes).
    unique = f"P{os.getpid()}Q{_batch}x{time.time_ns() % 10**9}.inboxlens-test"
    written = []
    flags_open = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for i, message in enumerate(messages):
        raw = message.raw
        _sequence += 1
        virtual_size = len(raw) + raw.count(b"\n")  # with CRLF line endings, as IMAP sees it
        name = f"{_sequence}.M{i % 1000000}{unique},S={len(raw)},W={virtual_size}:2,{message.flags}"
        file = cur / name
        fd = os.open(file, flags_open, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if owner_uid_gid is not None:
                os.fchown(fd, *owner_uid_gid)
            stamp = message.internaldate.timestamp()
            os.utime(fd, (stamp, stamp))
        finally:
            os.close(fd)
        written.append(file)
    if pinned:
        assert uids is not None
        validity = uidvalidity if uidvalidity is not None else int(time.time())
        if not 0 < validity < 2**32:
            raise ValueError("UIDVALIDITY is a non-zero 32-bit number")
        next_uid = (uids[-1] + 1) if uids else 1
        lines = [f"3 V{validity} N{next_uid} G{os.urandom(16).hex()}"]
        lines += [f"{uid} :{file.name.split(':', 1)[0]}" for uid, file in zip(uids, written)]
        uidlist = Path(path) / "dovecot-uidlist"
        uidlist.write_text("\n".join(lines) + "\n")
        if owner_uid_gid is not None:
            os.chown(uidlist, *owner_uid_gid)
    return written


def by_folder(messages: Iterable[Message]) -> dict[str, list[Message]]:
    folders: dict[str, list[Message]] = {}
    for message in messages:
        folders.setdefault(message.folder, []).append(message)
    return folders
