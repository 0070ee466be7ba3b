"""Header parsing benchmark: ``inboxlens.harvest.headers.parse`` against the stdlib on the same header blocks.

``python -m bench.parse``. Each round builds 20,000 realistic ``BODY.PEEK[HEADER.FIELDS (...)]`` blocks (personal
mail and replies with long References, newsletters signed twice, notifications, and a share
of odd ones: obsolete dates, groups, comments, raw 8-bit, forged Authentication-Results),
from one seeded stream, so every run parses the same bytes and no cache sees a block twice.
The harvest parses each fetch batch right after reading it, so every side gets batches of
500 fresh copies; one more row parses 20,000 blocks made long before, out of the CPU caches.
Taking turns, so that a noisy neighbour hits every side:

- ``parse_header_block`` on every block;
- the baseline the harvest must beat: ``BytesHeaderParser(policy=email.policy.default)``,
  reading the same fields (addresses through ``getaddresses``, Date through
  ``parsedate_to_datetime``), on a tenth of the blocks (it is that slow);
- for reference, the stdlib's faster route: the compat32 parser with ``decode_header``.

The harvest's budget (docs: baselines) is half the bare IMAP fetch rate, ~40,000-50,000
messages a second here, end to end; the parser's share of it is the target below.
"""

from __future__ import annotations

from typing import Any

import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from email import policy
from email.header import Header, decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import format_datetime, formataddr, getaddresses, parsedate_to_datetime

from inboxlens.harvest.headers.parse import parse_header_block

from .report import ratio, table, verdict

BLOCKS = 20_000
BATCH = 500  # the harvest's fetch batch
BASELINE_SHARE = 10  # the policy.default baseline parses one block in this many
ROUNDS = 3
TARGET = 30_000  # messages a second
TRUSTED = frozenset({"mx.google.com"})
INTERNAL = datetime(2024, 5, 1, tzinfo=timezone.utc)

FIRST = ["Anna", "Ben", "Chloé", "Dmitri", "Eva", "François", "Grace", "Hiro", "Ines", "Jörg", "Kai", "Łukasz",
         "María", "Noah", "Olivia", "Priya", "Quinn", "Renée", "Søren", "Tomás", "Uma", "Wei", "Zoë", "李"]
LAST = ["Smith", "Müller", "O'Brien", "García", "Nguyen", "Kowalski", "Johansson", "Tanaka", "Dubois", "Rossi", "雷"]
DOMAINS = ["gmail.com", "outlook.com", "example.com", "acme.io", "uni-heidelberg.de", "yahoo.co.jp", "posteo.de"]
WORDS = ("meeting budget draft quarterly review lunch invoice photos trip plan update notes deadline "
         "contract design feedback Zürich café résumé naïve über façade déjà").split()
REPOS = ["api", "web-app", "infra", "docs", "mobile", "billing", "search"]
BRANDS = [("Acme Deals", "acme-shop.com"), ("The Weekly Digest", "digest.news"), ("Früh & Spät", "fruehspaet.de"),
          ("Flights.io", "flights.io"), ("🎉 PartyBox", "partybox.co")]
NOTIFIERS = [("GitHub", "notifications@github.com"), ("Jira", "jira@acme.atlassian.net"),
             ("LinkedIn", "messages-noreply@linkedin.com"), ("Google Calendar", "calendar-notification@google.com")]
OBSOLETE_DATES = ["Mon, 3 Jul 2023 10:00 EST", "3 Jul 23 10:00:00 GMT", "Monday, 03-Jul-23 10:00:00 GMT",
                  "Mon Jul  3 10:00:00 2023", "Mon, 03 Jul 2023 10:00:00 +0000 (UTC)", "Mon, 3 Jul 2023 10:00:00 PDT",
                  "not a date", "Mon, 31 Feb 2023 10:00:00 +0000"]


