"""IMAP for harvest: aioimaplib, with its three known defects fixed, behind ``MailSession``.

aioimaplib 2.0.3 (upstream iroco-co/aioimaplib #118, PRs #119/#130 open):

1. ``_handle_responses`` recursed once per response line: a FETCH answer of ~1,000+
   messages raised RecursionError inside ``data_received`` and the command hung.
   ``_Protocol._handle_responses`` is the same state machine as a loop.
2. ``FetchCommand.wait_data`` rescanned every line received so far for each new line:
   quadratic in the batch. ``_LinearFetch`` keeps a running parenthesis depth (protocol
   lines only; a literal's bytes are data, not syntax).
3. A refused XOAUTH2 login answers ``+ <base64 error>`` and waits for an empty line
   before ``NO``; aioimaplib never sent it and waited for its timeout. ``_continuation``
   answers the challenge with an empty line, so a refusal returns at once.

And two more found here: after a dropped connection, the running command and any later
one waited for their timeout (60 s); now they fail at once. And aioimaplib buffered
whatever a server sent: a literal declared as {2147483648}, or a line that never ends,
took gigabytes. ``_Protocol`` caps a literal, a line and one command's whole answer
(``ImapLimits``, from ``[harvest]``) and drops the connection the moment one is passed,
before buffering more than the cap (plus the one chunk being read).

We keep aioimaplib (its command and state handling) rather than write a client, and
measure the result against the stdlib's bare fetch in ``bench/harvest.py``.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import ipaddress
from array import array
import re
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

import aioimaplib
from aioimaplib.aioimaplib import (CRLF, SELECTED, Command, FetchCommand, IMAP4ClientProtocol, IncompleteRead,
                                   literal_data_re)

from inboxlens.config.schema import HarvestConfig
from inboxlens.config.vault import ProviderConfig
from inboxlens.harvest.sync import Fetched, Mailbox
from inboxlens.service_errors import AuthenticationRefused, MailServerError

TIMEOUT = 60.0
LOGOUT_TIMEOUT = 2.0  # a goodbye: short, so a stopping harvest is not held up by a silent server
# aioimaplib hands untagged answers over without "* LIST " / "* SEARCH ".
_LIST_LINE = re.compile(rb'(?:LIST )?\((?P<flags>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$')
_NUMBER = re.compile(rb"\d+")
_SEARCH_LINE = re.compile(rb"(?:SEARCH)?[ 0-9]*")  # no repeated group: 100k UIDs cost no backtracking state
_FETCH_START = re.compile(rb"\d+ FETCH \(")
_UNTAGGED_FETCH = re.compile(rb"\* \d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_INTERNALDATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_GM_MSGID = re.compile(rb"\bX-GM-MSGID (\d+)")
_GM_THRID = re.compile(rb"\bX-GM-THRID (\d+)")
_GM_LABELS = re.compile(rb"\bX-GM-LABELS \(([^)]*)\)")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
# What a received line costs beyond its bytes (a bytes object and its list slot): a flood of
# empty lines would otherwise take ten times what the response cap counts.
LINE_OVERHEAD = 64


@dataclass(frozen=True)
class ImapLimits:
    """How much one server may make us hold; defaults are ``HarvestConfig``'s."""

    literal_bytes: int = HarvestConfig.max_literal_bytes
    line_bytes: int = HarvestConfig.max_line_bytes
    response_bytes: int = HarvestConfig.max_response_bytes

    @classmethod
    def of(cls, harvest: HarvestConfig) -> "ImapLimits":
        return cls(harvest.max_literal_bytes, harvest.max_line_bytes, harvest.max_response_bytes)


class _Dropped(aioimaplib.Abort):
    """The connection is gone; the message (ours, never a server's or a command's) says why."""


class _OverLimit(Exception):
    """The server sent more than a limit allows; the message says what, in words."""


