"""A real Dovecot IMAP server for tests: XOAUTH2/OAUTHBEARER against the local OAuthProvider.

``Dovecot(provider.introspect_url)`` writes a self-contained configuration into a temporary
directory (its own base_dir, state_dir, log, instance name; loopback only; nothing from
/etc/dovecot), runs ``dovecot -F -c <conf>`` in a session of its own, and waits until both
the plaintext IMAP port and the IMAPS port greet. ``stop()`` signals the master and waits
until every process of that session is gone.

Mail lives in Maildir++ under ``<root>/mail/<user>/Maildir``, owned by the system user
``inboxlens-t-vmail`` (created if missing); Dovecot accepts any user name whose token the
provider's /introspect calls active (``allow_all_users=yes``). Write messages with
``tests.support.maildir`` (straight into ``cur/``; ``deliver()`` does it per folder).

TLS: a throw-away CA and a server certificate for ``127.0.0.1``/``localhost`` are generated
at start with ``cryptography``; ``client_ssl_context()`` trusts that CA only (hostname checks
on). Plaintext IMAP is allowed too (``disable_plaintext_auth = no``), as it is loopback.

Needs root (it runs Dovecot's privilege-separated processes under their own users). Use
``require_dovecot()`` first: it skips when Dovecot is absent or we are not root, unless the
environment variable CI is set, where that is a failure.

Sharing: starting takes ~0.1 s, stopping ~1.1 s (the master sleeps a second for its log
process). One Dovecot can serve a whole module or session: users are free (any address is a
separate, empty mailbox) and ``set_introspect_url()`` points it at each test's provider in
~20 ms without dropping sessions. Start/stop are blocking and loop-free, so a sync
module-scoped fixture works with function-scoped event loops.

Beware: imaplib (or any blocking client) must not run on the event loop that serves the
OAuthProvider. Dovecot's introspection request then waits out its 5 s timeout and the login
fails with ``NO [UNAVAILABLE] Temporary authentication failure``. Use asyncio.to_thread.

What Dovecot 2.3.19.1 says, pinned by test_dovecot_functional.py:
* greeting ``* OK [CAPABILITY ... AUTH=XOAUTH2 AUTH=OAUTHBEARER] Dovecot (Debian) ready.``
  (LOGINDISABLED too: no passdb takes passwords); SASL-IR is supported.
* ``ID NIL`` -> ``* ID ("name" "Dovecot")``. No X-GM-EXT-1; CONDSTORE, QRESYNC, UIDPLUS,
  SPECIAL-USE, LIST-STATUS, ESEARCH, MOVE, IDLE, LITERAL+ are there.
* Refused XOAUTH2: ``+ <base64 {"status":"401","schemes":"bearer","scope":"mail"}>`` first;
  only after the client's empty line, ``NO [AUTHENTICATIONFAILED] Authentication failed.``
  about 0.5 s later (the auth process's failure tick, even with auth_failure_delay = 0).
* Kicked sessions: see ``kick``. A UIDVALIDITY change under a selected mailbox:
  ``* BYE IMAP session state is inconsistent, please relogin.``
"""

from __future__ import annotations

from tests.support.osusers import ensure_user

import asyncio
import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

VMAIL_USER = "inboxlens-t-vmail"
# name -> special-use flag(s) ("" for none). All are auto-subscribed, so LIST shows them at
# once. Merge in "All Mail": "\\All" (or use GMAIL_LIKE_MAILBOXES) for Gmail-like tests.
DEFAULT_MAILBOXES: Mapping[str, str] = {
    "Sent": "\\Sent", "Archive": "\\Archive", "Drafts": "\\Drafts", "Junk": "\\Junk", "Trash": "\\Trash",
}
GMAIL_LIKE_MAILBOXES: Mapping[str, str] = {
    "[Gmail]/All Mail": "\\All", "[Gmail]/Sent Mail": "\\Sent", "[Gmail]/Drafts": "\\Drafts",
    "[Gmail]/Spam": "\\Junk", "[Gmail]/Trash": "\\Trash", "[Gmail]/Starred": "\\Flagged",
}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 15.0
_SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + _SBIN_PATH)


def dovecot_missing_reason() -> str | None:
    """Why a Dovecot cannot run here, or None when it can."""
    if _which("dovecot") is None or _which("doveadm") is None:
        return "Dovecot is not installed (apt-get install dovecot-core dovecot-imapd)"
    if os.geteuid() != 0:
        return "Dovecot tests run as root (Dovecot switches to its own system users)"
    return None


