"""The vault process end to end: real socket, real token store, the local OAuth provider."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import struct
import time
from pathlib import Path

import pytest

from inboxlens.errors import CannotOpen, NotPermitted, ProviderRejected, ProviderUnavailable, ReauthRequired
from inboxlens.service_errors import VaultUnavailable
from inboxlens.vault.client import VaultClient
from tests.support.oauth_provider import OAuthProvider
from tests.vault.conftest import CLIENT_ID, CLIENT_SECRET, become, provider_config

EMAIL = "alice@example.test"
ACCOUNT = "acct-1"


async def connect(vault, oauth, refresh_token, account=ACCOUNT, provider="test"):
    """Store a token as web would, then act as harvest."""
    client = VaultClient(vault.socket)
    await become(vault, client, os.getpid(), "web")
    key = await client.public_key()
    await client.set(account, provider, key.seal(account, provider, refresh_token))
    await become(vault, client, os.getpid(), "harvest")
    return client


async def test_get_refreshes_once_then_serves_from_cache(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth)
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    first = await client.get(ACCOUNT)
    second = await client.get(ACCOUNT)
    assert oauth.is_active(first.token)
    assert second == first
    assert oauth.refresh_grants == 1
    assert first.expires_at == pytest.approx(time.time() + 3600, abs=30)


async def test_concurrent_gets_cause_exactly_one_refresh(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth, vault={"max_connections_harvest": 100})
    await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.delay = 0.3  # every get arrives while the first refresh is still running
    clients = [VaultClient(vault.socket) for _ in range(100)]
    tokens = await asyncio.gather(*(c.get(ACCOUNT) for c in clients))
    assert len({t.token for t in tokens}) == 1
    assert oauth.refresh_grants == 1
    for c in clients:
        await c.close()


async def test_rotated_refresh_token_is_persisted_across_restart(vault_factory, oauth: OAuthProvider, tmp_path: Path):
    vault = await vault_factory(oauth)
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    await client.get(ACCOUNT)
    await client.close()
    assert await vault.stop() == 0
    # A new vault on the same files has no cache: it must refresh with the rotated token. Presenting
    # the spent one would trip the provider's reuse detection and revoke the grant.
    await vault.start()
    client = VaultClient(vault.socket)
    await become(vault, client, os.getpid(), "harvest")
    token = await client.get(ACCOUNT)
    assert oauth.is_active(token.token)
    assert oauth.refresh_grants == 2


async def test_invalid_grant_marks_reauth_and_stops_asking(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth)
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.revoke_grant_for(EMAIL)
    with pytest.raises(ReauthRequired):
        await client.get(ACCOUNT)
    with pytest.raises(ReauthRequired):
        await client.get(ACCOUNT)
    assert oauth.refresh_grants == 1  # the second get never reached the provider
    # Reconnecting (web stores a new token) clears the state.
    await become(vault, client, os.getpid(), "web")
    key = await client.public_key()
    await client.set(ACCOUNT, "test", key.seal(ACCOUNT, "test", oauth.issue_refresh_token(EMAIL)))
    await become(vault, client, os.getpid(), "harvest")
    assert oauth.is_active((await client.get(ACCOUNT)).token)
    await client.close()


@pytest.mark.parametrize("mode", ["server_error", "unavailable", "drop"])
async def test_transient_failures_keep_the_token(vault_factory, oauth: OAuthProvider, mode: str):
    vault = await vault_factory(oauth, vault={"refresh_attempts": 2})
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.fail_mode = mode
    with pytest.raises(ProviderUnavailable):
        await client.get(ACCOUNT)
    assert oauth.refresh_grants == 2  # retried once, then gave up
    oauth.fail_mode = None
    assert oauth.is_active((await client.get(ACCOUNT)).token)


async def test_slow_provider_times_out_as_unavailable(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth, vault={"refresh_attempts": 1, "refresh_timeout_seconds": 0.3})
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.delay = 2.0
    with pytest.raises(ProviderUnavailable):
        await client.get(ACCOUNT)
    oauth.delay = 0
    assert oauth.is_active((await client.get(ACCOUNT)).token)


async def test_failure_and_recovery_are_recorded_as_events(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth, vault={"refresh_attempts": 1})
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.fail_mode = "server_error"
    with pytest.raises(ProviderUnavailable):
        await client.get(ACCOUNT)
    oauth.fail_mode = None
    await client.get(ACCOUNT)
    await vault.register(os.getpid(), "web")  # any registered role; then drop it to be admin again
    await vault.send({"unregister": os.getpid()})
    admin = VaultClient(vault.socket)
    status = await _admin_status(admin)
    kinds = [e["kind"] for e in status["events"] if e["account_id"] == ACCOUNT]
    assert kinds[:2] == ["refresh_recovered", "refresh_failed"]  # newest first
    assert status["refresh"]["transient_failures"] == 1


async def _admin_status(admin: VaultClient) -> dict:
    deadline = time.monotonic() + 10
    while True:
        try:
            return await admin.status()
        except NotPermitted:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)


async def test_missing_expires_in_uses_the_configured_default(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth, vault={"default_expires_in_seconds": 900})
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.fail_mode = "no_expires_in"
    token = await client.get(ACCOUNT)
    assert token.expires_at == pytest.approx(time.time() + 900, abs=30)


async def test_answer_without_refresh_token_keeps_the_old_one(tmp_path: Path, vault_factory):
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]}, rotate_refresh_tokens=False, access_token_ttl=60)
    await oauth.start()
    try:
        # margin 120 s > ttl 60 s: every get refreshes, so the second one proves the first kept the token.
        vault = await vault_factory(oauth, vault={"access_token_margin_seconds": 120})
        client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
        oauth.fail_mode = "no_refresh_token"
        await client.get(ACCOUNT)
        assert oauth.is_active((await client.get(ACCOUNT)).token)
        assert oauth.refresh_grants == 2
    finally:
        await oauth.stop()


async def test_client_secrets_are_tried_in_order(vault_factory, oauth: OAuthProvider):
    # The first secret is an old one the provider no longer accepts: rotation without downtime.
    vault = await vault_factory(oauth, providers=provider_config(oauth, ["retired-secret", CLIENT_SECRET]))
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    assert oauth.is_active((await client.get(ACCOUNT)).token)


async def test_no_accepted_client_secret_is_rejected_not_reauth(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth, providers=provider_config(oauth, ["wrong-1", "wrong-2"]))
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    with pytest.raises(ProviderRejected):
        await client.get(ACCOUNT)
    # The token is not marked: fixing the secret makes it work again.
    with pytest.raises(ProviderRejected):
        await client.get(ACCOUNT)


async def test_ciphertext_moved_to_another_account_is_refused(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth)
    client = VaultClient(vault.socket)
    await become(vault, client, os.getpid(), "web")
    key = await client.public_key()
    sealed_for_a = key.seal("acct-a", "test", oauth.issue_refresh_token(EMAIL))
    with pytest.raises(CannotOpen) as refused:
        await client.set("acct-b", "test", sealed_for_a)
    with pytest.raises(CannotOpen) as garbage:
        await client.set("acct-b", "test", b"\x01\x00\x00\x00\x01" + os.urandom(80))
    assert str(refused.value) == str(garbage.value)  # one opaque answer, whatever the cause


async def test_unpermitted_request_is_refused_and_connection_closed(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth)
    client = VaultClient(vault.socket)
    await become(vault, client, os.getpid(), "web")
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(str(vault.socket))
    body = b'{"op":"get","args":{"account_id":"acct-1","rejected":""}}'
    raw.sendall(struct.pack(">I", len(body)) + body)
    answer = _read_frame(raw)
    assert b'"not_permitted"' in answer
    assert raw.recv(1) == b""  # closed by the vault
    assert "unpermitted request: get refused" in vault.log()


def _read_frame(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    header = sock.recv(4, socket.MSG_WAITALL)
    (length,) = struct.unpack(">I", header)
    return sock.recv(length, socket.MSG_WAITALL)


async def test_bad_frames_never_crash_or_block_the_vault(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth, vault={"frame_timeout_seconds": 1.0, "max_frame_bytes": 4096})
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    bad = {
        "oversized": struct.pack(">I", 1 << 30),
        "zero length": struct.pack(">I", 0),
        "not json": struct.pack(">I", 5) + b"\xff\xfe{]x",
        "not an object": struct.pack(">I", 2) + b"[]",
        "extra field": _frame(b'{"op":"get","args":{"account_id":"a"},"x":1}'),
        "missing arg": _frame(b'{"op":"get","args":{}}'),
        "unknown op": _frame(b'{"op":"dump_keys","args":{}}'),
        "wrong type": _frame(b'{"op":"get","args":{"account_id":7}}'),
    }
    for name, frame in bad.items():
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(vault.socket))
        raw.sendall(frame)
        raw.settimeout(10)
        data = raw.recv(65536)
        while data and not data.endswith(b"}"):
            data += raw.recv(65536)
        assert raw.recv(1) == b"", name  # closed after at most one error answer
        raw.close()
    # A slow sender and a truncated frame hold only their own connections.
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(str(vault.socket))
    slow.sendall(struct.pack(">I", 100) + b'{"op"')
    truncated = socket.socket(socket.AF_UNIX)
    truncated.connect(str(vault.socket))
    truncated.sendall(struct.pack(">I", 100) + b'{"op"')
    truncated.close()
    started = time.monotonic()
    assert oauth.is_active((await client.get(ACCOUNT)).token)
    assert time.monotonic() - started < 1.0  # not waiting behind the slow frame
    slow.settimeout(10)
    assert slow.recv(1) == b""  # dropped once its frame timed out
    assert vault.process.returncode is None


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


async def test_no_secret_reaches_the_log_or_an_answer(vault_factory):
    oauth = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]}, access_token_ttl=60)
    await oauth.start()
    try:
        # margin 120 s > ttl 60 s: every get goes to the provider, so every path below runs.
        vault = await vault_factory(oauth, vault={"refresh_attempts": 1, "access_token_margin_seconds": 120})
        first_refresh_token = oauth.issue_refresh_token(EMAIL)
        client = await connect(vault, oauth, first_refresh_token)
        answers = []
        for mode in (None, "server_error", "unavailable", "drop", None, "invalid_grant", None):
            oauth.fail_mode = mode
            try:
                answers.append(repr(await client.get(ACCOUNT)))
            except Exception as e:  # noqa: BLE001 - every outcome's text is checked below
                answers.append(repr(e))
        await become(vault, client, os.getpid(), "web")
        key = await client.public_key()
        try:
            await client.set("acct-other", "test", key.seal(ACCOUNT, "test", "moved-token-9d8c"))
        except CannotOpen as e:
            answers.append(repr(e))
        await vault.send({"unregister": os.getpid()})
        answers.append(repr(await _admin_status(VaultClient(vault.socket))))
        assert any("ReauthRequired" in a for a in answers) and any("ProviderUnavailable" in a for a in answers)
        refresh_tokens = {first_refresh_token, "moved-token-9d8c"}
        refresh_tokens |= {r["refresh_token"] for r in oauth.token_requests if "refresh_token" in r}
        keys = [f.read_bytes() for f in vault.vault_dir.glob("key-*.secret")]
        secrets = [*refresh_tokens, CLIENT_SECRET, *(k.hex() for k in keys), *(base64.b64encode(k).decode() for k in keys)]
        captured = vault.log() + "\n".join(answers)
        assert len(refresh_tokens) >= 3
        for secret in secrets:
            assert secret not in captured
    finally:
        await oauth.stop()


async def test_forget_with_revoke_ends_the_grant_at_the_provider(vault_factory, oauth: OAuthProvider):
    providers = provider_config(oauth)
    providers["test"]["revocation_url"] = oauth.revoke_url
    vault = await vault_factory(oauth, providers=providers)
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    access = (await client.get(ACCOUNT)).token
    await become(vault, client, os.getpid(), "web")
    assert await client.token_state(ACCOUNT) == "ok"
    answer = await client.forget(ACCOUNT, revoke=True)
    assert answer == {"forgotten": True, "revocation": "revoked"}
    assert not oauth.is_active(access)  # revoking the refresh token ended the whole grant
    assert await client.token_state(ACCOUNT) == "missing"
    assert await client.forget(ACCOUNT, revoke=True) == {"forgotten": False, "revocation": "no_token"}


async def test_forget_when_the_provider_cannot_revoke(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth)  # no revocation_url configured
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    await become(vault, client, os.getpid(), "web")
    assert await client.forget(ACCOUNT, revoke=True) == {"forgotten": True, "revocation": "not_supported"}


async def test_token_state_shows_reauth_required_to_web(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth)
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.revoke_grant_for(EMAIL)
    with pytest.raises(ReauthRequired):
        await client.get(ACCOUNT)
    await become(vault, client, os.getpid(), "web")
    assert await client.token_state(ACCOUNT) == "reauth_required"


async def test_a_provider_given_only_its_issuer_is_discovered(vault_factory, oauth: OAuthProvider):
    providers = {"test": {"issuer": oauth.issuer, "client_id": CLIENT_ID, "client_secrets": [CLIENT_SECRET]}}
    vault = await vault_factory(oauth, providers=providers)
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    access = await client.get(ACCOUNT)
    assert oauth.is_active(access.token)
    await become(vault, client, os.getpid(), "web")
    assert (await client.forget(ACCOUNT, revoke=True))["revocation"] == "revoked"  # discovered endpoint too
    assert not oauth.is_active(access.token)


async def test_a_rejected_access_token_is_replaced_once(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth)
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    first = await client.get(ACCOUNT)
    assert (await client.get(ACCOUNT, rejected="some-other-token")) == first  # not ours: cache kept
    second = await client.get(ACCOUNT, rejected=first.token)
    assert second.token != first.token and oauth.refresh_grants == 2
    # Many callers reporting the same refusal: still one refresh.
    oauth.delay = 0.2
    clients = [VaultClient(vault.socket) for _ in range(20)]
    answers = await asyncio.gather(*(c.get(ACCOUNT, rejected=second.token) for c in clients))
    assert len({a.token for a in answers}) == 1 and oauth.refresh_grants == 3
    for c in clients:
        await c.close()


async def test_a_rotated_refresh_token_is_kept_when_the_access_token_is_unusable(vault_factory, oauth: OAuthProvider):
    # The provider rotates (spending the old token) but sends a 100 KB access token. Presenting the
    # spent token again would trip its reuse detection and revoke the whole grant.
    vault = await vault_factory(oauth, vault={"refresh_attempts": 1})
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.fail_mode = "huge_access_token"
    with pytest.raises(ProviderUnavailable):
        await client.get(ACCOUNT)
    oauth.fail_mode = None
    token = await client.get(ACCOUNT)  # presents the rotated token the vault stored first
    assert oauth.is_active(token.token)
    assert oauth.refresh_grants == 2


async def test_a_retry_presents_the_rotated_refresh_token(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth, vault={"refresh_attempts": 2})
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.fail_mode, oauth.fail_count = "huge_access_token", 1
    assert oauth.is_active((await client.get(ACCOUNT)).token)
    spent = [r["refresh_token"] for r in oauth.token_requests if r.get("grant_type") == "refresh_token"]
    assert len(spent) == 2 and spent[0] != spent[1]


async def test_stopping_waits_for_a_running_refresh_and_keeps_its_token(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth)
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    idle = VaultClient(vault.socket)
    await idle.public_key()  # an idle connection must not hold up the stop
    oauth.delay = 0.5
    running = asyncio.create_task(client.get(ACCOUNT))
    await _until(lambda: oauth.refresh_grants == 1)
    vault.process.send_signal(signal.SIGTERM)
    assert oauth.is_active((await running).token)  # answered while stopping
    assert await vault.stop() == 0
    await client.close()
    await idle.close()
    oauth.delay = 0
    await vault.start()  # a new vault must refresh with the token rotated during the stop
    client = VaultClient(vault.socket)
    await become(vault, client, os.getpid(), "harvest")
    assert oauth.is_active((await client.get(ACCOUNT)).token)
    await client.close()


async def test_a_drain_past_its_deadline_exits_non_zero(vault_factory, oauth: OAuthProvider):
    vault = await vault_factory(oauth, vault={"shutdown_seconds": 0.2})
    client = await connect(vault, oauth, oauth.issue_refresh_token(EMAIL))
    oauth.delay = 3.0
    running = asyncio.create_task(client.get(ACCOUNT))
    await _until(lambda: oauth.refresh_grants == 1)
    vault.process.send_signal(signal.SIGTERM)
    assert await vault.stop() == 75
    assert "stopped uncleanly" in vault.log()
    with pytest.raises(VaultUnavailable):
        await running
    await client.close()


async def _until(condition) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
