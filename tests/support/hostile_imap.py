"""A misbehaving IMAP4rev1 server on loopback, for harvest's limits and failure tests.

It speaks enough IMAP to get a client to the fetch: the greeting, CAPABILITY,
AUTHENTICATE XOAUTH2 (any token passes), LIST (one INBOX), EXAMINE/SELECT, UID SEARCH
(every UID) and LOGOUT. UID FETCH is then answered per ``scenario``:

- ``good``: a well-formed answer (a few header fields per message);
- ``huge_literal``: a literal declared as {2147483648}, then bytes until the client goes;
- ``endless_line``: a FETCH line that never ends (no CRLF);
- ``many_literals``: small, well-formed literals without end, under one command;
- ``drop``: half an answer, then the connection closes;
- ``bad_internaldate``: a good answer whose INTERNALDATE is garbage;
- ``stall``: no answer at all (the client's sync hangs until interrupted).

Whatever it streams stops at ``stream_cap`` bytes, so a client that does not defend
itself fails its test rather than filling the machine. ``fetched`` is set when a FETCH
arrives; ``fetch_items`` keeps what each FETCH asked for; ``streamed`` what was sent.
"""

from __future__ import annotations

import asyncio
import re
from typing import Callable

SCENARIOS = ("good", "huge_literal", "endless_line", "many_literals", "drop", "bad_internaldate", "stall")
CHUNK = 64 * 1024
_COMMAND = re.compile(rb"^(\S+) (?:UID )?(\S+)(?: (.*))?$")


class HostileImap:
    def __init__(self, scenario: str = "good", messages: int = 3, stream_cap: int = 64 << 20) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        self.scenario = scenario
        self.messages = messages
        self.stream_cap = stream_cap
        self.fetched = asyncio.Event()
        self.fetch_items: list[str] = []
        self.streamed = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> "HostileImap":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.wait_for(self._server.wait_closed(), 10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] hostile ready\r\n")
            while line := await reader.readline():
                match = _COMMAND.match(line.rstrip(b"\r\n"))
                if match is None or not await self._answer(writer, *match.groups()):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: what these tests expect
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, tag: bytes, name: bytes, args: bytes | None) -> bool:
        """Answer one command; False closes the connection."""
        verb = name.upper()
        if verb == b"FETCH":
            self.fetch_items.append((args or b"").decode())
            self.fetched.set()
            return await self._fetch(writer, tag)
        replies = {
            b"CAPABILITY": b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2\r\n",
            b"AUTHENTICATE": b"",
            b"LIST": b'* LIST () "/" INBOX\r\n',
            b"EXAMINE": f"* {self.messages} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n".encode(),
            b"SELECT": f"* {self.messages} EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n".encode(),
            b"SEARCH": b"* SEARCH " + " ".join(str(u) for u in self._uids()).encode() + b"\r\n",
            b"LOGOUT": b"* BYE bye\r\n",
        }
        writer.write(replies.get(verb, b"") + tag + (b" OK done\r\n" if verb in replies else b" BAD what\r\n"))
        await writer.drain()
        return verb != b"LOGOUT"

    def _uids(self) -> range:
        return range(1, self.messages + 1)

    async def _fetch(self, writer: asyncio.StreamWriter, tag: bytes) -> bool:
        if self.scenario in ("good", "bad_internaldate"):
            date = "not a date" if self.scenario == "bad_internaldate" else "17-Jul-2024 02:44:25 +0000"
            writer.write(b"".join(_message(uid, date) for uid in self._uids()) + tag + b" OK done\r\n")
        elif self.scenario == "huge_literal":
            writer.write(b'* 1 FETCH (UID 1 INTERNALDATE "17-Jul-2024 02:44:25 +0000" '
                         b"BODY[HEADER.FIELDS (SUBJECT)] {2147483648}\r\n")
            await self._stream(writer, lambda: b"x" * CHUNK)
        elif self.scenario == "endless_line":
            writer.write(b"* 1 FETCH (UID 1 INTERNALDATE ")
            await self._stream(writer, lambda: b"y" * CHUNK)
        elif self.scenario == "many_literals":
            await self._stream(writer, lambda: _message(1, "17-Jul-2024 02:44:25 +0000", pad=1000) * 60)
        elif self.scenario == "drop":
            writer.write(_message(1, "17-Jul-2024 02:44:25 +0000")[:40])
            await writer.drain()
            return False
        return True  # stall: answer nothing, but keep reading (a LOGOUT is still answered)

    async def _stream(self, writer: asyncio.StreamWriter, chunk: Callable[[], bytes]) -> None:
        """Send until the client goes, or stream_cap bytes: never more."""
        while self.streamed < self.stream_cap and not writer.is_closing():
            data = chunk()
            writer.write(data)
            self.streamed += len(data)
            await writer.drain()


def _message(uid: int, internaldate: str, pad: int = 0) -> bytes:
    header = (f"Message-ID: <m{uid}@hostile.test>\r\nFrom: Ann <ann@hostile.test>\r\nTo: me@hostile.test\r\n"
              f"Subject: {'s' * pad or f'message {uid}'}\r\n\r\n").encode()
    return (f'* {uid} FETCH (UID {uid} INTERNALDATE "{internaldate}" FLAGS (\\Seen) '
            f"BODY[HEADER.FIELDS (MESSAGE-ID FROM TO SUBJECT)] {{{len(header)}}}\r\n").encode() + header + b")\r\n"