def require_dovecot() -> None:
    """Skip the calling test when Dovecot cannot run here; under CI (env CI set) fail instead."""
    import pytest

    reason = dovecot_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Dovecot tests: {reason}", pytrace=False)
    pytest.skip(reason)


def ensure_vmail_user(name: str = VMAIL_USER) -> tuple[int, int]:
    """(uid, gid) of the system user that owns the test mail, created if missing."""
    entry = ensure_user(name)
    return entry.pw_uid, entry.pw_gid


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def maildir_folder(maildir: Path, mailbox: str) -> Path:
    """The Maildir++ directory of ``mailbox`` ("INBOX", "Sent", "[Gmail]/All Mail", ...)."""
    if mailbox.upper() == "INBOX":
        return maildir
    if not mailbox.isascii() or not mailbox.isprintable() or any(c in mailbox for c in '.&"\\*%') \
            or mailbox.startswith("/") or mailbox.endswith("/") or "//" in mailbox:
        # Dovecot stores other names in modified UTF-7, "." is Maildir++'s separator, and the
        # name is written into dovecot.conf in double quotes.
        raise ValueError(f"unsupported test mailbox name {mailbox!r}")
    return maildir / ("." + mailbox.replace("/", "."))


def make_test_tls(directory: Path, hostname: str = "localhost") -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost: (ca, cert, key) PEMs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "InboxLens test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


class DovecotError(RuntimeError):
    pass


class Dovecot:
    """One Dovecot instance on loopback.

    ``with``/``async with`` it, or call the blocking ``start()``/``stop()``. ``root``: a
    directory to use (kept at stop); by default a fresh temporary one, removed at stop.
    ``mailboxes``: name -> special-use flag for auto-subscribed mailboxes besides INBOX."""

    host = "127.0.0.1"

    def __init__(self, introspect_url: str, *, mailboxes: Mapping[str, str] = DEFAULT_MAILBOXES,
                 max_user_connections: int = 10, auth_debug: bool = False, root: Path | None = None) -> None:
        self.introspect_url = introspect_url
        self.mailboxes = dict(mailboxes)
        for name in self.mailboxes:
            maildir_folder(Path("/"), name)  # validates the name
        self.max_user_connections = max_user_connections
        self.auth_debug = auth_debug
        self._own_root = root is None
        self._root = Path(root) if root is not None else None
        self.port = 0
        self.imaps_port = 0
        self.owner: tuple[int, int] = (-1, -1)  # (uid, gid) that must own every mail file
        self._process: subprocess.Popen[bytes] | None = None
        self._ca_path: Path | None = None

    # --- paths

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="inboxlens-dovecot-"))
        return self._root

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def base_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def mail_root(self) -> Path:
        return self.root / "mail"

    @property
    def ca_path(self) -> Path:
        assert self._ca_path is not None, "start() first"
        return self._ca_path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def home(self, user: str) -> Path:
        return self.mail_root / user.lower()  # Dovecot lower-cases user names (auth_username_format %Lu)

    def maildir(self, user: str) -> Path:
        """``user``'s Maildir (INBOX), created with cur/new/tmp owned by the mail user if missing."""
        return self._make_folder(self.home(user), self.home(user) / "Maildir", subfolder=False)

    def mailbox_path(self, user: str, mailbox: str) -> Path:
        """The Maildir++ directory of one of ``user``'s mailboxes, created if missing."""
        maildir = self.maildir(user)
        folder = maildir_folder(maildir, mailbox)
        return folder if folder == maildir else self._make_folder(maildir, folder, subfolder=True)

    def _make_folder(self, parent: Path, folder: Path, subfolder: bool) -> Path:
        if (folder / "cur").is_dir():
            return folder
        uid, gid = self.owner
        for directory in (parent, folder, folder / "cur", folder / "new", folder / "tmp"):
            if not directory.is_dir():
                directory.mkdir(mode=0o700, exist_ok=True)
                os.chown(directory, uid, gid)
        if subfolder:
            marker = folder / "maildirfolder"
            marker.touch()
            os.chown(marker, uid, gid)
        return folder

    def deliver(self, user: str, messages: Iterable[Any]) -> dict[str, list[Path]]:
        """Write ``maildir.Message``s into ``user``'s mailboxes, each into its ``folder``."""
        from tests.support.maildir import write_mailbox

        by_folder: dict[str, list[Any]] = {}
        for message in messages:
            by_folder.setdefault(message.folder, []).append(message)
        return {folder: write_mailbox(self.mailbox_path(user, folder), self.owner, batch)
                for folder, batch in by_folder.items()}

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.log_path, self.root / "dovecot.stderr") if p.exists()]
        return "".join(parts)

    def client_ssl_context(self) -> ssl.SSLContext:
        """Trusts this instance's test CA only; hostname checks stay on (use 127.0.0.1 or localhost)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    # --- configuration

    def _config(self) -> str:
        uid, gid = self.owner
        mailboxes = "\n".join(
            f'  mailbox "{name}" {{\n    auto = subscribe\n' + (f"    special_use = {flags}\n" if flags else "") + "  }"
            for name, flags in self.mailboxes.items())
        return f"""# Written by tests/support/dovecot.py; self-contained (nothing from /etc/dovecot).