class _LinearFetch(FetchCommand):
    """FetchCommand whose ``wait_data`` costs O(1): a running parenthesis depth.

    Its timer is armed once, when the command is sent, not rearmed for every line and
    literal received (aioimaplib's ``_reset_timer``: a ``call_later`` and a cancel per item,
    a third of the receive path's time). ``ImapSession._call`` bounds the whole exchange
    with the same timeout anyway.
    """

    _expected_size: int  # aioimaplib's: the size of the literal being read, 0 between literals

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._depth = 0
        self._in_literal = False

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        self._resp_result = result  # Command.append_to_resp, without its timer
        self._resp_lines.append(line)
        if result != "Pending" or self._in_literal or not isinstance(line, (bytes, bytearray)):
            return
        if _FETCH_START.match(line):
            self._depth = 0
        self._depth += line.count(b"(") - line.count(b")")

    def append_literal_data(self, data: bytes) -> bytes:
        if not self._resp_literal_data and len(data) == self._expected_size:
            self._resp_lines.append(data)  # the whole literal at once (nearly always): kept as is, not copied
            self._expected_size = 0
            return b""
        self._in_literal = True
        try:
            rest: bytes = super().append_literal_data(data)
            return rest
        finally:
            self._in_literal = False

    def wait_data(self) -> bool:
        return self._depth > 0

    def _reset_timer(self) -> None:
        pass