class Mail:
    """Makes header blocks as an IMAP server returns them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.people = [(f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}",
                        f"{self.rng.choice(['j', 'anna', 'ben.k', 'x_y', 'info', 'team'])}{i}@{self.rng.choice(DOMAINS)}")
                       for i in range(300)]
        self.me = ("Me Myself", "me@gmail.com")
        self.threads: list[list[str]] = []

    def block(self) -> bytes:
        kind = self.rng.random()
        fields = (self.personal() if kind < 0.4 else self.newsletter() if kind < 0.75
                  else self.notification() if kind < 0.95 else self.odd())
        return ("".join(f"{name}: {value}\r\n" for name, value in fields) + "\r\n").encode("utf-8", "surrogateescape")

    def msgid(self, domain: str) -> str:
        return f"<{self.rng.getrandbits(64):x}.{self.rng.getrandbits(32):x}@{domain}>"

    def date(self) -> str:
        moment = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=self.rng.randrange(10_000_000))
        zone = timezone(timedelta(minutes=self.rng.choice([0, 60, 120, -300, -420, 330, 540])))
        return format_datetime(moment.astimezone(zone))

    def subject(self, words: int) -> str:
        text = " ".join(self.rng.choice(WORDS) for _ in range(words)).capitalize()
        return Header(text, "utf-8" if not text.isascii() else "us-ascii").encode(linesep="\r\n") if self.rng.random() < 0.9 else text

    def auth(self, domain: str, dkim: str = "pass") -> list[tuple[str, str]]:
        ip = f"209.85.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
        return [
            ("X-Received", f"by 2002:a05:6a20:{self.rng.getrandbits(16):x} with SMTP id {self.rng.getrandbits(40):x};\r\n"
                           f"        {self.date()}"),
            ("Authentication-Results", f"mx.google.com;\r\n       dkim={dkim} header.i=@{domain} header.s=s1 "
                                       f"header.b={self.rng.getrandbits(48):x};\r\n       spf=pass (google.com: domain of "
                                       f"bounce@{domain} designates {ip} as permitted sender) smtp.mailfrom=bounce@{domain};\r\n"
                                       f"       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from={domain}"),
            ("Received-SPF", f"pass (google.com: domain of bounce@{domain} designates {ip} as permitted sender) client-ip={ip};"),
        ]

    def dkim(self, domain: str, selector: str, gmail_style: bool = False) -> tuple[str, str]:
        signature = "".join(self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(344))
        folded = "\r\n\t ".join(signature[i:i + 70] for i in range(0, len(signature), 70))
        if gmail_style:  # d= and s= on the second line, beside a timestamp
            stamp = 1_700_000_000 + self.rng.randrange(10_000_000)
            return ("DKIM-Signature", f"v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n        d={domain}; s={selector}; "
                                      f"t={stamp}; x={stamp + 604800}; darn=gmail.com;\r\n        h=to:subject:message-id:"
                                      f"date:from:mime-version:from:to:cc:subject\r\n         :date:message-id:reply-to;\r\n"
                                      f"        bh={signature[:44]};\r\n        b={folded}")
        return ("DKIM-Signature", f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s={selector};\r\n\t"
                                  f"h=from:to:subject:date:message-id:mime-version; bh={signature[:44]};\r\n\tb={folded}")

    def person(self) -> str:
        name, address = self.rng.choice(self.people)
        return formataddr((name, address), "utf-8") if self.rng.random() < 0.8 else address

    def personal(self) -> list[tuple[str, str]]:
        sender = self.rng.choice(self.people)
        domain = sender[1].split("@")[1]
        fields = [*self.auth(domain), self.dkim(domain, "20230601", gmail_style=True)]
        fields.append(("Date", self.date()))
        msgid = self.msgid(domain)
        if self.threads and self.rng.random() < 0.5:
            thread = self.rng.choice(self.threads)
            fields += [("In-Reply-To", thread[-1]), ("References", "\r\n ".join(thread[-20:]))]
            fields.append(("Subject", "Re: " + self.subject(3)))
            thread.append(msgid)
        else:
            self.threads.append([msgid])
            fields.append(("Subject", self.subject(self.rng.randrange(2, 9))))
        fields.append(("Message-ID", msgid))
        fields.append(("From", formataddr(sender, "utf-8")))
        fields.append(("To", ", ".join([formataddr(self.me)] + [self.person() for _ in range(self.rng.randrange(3))])))
        if self.rng.random() < 0.4:
            fields.append(("Cc", ",\r\n ".join(self.person() for _ in range(self.rng.randrange(1, 6)))))
        return fields

    def newsletter(self) -> list[tuple[str, str]]:
        brand, domain = self.rng.choice(BRANDS)
        fields = [*self.auth(domain), self.dkim(domain, "k1"), self.dkim("sendgrid.net", "smtpapi")]
        fields += [("Date", self.date()), ("Subject", self.subject(self.rng.randrange(4, 12))),
                   ("Message-ID", self.msgid("sendgrid.net")), ("From", formataddr((brand, f"news@{domain}"), "utf-8")),
                   ("To", self.me[1]), ("List-Id", f"{brand} <newsletter.{domain}>"),
                   ("List-Unsubscribe", f"<mailto:unsub-{self.rng.getrandbits(32):x}@{domain}>,\r\n <https://{domain}/u?x=1>"),
                   ("Precedence", "bulk")]
        return fields

    def notification(self) -> list[tuple[str, str]]:
        name, address = self.rng.choice(NOTIFIERS)
        domain = address.split("@")[1]
        repo = f"acme/{self.rng.choice(REPOS)}"
        fields = [*self.auth(domain), self.dkim(domain, "pf2023")]
        fields += [("Date", self.date()), ("Subject", f"Re: [{repo}] Fix the {self.rng.choice(WORDS)} (#{self.rng.randrange(9999)})"),
                   ("Message-ID", f"<{repo}/pull/{self.rng.randrange(9999)}/c{self.rng.getrandbits(30)}@github.com>"),
                   ("In-Reply-To", f"<{repo}/pull/1@github.com>"), ("References", f"<{repo}/pull/1@github.com>"),
                   ("From", formataddr((name, address))), ("To", f"{repo} <{repo.replace('/', '-')}@noreply.github.com>"),
                   ("Cc", f"{formataddr(self.me)}, Mention <mention@noreply.github.com>"), ("List-Id", f"{repo} <{repo}.github.com>"),
                   ("List-Unsubscribe", f"<https://github.com/notifications/unsubscribe/{self.rng.getrandbits(64):x}>"),
                   ("Auto-Submitted", "auto-generated")]
        return fields

    def odd(self) -> list[tuple[str, str]]:
        sender = self.rng.choice(self.people)
        domain = sender[1].split("@")[1]
        fields = [("Authentication-Results", f"mx.google.com; dkim=fail header.d={domain}"),
                  ("Authentication-Results", f"mx.google.com; dkim=pass (forged further down) header.d={domain}"),
                  ("Date", self.rng.choice(OBSOLETE_DATES)), ("Message-ID", self.msgid(domain)),
                  ("Subject", self.rng.choice(["caf\udce9 cr\udce8me", "=?iso-8859-1?q?Gr=FC=DFe_aus_K=F6ln?=",
                                               "=?utf-8?b?broken", "Fwd: (no subject)"])),
                  ("From", self.rng.choice([f"{sender[1]} ({sender[0]})", f'"{sender[0]}" <{sender[1]}>', "MAILER-DAEMON"])),
                  ("To", self.rng.choice(["undisclosed-recipients:;", f"Team: {self.person()}, {self.person()};",
                                          f"{sender[0]} {sender[1]}"]))]
        return fields


def ours(blocks: Sequence[bytes]) -> None:
    for uid, block in enumerate(blocks):
        parse_header_block(uid, INTERNAL, block, trusted_authserv_ids=TRUSTED)


def stdlib_default(blocks: Sequence[bytes]) -> None:
    parser = BytesHeaderParser(policy=policy.default)
    for block in blocks:
        message = parser.parsebytes(block)
        for name in ("subject", "message-id", "in-reply-to", "references", "list-id", "list-unsubscribe",
                     "auto-submitted", "precedence"):
            str(message.get(name, ""))
        _read_structured(message)


def _read_structured(message: Any) -> None:
    """The fields both stdlib baselines read the same way: auth headers, addresses, the date."""
    for name in ("authentication-results", "received-spf", "dkim-signature"):
        [str(v) for v in message.get_all(name, [])]
    for name in ("from", "to", "cc"):
        getaddresses([str(v) for v in message.get_all(name, [])])
    try:
        parsedate_to_datetime(str(message.get("date", "")))
    except (TypeError, ValueError):
        pass


def stdlib_compat32(blocks: Sequence[bytes]) -> None:
    parser = BytesHeaderParser()
    for block in blocks:
        message = parser.parsebytes(block)
        try:
            str(make_header(decode_header(str(message.get("subject", "")))))
        except (UnicodeError, LookupError, ValueError):
            pass
        for name in ("message-id", "in-reply-to", "references", "list-id", "list-unsubscribe", "auto-submitted", "precedence"):
            str(message.get(name, ""))
        _read_structured(message)


def timed(run: Callable[[Sequence[bytes]], None], blocks: Sequence[bytes]) -> float:
    start = time.perf_counter()
    run(blocks)
    return time.perf_counter() - start


def in_batches(run: Callable[[Sequence[bytes]], None], blocks: Sequence[bytes]) -> float:
    """Time ``run`` on each batch of fresh copies, made untimed just before, as the IMAP reader hands them over."""
    wall = 0.0
    for start in range(0, len(blocks), BATCH):
        fresh = [bytes(bytearray(b)) for b in blocks[start:start + BATCH]]
        wall += timed(run, fresh)
    return wall


SIDES: dict[str, tuple[Callable[[Sequence[bytes]], None], int]] = {
    "parse_header_block": (ours, 1),
    "stdlib policy.default": (stdlib_default, BASELINE_SHARE),
    "stdlib compat32": (stdlib_compat32, BASELINE_SHARE),
}


def bench_parse() -> None:
    mail = Mail(seed=2024)
    walls = {name: 0.0 for name in SIDES}
    counts = {name: 0 for name in SIDES}
    best = 0.0
    size = 0.0
    for _ in range(ROUNDS):  # a new mail stream each round: no cache sees a block twice
        blocks = [mail.block() for _ in range(BLOCKS)]
        size = sum(map(len, blocks)) / len(blocks)
        for name, (run, share) in SIDES.items():
            sample = blocks[::share]
            wall = in_batches(run, sample)
            walls[name] += wall
            counts[name] += len(sample)
            if name == "parse_header_block":
                best = max(best, len(sample) / wall)
    cold = [mail.block() for _ in range(BLOCKS)]
    cold_rate = len(cold) / timed(ours, cold)
    rates = {name: counts[name] / walls[name] for name in SIDES}
    base = rates["stdlib policy.default"]
    rows = [(name, counts[name], rates[name], ratio(rates[name], base)) for name in SIDES]
    rows.append(("parse_header_block, one pass, cold", len(cold), cold_rate, ratio(cold_rate, base)))
    ours_rate = rates["parse_header_block"]
    table(f"header blocks (mean {size:,.0f} bytes) in batches of {BATCH}, {ROUNDS} rounds taking turns",
          ("parser", "messages", "msg/s", "x policy.default"), rows,
          [f"parse_header_block: best round {best:,.0f} msg/s",
           "cold: the same parser over 20,000 blocks made long before (out of the CPU caches)",
           f"target: parse_header_block >= {TARGET:,} msg/s: {verdict(ours_rate >= TARGET)} ({ours_rate:,.0f})"])


CASES: dict[str, Callable[[], None]] = {"parse": bench_parse}


async def run(names: Sequence[str] = ()) -> None:
    """The ``bench`` runner's entry point (register ``"parse": "bench.parse"`` in its SUITES)."""
    for name in names or CASES:
        CASES[name]()


def main() -> None:
    bench_parse()


if __name__ == "__main__":
    main()