instance_name = inboxlens-test-{self.root.name}
base_dir = {self.base_dir}
state_dir = {self.root / "state"}
log_path = {self.log_path}
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
ssl = yes
ssl_cert = <{self.root / "tls" / "server.pem"}
ssl_key = <{self.root / "tls" / "server.key"}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = xoauth2 oauthbearer
auth_failure_delay = 0
auth_verbose = yes
auth_debug = {"yes" if self.auth_debug else "no"}
auth_cache_size = 0
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:~/Maildir
mail_max_userip_connections = {self.max_user_connections}
mail_fsync = never

passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self.root / "oauth2.conf.ext"}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.mail_root}/%u allow_all_users=yes
}}

namespace inbox {{
  inbox = yes
  separator = /
  prefix =
{mailboxes}
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service doveadm {{
  inet_listener {{
    port = 0
  }}
}}
# After a few refused logins, anvil's auth penalty delays even good ones from loopback by
# seconds (login_trusted_networks does not help): tests refuse tokens on purpose.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _oauth2_config(self) -> str:
        return f"""introspection_mode = post
introspection_url = {self.introspect_url}
username_attribute = email
active_attribute = active
active_value = true
force_introspection = yes
timeout_msecs = 5000
"""

    # --- lifecycle (blocking; the async context manager runs them in a worker thread)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Dovecot:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        """Configure and start; returns once both ports greet (at most START_TIMEOUT seconds)."""
        reason = dovecot_missing_reason()
        if reason is not None:
            raise DovecotError(reason)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.owner = ensure_vmail_user()
        os.chmod(self.root, 0o711)  # Dovecot's users traverse it to base_dir and the mail
        if not self.mail_root.is_dir():
            self.mail_root.mkdir(mode=0o700)
        os.chown(self.mail_root, *self.owner)
        if self._ca_path is None:
            self._ca_path, _, _ = make_test_tls(self.root / "tls")
        (self.root / "oauth2.conf.ext").write_text(self._oauth2_config())
        for _ in range(5):
            self.port, self.imaps_port = _free_port(), _free_port()
            if self.port == self.imaps_port:
                continue
            self.config_path.write_text(self._config())
            try:
                self._launch()
                return
            except _PortTaken:
                self._halt()  # another process took a port between our probe and Dovecot's bind
        raise DovecotError(f"no free ports after 5 attempts:\n{self.log()}")

    def stop(self) -> None:
        """Stop every Dovecot process of this instance (verified), then remove its directory.

        Takes about 1.1 s: Dovecot's master sleeps a second for its log process on shutdown."""
        try:
            self._halt()
        finally:
            if self._own_root and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None
                self._ca_path = None

    def restart(self) -> None:
        """Stop and start again on the same ports and mail, with the configuration rewritten
        (e.g. after changing ``mailboxes``); clients are disconnected."""
        self._halt()
        self.config_path.write_text(self._config())
        self._launch()

    def set_introspect_url(self, introspect_url: str) -> None:
        """Point the oauth2 passdb at another provider without a restart (``doveadm reload``):
        lets one Dovecot serve many tests that each start their own OAuthProvider. Returns
        once the old auth process is gone, so no later login reaches the old provider."""
        self.introspect_url = introspect_url
        (self.root / "oauth2.conf.ext").write_text(self._oauth2_config())
        if self.pid is None:
            return
        old_auth = [pid for pid in _live_members(self.pid) if _cmdline(pid).endswith(b"/auth")]
        self.run_doveadm("reload")
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(pid) for pid in old_auth):
            if time.monotonic() > deadline:
                raise DovecotError(f"the old auth process {old_auth} outlived a reload by {STOP_TIMEOUT}s")
            time.sleep(0.01)