class _Protocol(IMAP4ClientProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, conn_lost_cb: Any, limits: ImapLimits) -> None:
        super().__init__(loop, conn_lost_cb)
        self.limits = limits
        self.charged = 0  # bytes of the current command's answer held so far (LINE_OVERHEAD included)
        self.peak = 0  # the most this connection ever held at once: what the limits bound
        self.refusal = ""  # why we dropped the connection, in words
        self.fetching: _LinearFetch | None = None  # the FETCH under way: its untagged lines go straight to it

    def data_received(self, d: bytes) -> None:
        # As aioimaplib's, without formatting every chunk into a debug message nobody reads.
        if self.lost:
            return  # dropped already: whatever is still in flight is not read
        data = getattr(self, "incomplete_line") + d
        self.peak = max(self.peak, self.charged + len(data))  # all we hold now, at most
        try:
            self._handle_responses(data, self._handle_line, getattr(self, "current_command"))
            self.incomplete_line = b""
            self.current_command = None
        except IncompleteRead as incomplete:
            self.current_command = incomplete.cmd
            self.incomplete_line = incomplete.data
        except _OverLimit as e:
            self._drop(str(e))

    def _drop(self, why: str) -> None:
        """Close at once and let go of everything buffered; waiting commands fail with ``why``."""
        self.refusal = why
        self.lost = True
        self.incomplete_line = b""
        self.current_command = None
        if self.transport is not None:
            self.transport.abort()

    def _charge(self, size: int) -> None:
        self.charged += size
        if self.charged > self.limits.response_bytes:
            raise _OverLimit(f"an answer over {self.limits.response_bytes} bytes "
                             "(harvest.max_response_bytes)")

    def _check_line(self, size: int) -> None:
        if size > self.limits.line_bytes:
            raise _OverLimit(f"a line over {self.limits.line_bytes} bytes (harvest.max_line_bytes)")

    def _check_literal(self, size: int) -> None:
        if size > self.limits.literal_bytes:
            raise _OverLimit(f"a {size}-byte literal, over {self.limits.literal_bytes} "
                             "(harvest.max_literal_bytes)")

    def _handle_responses(self, data: bytes, line_handler: Any, current_cmd: Command | None = None) -> None:
        """aioimaplib's state machine as a loop that walks ``data`` by offset (no copy per line)."""
        pos, size = 0, len(data)
        while True:
            if pos >= size:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                wanted = current_cmd._expected_size - len(current_cmd._resp_literal_data)
                chunk = data[pos:pos + wanted]
                self._charge(len(chunk))
                current_cmd.append_literal_data(chunk)
                pos += len(chunk)
                if current_cmd.wait_literal_data():
                    raise IncompleteRead(current_cmd)
                continue
            end = data.find(CRLF, pos)
            if end < 0:
                self._check_line(size - pos)  # a line that never ends is refused as it grows
                raise IncompleteRead(current_cmd, data[pos:])
            self._check_line(end - pos)
            self._charge(end - pos + LINE_OVERHEAD)
            line, pos = data[pos:end], end + 2
            begin_literal = literal_data_re.match(line) if line.endswith(b"}") else None
            if begin_literal:  # refused before aioimaplib sees it and sets aside room for it
                self._check_literal(int(begin_literal.group("size")))
            if current_cmd is None and self.fetching is not None and _UNTAGGED_FETCH.match(line):
                cmd = self.fetching  # as aioimaplib's _untagged_response would, minus its lookups
                cmd.append_to_resp(line[2:])
            else:
                cmd = line_handler(line, current_cmd)
            if begin_literal:
                if cmd is None:
                    cmd = Command("NIL", "unused")
                cmd.begin_literal_data(int(begin_literal.group("size")))
                current_cmd = cmd
            elif cmd is not None and cmd.wait_data():
                current_cmd = cmd
            else:
                current_cmd = None

    lost = False

    async def execute(self, command: Command, scrub: str | None = None) -> aioimaplib.Response:
        if self.lost:  # aioimaplib would write into the closed transport and wait for the timeout
            raise _Dropped(self.refusal or "the server closed the connection")
        self.charged = 0  # one command at a time: what arrives now is this command's answer
        return await super().execute(command, scrub)

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake every waiting command now; aioimaplib left them to their timeouts."""
        self.lost = True
        super().connection_lost(exc)
        error = _Dropped(self.refusal or "the server closed the connection")
        pending: list[Any] = [getattr(self, "pending_sync_command"), *self.pending_async_commands.values()]
        for command in pending:
            if command is not None:
                command._exception = error  # what Command.wait() raises once woken
                command.close(b"connection lost", "BYE")
        self.pending_sync_command = None
        self.pending_async_commands.clear()

    def _continuation(self, line: bytes) -> None:
        if self.pending_sync_command is not None and self.pending_sync_command.name == "AUTHENTICATE":
            # RFC 4954/7628: the server explains the refusal in a challenge and waits for an
            # empty response before it answers NO.
            self.transport.write(CRLF)
            return
        super()._continuation(line)

    async def fetch(self, message_set: str, message_parts: str, by_uid: bool = False,
                    timeout: float | None = None) -> aioimaplib.Response:
        command = _LinearFetch(self.new_tag(), message_set, message_parts, prefix="UID" if by_uid else "",
                               loop=self.loop, timeout=timeout)
        self.fetching = command
        try:
            return await self.execute(command)
        finally:
            if self.fetching is command:
                self.fetching = None


class _Client(aioimaplib.IMAP4):
    def __init__(self, limits: ImapLimits, **kwargs: Any) -> None:
        self.limits = limits  # create_client, called by IMAP4's __init__, reads it
        super().__init__(**kwargs)

    def create_client(self, host: str, port: int, loop: Any, conn_lost_cb: Any = None,
                      ssl_context: ssl.SSLContext | None = None) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb, self.limits)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@functools.cache
def default_tls() -> ssl.SSLContext:
    """One verifying TLS context for every session of the process: making one parses the whole
    CA bundle, about 19 ms of CPU, which was 70 % of a steady-state account sync (bench
    capacity, issue 16.6). A CA bundle changed on disk is read at harvest's next start."""
    return ssl.create_default_context()


