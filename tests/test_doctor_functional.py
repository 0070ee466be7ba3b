"""inboxlens doctor: a checklist of what serve would refuse and what would fail later."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from tests.support.oauth_provider import OAuthProvider
from tests.test_cli_functional import inboxlens


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once it is closed


def test_doctor_lists_each_provider_problem_with_its_fix(tmp_path: Path):
    assert inboxlens(tmp_path, "keys", "init").returncode == 0
    provider = OAuthProvider(clients={"c": ["s"]})
    ready, stop = threading.Event(), threading.Event()

    def serve() -> None:  # the provider's discovery document, on its own loop
        import asyncio

        async def main() -> None:
            await provider.start()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await provider.stop()
        asyncio.run(main())
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert ready.wait(10)
        busy = socket.create_server(("127.0.0.1", 0))
        result = inboxlens(
            tmp_path, "doctor",
            INBOXLENS_WEB__PORT=str(busy.getsockname()[1]),
            INBOXLENS_PROVIDERS__GOGLE__CLIENT_ID="misspelt",
            INBOXLENS_PROVIDERS__CORP__ISSUER=provider.issuer, INBOXLENS_PROVIDERS__CORP__CLIENT_ID="c",
            INBOXLENS_PROVIDERS__CORP__CLIENT_SECRETS="s-secret-4d1e", INBOXLENS_PROVIDERS__CORP__IMAP_HOST="127.0.0.1",
            INBOXLENS_PROVIDERS__CORP__IMAP_PORT=str(_closed_port()))
        busy.close()
    finally:
        stop.set()
        thread.join(10)
    out = result.stdout
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "FAIL  provider gogle: not a built-in provider" in out
    assert any(l.startswith("FAIL  web:") and "serve would fail" in l for l in out.splitlines()), out
    assert "ok    provider corp: issuer discovery at" in out
    assert any(l.startswith("FAIL  provider corp: IMAP server 127.0.0.1:") for l in out.splitlines()), out
    assert "warn  provider corp: sender authenticity is off" in out
    assert "/oauth/corp/callback" in out
    assert "s-secret-4d1e" not in out + result.stderr
    assert out.strip().endswith("check(s) failed")


def test_doctor_is_content_with_a_sound_setup(tmp_path: Path):
    assert inboxlens(tmp_path, "keys", "init").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = inboxlens(tmp_path, "doctor", INBOXLENS_WEB__PORT=str(port))
    assert result.returncode == 0, result.stdout
    assert "FAIL" not in result.stdout and result.stdout.strip().endswith("every check passed")
    assert "warn  providers: none has a client_id" in result.stdout  # nobody can connect yet: said, not failed