    def _launch(self) -> None:
        # A stale auth-penalty socket from an earlier run would be reused; mode = 0 only stops
        # Dovecot from creating it.
        (self.base_dir / "anvil-auth-penalty").unlink(missing_ok=True)
        log_offset = len(self.log())
        with open(self.root / "dovecot.stderr", "ab") as stderr:
            # A session of its own: every Dovecot process shares the master's process group.
            self._process = subprocess.Popen(
                [_which("dovecot") or "dovecot", "-F", "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                stdout=stderr, stderr=stderr, start_new_session=True, cwd="/")
        deadline = time.monotonic() + START_TIMEOUT
        try:
            for port, tls in ((self.port, None), (self.imaps_port, self.client_ssl_context())):
                self._wait_for_greeting(port, tls, deadline, log_offset)
        except BaseException:
            self._halt()
            raise

    def _wait_for_greeting(self, port: int, tls: ssl.SSLContext | None, deadline: float, log_offset: int) -> None:
        assert self._process is not None
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if "Address already in use" in self.log()[log_offset:]:
                raise _PortTaken()
            if self._process.poll() is not None:
                raise DovecotError(f"dovecot exited with {self._process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, port), timeout=max(0.1, deadline - time.monotonic())) as raw:
                    if tls is None:
                        greeting = raw.makefile("rb").readline()
                    else:
                        with tls.wrap_socket(raw, server_hostname=self.host) as secure:
                            greeting = secure.makefile("rb").readline()
                if greeting.startswith(b"* OK"):
                    return
                last_error = DovecotError(f"unexpected greeting {greeting!r}")
            except OSError as e:  # refused while starting; ssl.SSLError and timeouts are OSErrors too
                last_error = e
            time.sleep(0.02)  # a poll interval, bounded by the deadline
        raise DovecotError(f"Dovecot did not greet on port {port} within {START_TIMEOUT}s ({last_error!r}):\n{self.log()}")

    def _halt(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        group = process.pid  # start_new_session: the master leads the group all its children share
        if process.poll() is None:
            # imap processes outlive a stopping master by 10 s when their client was recently
            # active: end them first, as doveadm kick does (SIGTERM: "* BYE Server shutting down.").
            for pid in _live_members(group):
                if _cmdline(pid).endswith(b"/imap"):
                    _kill(pid, signal.SIGTERM)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _killpg(group, signal.SIGKILL)
                process.wait()
        # The master exits after signalling its children: wait until they are gone too. (Its
        # log process lingers as a zombie of PID 1 for a while: zombies count as gone.)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _live_members(group):
            if time.monotonic() > deadline:
                _killpg(group, signal.SIGKILL)
                time.sleep(0.2)
                survivors = _live_members(group)
                raise DovecotError(f"Dovecot processes {survivors or _live_members(group)} outlived the master"
                                   f" by {STOP_TIMEOUT}s" + (" and SIGKILL" if survivors else ""))
            time.sleep(0.02)

    # --- doveadm

    def run_doveadm(self, *args: str, check: bool = True, ok_codes: tuple[int, ...] = (0,)) -> str:
        """Run ``doveadm -c <conf> args...`` (blocking); returns its stdout. ``check``: raise
        DovecotError on an exit code not in ``ok_codes``."""
        try:
            done = subprocess.run([_which("doveadm") or "doveadm", "-c", str(self.config_path), *args],
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=COMMAND_TIMEOUT, cwd="/")
        except subprocess.TimeoutExpired:
            raise DovecotError(f"doveadm {' '.join(args)} timed out") from None
        if check and done.returncode not in ok_codes:
            raise DovecotError(f"doveadm {' '.join(args)} exited {done.returncode}: "
                               f"{done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    async def doveadm(self, *args: str, check: bool = True) -> str:
        return await asyncio.to_thread(self.run_doveadm, *args, check=check)

    def sessions(self, user: str) -> list[int]:
        """PIDs of ``user``'s imap processes (``doveadm who``)."""
        out = self.run_doveadm("-f", "tab", "who", "-1", user.lower())
        return [int(row.split("\t")[2]) for row in out.splitlines()[1:] if row.strip()]

    def kick(self, user: str, *, graceful: bool = False, timeout: float = STOP_TIMEOUT) -> int:
        """End all of ``user``'s IMAP sessions; returns how many there were. Blocking: returns
        once their processes are gone.

        Default: SIGKILL to their imap processes, so the client gets what the kernel still
        holds and then EOF, wherever it is (e.g. inside a FETCH literal); no BYE, no tagged
        answer: a dropped connection.

        ``graceful=True`` is ``doveadm kick`` (SIGTERM): an idle session gets ``* BYE Server
        shutting down.`` and EOF within ~20 ms. A FETCH in progress is not a reliable way to
        cut: measured here, if the client keeps reading the FETCH runs to its tagged OK and
        BYE follows; if it has stopped reading for a while (0.2 s was enough), BYE comes after
        the current message, without the tagged answer."""
        pids = self.sessions(user)
        if not pids:
            return 0
        group = self.pid
        if graceful:
            self.run_doveadm("kick", user.lower(), ok_codes=(0, 68))  # 68: EX_NOUSER, gone meanwhile
        else:
            for pid in pids:
                if group is not None and _pgid(pid) == group:  # only our own Dovecot's processes
                    _kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise DovecotError(f"{user}'s sessions {pids} outlived the kick by {timeout}s")
            time.sleep(0.01)
        return len(pids)

    async def kill_connections(self, user: str, *, graceful: bool = False) -> int:
        """``kick`` for async tests (a worker thread: the event loop keeps serving meanwhile)."""
        return await asyncio.to_thread(self.kick, user, graceful=graceful)

    async def set_uidvalidity(self, user: str, mailbox: str, value: int, *, kick: bool = True) -> None:
        """Give ``mailbox`` a new UIDVALIDITY; messages keep their UIDs (``doveadm mailbox update``).
        Kills the user's sessions first unless ``kick=False``: then a session with the mailbox
        selected gets ``* BYE IMAP session state is inconsistent, please relogin.`` at its next
        command."""
        if not 0 < value < 2**32:
            raise ValueError("UIDVALIDITY is a non-zero 32-bit number")
        if kick:
            await self.kill_connections(user)
        await self.doveadm("mailbox", "update", "-u", user.lower(), "--uid-validity", str(value), mailbox)

    async def replace_mailbox(self, user: str, mailbox: str, messages: Iterable[Any], *,
                              uids: Sequence[int] | None = None, uidvalidity: int | None = None) -> list[Path]:
        """Rebuild ``mailbox`` from scratch with ``messages`` (kicking the user first), with the
        given UIDs (default 1..n) and UIDVALIDITY (default: the current one + 1): a mailbox
        recreated or renumbered behind a client's back."""
        from tests.support.maildir import write_mailbox

        await self.kill_connections(user)
        if uidvalidity is None:
            uidvalidity = (await self.mailbox_status(user, mailbox))["uidvalidity"] % (2**32 - 1) + 1
        if uids is None:
            messages = list(messages)
            uids = range(1, len(messages) + 1)
        folder = self.mailbox_path(user, mailbox)
        for sub in ("cur", "new", "tmp"):
            for file in (folder / sub).iterdir():
                file.unlink()
        maildir = self.maildir(user)
        for file in [*folder.glob("dovecot-uidlist*"), *folder.glob("dovecot.index*"),
                     *maildir.glob("dovecot.list.index*")]:  # the list index caches STATUS answers
            file.unlink()
        return write_mailbox(folder, self.owner, messages, uids=uids, uidvalidity=uidvalidity)

    async def mailbox_status(self, user: str, mailbox: str) -> dict[str, int]:
        """``doveadm mailbox status``: messages, uidnext, uidvalidity, unseen, highestmodseq."""
        out = await self.doveadm("-f", "flow", "mailbox", "status", "-u", user.lower(),
                                 "messages uidnext uidvalidity unseen highestmodseq", mailbox)
        return {k: int(v) for k, v in re.findall(r"\b(messages|uidnext|uidvalidity|unseen|highestmodseq)=(\d+)", out)}


class _PortTaken(Exception):
    pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after "pid (comm) ": state ppid pgrp ...; None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0")
    except OSError:
        return b""


def _pgid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _live_members(pgid: int) -> list[int]:
    """PIDs of process group ``pgid``, zombies excepted."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry))
    return members
