"""A real Radicale CardDAV server for tests, on 127.0.0.1 and a free port.

``Radicale().start()`` writes a configuration into a temporary folder (htpasswd in plain
text, storage in that folder, no web interface, no failed-login delay, login caches off),
runs ``python -m radicale`` as a child of its own and returns once the port accepts a
connection. ``stop()`` ends that child (by its pid) and removes the folder. Start and stop
are blocking and loop-free, so a module-scoped sync fixture serves function-scoped loops.

``mkbook(user, name)`` creates an address book (extended MKCOL) and ``put(url, vcard)``
stores one card, both over plain HTTP with the standard library (they seed, they test
nothing). Radicale parses every card it is given with vobject and refuses one it cannot
read (400), so a malformed card never reaches a client through it: ``put`` returns the
status and leaves judging it to the test.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from tests.support.pg_tcp import free_port

START_TIMEOUT = 15.0
_MKCOL_ADDRESSBOOK = b"""<?xml version="1.0" encoding="utf-8"?>
<D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav">
  <D:set><D:prop><D:resourcetype><D:collection/><C:addressbook/></D:resourcetype></D:prop></D:set>
</D:mkcol>"""


class Radicale:
    """One Radicale process; ``users`` maps user names to passwords."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.host = "127.0.0.1"
        self.port = 0
        self.folder = Path(tempfile.mkdtemp(prefix="inboxlens-radicale-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def book_url(self, user: str, name: str) -> str:
        return f"{self.base_url}/{quote(user)}/{quote(name)}/"

    def start(self) -> "Radicale":
        self.port = free_port(self.host)
        (self.folder / "users").write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
        config = self.folder / "config"
        config.write_text(f"""[server]
hosts = {self.host}:{self.port}
[auth]
type = htpasswd
htpasswd_filename = {self.folder / 'users'}
htpasswd_encryption = plain
delay = 0
cache_logins = False
[rights]
type = owner_only
[storage]
filesystem_folder = {self.folder / 'collections'}
[web]
type = none
[logging]
level = warning
mask_passwords = True
""")
        log = open(self.folder / "log", "wb")
        self._process = subprocess.Popen([sys.executable, "-m", "radicale", "--config", str(config)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"radicale exited: {(self.folder / 'log').read_text()[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)  # nothing to wait on before the child binds: poll its port
        raise RuntimeError("radicale did not listen in time")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def request(self, user: str, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> int:
        """One request as ``user``; returns the status."""
        auth = base64.b64encode(f"{user}:{self.users[user]}".encode()).decode()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, path, body, {"Authorization": f"Basic {auth}", **(headers or {})})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def mkbook(self, user: str, name: str) -> str:
        path = f"/{quote(user)}/{quote(name)}/"
        status = self.request(user, "MKCOL", path, _MKCOL_ADDRESSBOOK, {"Content-Type": "application/xml"})
        assert status == 201, status
        return self.base_url + path

    def put(self, book_url: str, name: str, vcard: bytes, charset: str = "utf-8", user: str = "") -> int:
        path = book_url.removeprefix(self.base_url) + quote(name)
        return self.request(user or next(iter(self.users)), "PUT", path, vcard,
                            {"Content-Type": f"text/vcard; charset={charset}"})

    def delete(self, book_url: str, name: str, user: str = "") -> int:
        path = book_url.removeprefix(self.base_url) + quote(name)
        return self.request(user or next(iter(self.users)), "DELETE", path)