class ImapSession:
    """The MailSession harvest uses: one authenticated connection. Errors name ``host:port``."""

    def __init__(self, client: _Client, host: str, port: int = 0) -> None:
        self.client = client
        self.host = host
        self.where = f"{host}:{port}"
        self.capabilities: frozenset[str] = frozenset()

    @classmethod
    async def open(cls, provider: ProviderConfig, ssl_context: ssl.SSLContext | None = None,
                   timeout: float = TIMEOUT, limits: ImapLimits = ImapLimits()) -> "ImapSession":
        """Connect with TLS (``imap_tls = "tls"``) or, on loopback only, in plain text (``"plain"``)."""
        host, port, mode = provider.imap_host, provider.imap_port, provider.imap_tls
        if mode == "plain" and not is_loopback(host):
            raise MailServerError(f"refusing plain-text IMAP to {host}:{port}: only loopback may go without TLS")
        if mode not in ("tls", "plain"):
            raise MailServerError(f"imap_tls = {mode!r} is not supported (use 'tls', or 'plain' on loopback)")
        context = (ssl_context or default_tls()) if mode == "tls" else None
        client = _Client(limits, host=host, port=port, timeout=timeout, ssl_context=context)
        session = cls(client, host, port)
        await session._call(client.wait_hello_from_server(), "connecting")
        session.capabilities = frozenset(c.upper() for c in client.protocol.capabilities)
        return session

    async def _call(self, coro: Any, doing: str) -> Any:
        """Await one exchange, bounded; any failure becomes MailServerError naming server and cause."""
        try:
            return await asyncio.wait_for(coro, self.client.timeout)
        except (OSError, asyncio.TimeoutError, aioimaplib.AioImapException) as e:
            failure = f"{self.where}: {describe(e, self.client.timeout)} ({doing})"
        if self.client.protocol.refusal:  # the answer we refused is garbage now: hand its memory back
            release_memory()
        raise MailServerError(failure)

    async def _ok(self, coro: Any, doing: str) -> aioimaplib.Response:
        response: aioimaplib.Response = await self._call(coro, doing)
        if response.result != "OK":
            raise MailServerError(f"{self.where} answered {response.result} ({doing})")
        return response

    async def authenticate(self, user: str, access_token: str) -> None:
        if "AUTH=XOAUTH2" not in self.capabilities:
            raise MailServerError(f"{self.where} does not offer AUTH=XOAUTH2")
        response = await self._call(self.client.protocol.xoauth2(user, access_token), "logging in")
        if response.result != "OK":
            raise AuthenticationRefused(f"{self.where} refused the XOAUTH2 login")
        await self._call(self.client.protocol.capability(), "after logging in")  # capabilities can grow
        self.capabilities = frozenset(c.upper() for c in self.client.protocol.capabilities)

    async def identify(self) -> None:
        """Gmail asks clients to say who they are (RFC 2971) before anything else."""
        if "ID" in self.capabilities:
            await self._ok(self.client.protocol.id(name="InboxLens", version="0.1"), "ID")

    async def mailboxes(self) -> list[Mailbox]:
        response = await self._ok(self.client.protocol.simple_command("LIST", '""', '"*"'), "LIST")
        found = []
        for line in response.lines:
            match = _LIST_LINE.match(bytes(line)) if isinstance(line, (bytes, bytearray)) else None
            if match:
                flags = frozenset(f.decode("ascii", "replace") for f in match.group("flags").split())
                found.append(Mailbox(_mailbox_name(match.group("name")), flags))
        return found

    async def examine(self, mailbox: str) -> int:
        response = await self._ok(self.client.protocol.simple_command("EXAMINE", _quote(mailbox)), "EXAMINE")
        self.client.protocol.state = SELECTED  # EXAMINE selects read-only; aioimaplib only tracks SELECT
        for line in response.lines:
            match = _UIDVALIDITY.search(bytes(line)) if isinstance(line, (bytes, bytearray)) else None
            if match:
                return int(match.group(1))
        raise MailServerError(f"{self.where} gave no UIDVALIDITY for {mailbox!r}")

    async def search_since(self, since: datetime) -> array[int]:
        day = f"{since.day:02d}-{_MONTHS[since.month - 1]}-{since.year}"
        return _search_result(await self._ok(
            self.client.protocol.search("SINCE", day, by_uid=True, charset=None), "UID SEARCH"))

    async def search_above(self, uid: int) -> array[int]:
        return _search_result(await self._ok(
            self.client.protocol.search("UID", f"{uid + 1}:*", by_uid=True, charset=None), "UID SEARCH"))

    async def fetch_headers(self, uids: Sequence[int], fields: Sequence[str], gmail: bool) -> list[Fetched]:
        items = f"(UID INTERNALDATE FLAGS BODY.PEEK[HEADER.FIELDS ({' '.join(fields)})]"
        items += " X-GM-MSGID X-GM-THRID X-GM-LABELS)" if gmail else ")"
        response = await self._ok(self.client.protocol.fetch(_uid_set(uids), items, by_uid=True,
                                                             timeout=self.client.timeout), "UID FETCH")
        return parse_fetch(response.lines)

    async def logout(self) -> None:
        try:
            await asyncio.wait_for(self.client.protocol.logout(), LOGOUT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, aioimaplib.AioImapException):
            pass
        transport = self.client.protocol.transport
        if transport is not None:
            transport.close()


