"""``inboxlens demo`` as a newcomer runs it: the dashboard and the API over the generated mailbox, every
answer marked as demo data, the printed sign-in link working once; then ``--remove`` and nothing is left."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Iterator

import pytest

from inboxlens import demo
from tests.test_supervisor_functional import free_port

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the demo runs the service in root mode here")


class Demo:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(base / "notify.sock"))
        self.notify.settimeout(90)
        self.env = {"PATH": os.environ["PATH"], "HOME": str(base), "INBOXLENS_STATE_DIR": str(base / "state"),
                    "INBOXLENS_WEB__PORT": str(self.port), "NOTIFY_SOCKET": str(base / "notify.sock")}
        self.process: subprocess.Popen[str] | None = None
        self.printed = ""

    @property
    def state(self) -> Path:
        return self.base / "state-demo"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "inboxlens", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def start(self) -> None:
        with open(self.base / "demo.log", "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "inboxlens", "demo"], env=self.env, text=True,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        while "remove it:" not in self.printed:  # printed once the data is in place, before serve starts
            line = self.process.stdout.readline()
            assert line, f"demo ended early:\n{(self.base / 'demo.log').read_text()[-3000:]}"
            self.printed += line
        assert "READY=1" in self.notify.recv(4096).decode()

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def get(self, path: str, opener: urllib.request.OpenerDirector | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()


@pytest.fixture
def running() -> Iterator[Demo]:
    base = Path(tempfile.mkdtemp(prefix="inboxlens-demo-"))
    base.chmod(0o711)
    d = Demo(base)
    try:
        yield d
    finally:
        if d.process is not None and d.process.poll() is None:
            d.stop()
        d.notify.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.root
@pytest.mark.slow
@root_only
def test_demo_shows_the_generated_mailbox_marked_as_demo_and_is_removed_with_one_command(running: Demo):
    running.start()
    link = re.search(r"(/demo/login\?code=[A-Za-z0-9_-]+)", running.printed)
    token = re.search(r"Bearer (ilk_[A-Za-z0-9_-]+)", running.printed)
    account = re.search(r"/api/v1/accounts/(\d+)/correspondents", running.printed)
    assert link and token and account, running.printed
    assert "no provider, no mail server" in running.printed and "inboxlens demo --remove" in running.printed

    # The API: the numbers are the generated mailbox's, and the answer says it is demo data.
    rows = demo.mailbox(int(account[1]), datetime.now(timezone.utc))
    received = Counter(r.from_address for r in rows if r.direction == "received" and not r.automated)
    person, count = received.most_common(1)[0]
    sent = sum(1 for r in rows if r.direction == "sent" and person in r.to_addresses)
    status, headers, body = running.get(f"/api/v1/accounts/{account[1]}/correspondents/{person}",
                                        headers={"Authorization": f"Bearer {token[1]}"})
    assert status == 200 and headers.get("X-InboxLens-Demo") == "1", body
    relationship = json.loads(body)["card"]["relationship"]
    assert (relationship["received"], relationship["sent"]) == (count, sent) and count > 50

    # The dashboard, through the printed sign-in link, with the banner; the link works once.
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    status, headers, page = running.get(link[1], browser)
    assert status == 200 and headers.get("X-InboxLens-Demo") == "1"
    assert "data-demo" in page and "Demo data" in page and demo.ADDRESS in page
    seen = re.search(r"<dt>Messages seen</dt><dd>([\d,]+)</dd>", page)
    assert seen and int(seen[1].replace(",", "")) == len(rows)
    status, headers, page = running.get(link[1])
    assert status == 403 and "data-demo" in page and headers.get("X-InboxLens-Demo") == "1"
    status, headers, _ = running.get("/no-such-page")
    assert status == 404 and headers.get("X-InboxLens-Demo") == "1"

    refused = running.cli("demo", "--remove")
    assert refused.returncode == 1 and "the demo is running" in refused.stderr and running.state.exists()
    assert running.stop() == 0
    removed = running.cli("demo", "--remove")
    assert removed.returncode == 0 and "removed the demo" in removed.stdout, removed.stderr
    assert not running.state.exists() and not (running.base / "state").exists()
    again = running.cli("demo", "--remove")
    assert again.returncode == 0 and "no demo data" in again.stdout


def test_remove_leaves_a_directory_that_is_not_a_demo_alone(tmp_path: Path):
    (tmp_path / "state-demo").mkdir()
    (tmp_path / "state-demo" / "precious").write_text("keep me")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "INBOXLENS_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "inboxlens", "demo", "--remove"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "not a demo's state" in done.stderr
    assert (tmp_path / "state-demo" / "precious").read_text() == "keep me"