def release_memory() -> None:
    """Return freed heap to the system (glibc keeps it otherwise: RSS stayed at the high-water
    mark after a refused answer of many small literals). Rare, so its cost does not matter.
    The collection first: the refused answer is held in a cycle (the failed task's exception,
    its traceback, the frame that holds the task)."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def describe(error: BaseException, timeout: float) -> str:
    """An IMAP failure in words (for last_error and the log; never a token: none reaches here)."""
    if isinstance(error, (asyncio.TimeoutError, aioimaplib.CommandTimeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(error, _Dropped):
        return str(error)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed ({error.reason or type(error).__name__})"
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    # Not str(error): aioimaplib puts the command in its messages, and AUTHENTICATE's holds the token.
    return f"the server broke the IMAP protocol ({type(error).__name__})"


def parse_fetch(lines: Sequence[Any]) -> list[Fetched]:
    """FETCH answers: a line with the attributes and ``{n}``, the literal, then the rest of the line."""
    fetched: list[Fetched] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not isinstance(line, bytes) or not _FETCH_START.match(line):
            continue
        text, header = line, b""
        if line.endswith(b"}") and literal_data_re.match(line) and index < len(lines) \
                and isinstance(lines[index], (bytes, bytearray)):  # the literal, whole (bytes) or pieced (bytearray)
            header = bytes(lines[index])
            index += 1
            if index < len(lines) and isinstance(lines[index], bytes) and not _FETCH_START.match(lines[index]):
                text += b" " + lines[index]  # attributes after the literal, and the closing ')'
                index += 1
        uid = _UID.search(text)
        if uid is None:
            continue  # an unsolicited FETCH (flags changed): not one of ours
        fetched.append(Fetched(int(uid.group(1)), _group(_INTERNALDATE, text), frozenset(_group(_FLAGS, text).split()),
                               header, *(_gmail(text) if b"X-GM-" in text else ())))
    return fetched


def _gmail(text: bytes) -> tuple[int | None, int | None, tuple[str, ...]]:
    return _int(_GM_MSGID, text), _int(_GM_THRID, text), tuple(_group(_GM_LABELS, text).split())


def _group(pattern: re.Pattern[bytes], text: bytes) -> str:
    match = pattern.search(text)
    return match.group(1).decode("utf-8", "replace") if match else ""


def _int(pattern: re.Pattern[bytes], text: bytes) -> int | None:
    match = pattern.search(text)
    return int(match.group(1)) if match else None


def _search_result(response: aioimaplib.Response) -> array[int]:
    """UIDs as a compact array (4 bytes each, no list of 100k objects: memory stays flat)."""
    uids = array("I")
    for line in response.lines[:-1]:  # the last line is the tagged completion's text
        if isinstance(line, bytes) and _SEARCH_LINE.fullmatch(line):
            uids.extend(int(m.group()) for m in _NUMBER.finditer(line))
    return uids


def _uid_set(uids: Sequence[int]) -> str:
    """Compact ranges: 1:5,8,10:12."""
    ranges: list[list[int]] = []
    for uid in sorted(set(uids)):
        if ranges and uid == ranges[-1][1] + 1:
            ranges[-1][1] = uid
        else:
            ranges.append([uid, uid])
    return ",".join(f"{a}:{b}" if a != b else str(a) for a, b in ranges)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox_name(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = re.sub(r"\\(.)", r"\1", text[1:-1])
    return text
