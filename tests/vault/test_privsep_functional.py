"""Privilege separation with real uids: the vault, web, harvest and strangers as different users.

Runs as root (as CI does): the vault runs as its own uid, and each client call is a
separate process started under the uid whose rights it proves.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from inboxlens.errors import StartFailed
from inboxlens.supervisor.plan import Plan, check_reachable
from inboxlens.vault.client import VaultClient
from tests.support.oauth_provider import OAuthProvider
from tests.support.osusers import ensure_group, ensure_user
from tests.support.vaultproc import VaultProcess, make_vault
from tests.vault.conftest import CLIENT_ID, CLIENT_SECRET, provider_config

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch uids")]
REPO = Path(__file__).resolve().parents[2]
USERS = ("vault", "web", "harvest", "member", "stranger")
GROUP = "inboxlens-t-shared"


@dataclass(frozen=True)
class User:
    uid: int
    gid: int


@pytest.fixture(scope="module")
def users() -> dict[str, User]:
    try:
        check_reachable(Plan(dev=False))
    except StartFailed as e:
        pytest.fail(f"the test interpreter is not reachable by other users: {e}")
    entries = {role: ensure_user(f"inboxlens-t-{role}") for role in USERS}
    return {role: User(e.pw_uid, e.pw_gid) for role, e in entries.items()}


@pytest.fixture(scope="module")
def shared_gid() -> int:
    return ensure_group(GROUP)


@pytest.fixture
def base() -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="inboxlens-privsep-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def oauth() -> AsyncIterator[OAuthProvider]:
    provider = OAuthProvider(clients={CLIENT_ID: [CLIENT_SECRET]})
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
async def vault(base: Path, users: dict[str, User], shared_gid: int, oauth: OAuthProvider) -> AsyncIterator[VaultProcess]:
    v_user = users["vault"]
    proc = make_vault(base, providers=provider_config(oauth), owner=(v_user.uid, v_user.gid),
                      callers={"web_uids": [users["web"].uid], "harvest_uids": [users["harvest"].uid]})
    # As the supervisor prepares them: the socket directory is setgid to the shared group.
    proc.state_dir.chmod(0o755)
    sock_dir = proc.runtime_dir / "vault"
    sock_dir.mkdir(parents=True)
    proc.runtime_dir.chmod(0o755)
    os.chown(sock_dir, v_user.uid, shared_gid)
    sock_dir.chmod(0o2750)
    await proc.start(user=v_user.uid, group=v_user.gid)
    yield proc
    await proc.stop()


async def call_as(user: User, groups: list[int], socket: Path, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.vault_call", str(socket), json.dumps(calls),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "")},
        user=user.uid, group=user.gid, extra_groups=groups)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


async def read_as(user: User, path: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"open({str(path)!r}, 'rb').read()",
        stderr=asyncio.subprocess.PIPE, user=user.uid, group=user.gid, extra_groups=[])
    _, err = await process.communicate()
    return err.decode().strip().splitlines()[-1] if process.returncode else "read"


ADMIN_CALLS = [("status", {}), ("rotate", {}), ("rewrap", {"limit": 10}), ("revoke", {"key_id": 1})]


async def test_web_may_seal_and_set_but_never_get_or_administer(vault, users, shared_gid, oauth):
    token = oauth.issue_refresh_token("bob@example.test")
    answers = await call_as(users["web"], [shared_gid], vault.socket, [
        ("public_key", {}),
        ("seal_and_set", {"account_id": "acct-1", "provider": "test", "refresh_token": token}),
        ("get", {"account_id": "acct-1", "rejected": ""}),
    ])
    assert "ok" in answers[0] and answers[1]["ok"]["key_id"] == 1
    assert answers[2] == {"error": "not_permitted"}
    for op, args in ADMIN_CALLS:
        assert await call_as(users["web"], [shared_gid], vault.socket, [(op, args)]) == [{"error": "not_permitted"}]
    assert token not in vault.log()


async def test_harvest_may_get_but_never_set_forget_or_administer(vault, users, shared_gid, oauth):
    token = oauth.issue_refresh_token("bob@example.test")
    await call_as(users["web"], [shared_gid], vault.socket,
                  [("seal_and_set", {"account_id": "acct-1", "provider": "test", "refresh_token": token})])
    got = await call_as(users["harvest"], [shared_gid], vault.socket, [("get", {"account_id": "acct-1", "rejected": ""})])
    assert oauth.is_active(got[0]["ok"]["access_token"])
    refused = [("seal_and_set", {"account_id": "acct-2", "provider": "test", "refresh_token": "x"}),
               ("forget", {"account_id": "acct-1", "revoke": False}), ("token_state", {"account_id": "acct-1"}),
               *ADMIN_CALLS]
    for op, args in refused:
        answer = await call_as(users["harvest"], [shared_gid], vault.socket, [(op, args)])
        # seal_and_set asks public_key first (allowed), then set, refused
        assert answer[-1] == {"error": "not_permitted"}, op


async def test_strangers_cannot_connect_and_group_members_get_nothing(vault, users, shared_gid):
    stranger = await call_as(users["stranger"], [], vault.socket, [("public_key", {})])
    assert "unavailable" in stranger[0] and "permission" in stranger[0]["unavailable"]
    member = await call_as(users["member"], [shared_gid], vault.socket, [("public_key", {})])
    # A group member with no role may connect, but the vault closes it at accept, unanswered.
    assert "unavailable" in member[0] and "lost" in member[0]["unavailable"]
    assert f"refused a connection from pid" in vault.log() and f"uid {users['member'].uid}: no role" in vault.log()


async def test_admin_operations_work_for_root(vault):
    from inboxlens.vault.client import VaultClient
    async with VaultClient(vault.socket) as admin:
        status = await admin.status()
        assert [k["id"] for k in status["keys"]] == [1]
        assert (await admin.rotate())["id"] == 2


async def test_key_files_and_token_store_are_unreadable_by_web_and_harvest(vault, users):
    private = vault.vault_dir / "key-1.secret"
    store = vault.vault_dir / "tokens.sqlite3"
    for role in ("web", "harvest", "stranger"):
        for path in (private, store, vault.vault_dir / "keyset.json"):
            assert "PermissionError" in await read_as(users[role], path), (role, path)
    assert await read_as(users["vault"], private) == "read"


async def test_the_vault_is_not_dumpable_and_has_no_core_limit(vault, users):
    pid = vault.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{users['vault'].uid}" in status
    # A non-dumpable process's /proc files belong to root, whatever uid it runs as.
    assert os.stat(f"/proc/{pid}/environ").st_uid == 0
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert [line.split()[4:6] for line in limits.splitlines() if line.startswith("Max core file size")] == [["0", "0"]]


FLOOD = """
import socket, sys
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    held.append(s)
print("open", flush=True)
sys.stdin.read()
"""


async def flood_as(user: User, groups: list[int], socket: Path, count: int) -> asyncio.subprocess.Process:
    """A process of ``user`` holding ``count`` connections to the vault until its stdin closes."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOD, str(socket), str(count), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, user=user.uid, group=user.gid, extra_groups=groups)
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 60) == b"open\n"
    return process


async def end(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    process.stdin.close()
    await asyncio.wait_for(process.wait(), 30)


@pytest.mark.parametrize("flooder", ["member", "web", "harvest"])
async def test_a_flooding_caller_starves_no_other_role(vault, users, shared_gid, oauth, flooder):
    token = oauth.issue_refresh_token("bob@example.test")
    await call_as(users["web"], [shared_gid], vault.socket,
                  [("seal_and_set", {"account_id": "acct-1", "provider": "test", "refresh_token": token})])
    flood = await flood_as(users[flooder], [shared_gid], vault.socket, 300)
    try:
        got = await call_as(users["harvest"], [shared_gid], vault.socket, [("get", {"account_id": "acct-1", "rejected": ""})])
        state = await call_as(users["web"], [shared_gid], vault.socket, [("token_state", {"account_id": "acct-1"})])
        async with VaultClient(vault.socket) as admin:  # root: the admin role
            assert [k["id"] for k in (await admin.status())["keys"]] == [1]
    finally:
        await end(flood)
    # The flooder's own role is full (or it has none); every other role is still answered.
    if flooder != "harvest":
        assert oauth.is_active(got[0]["ok"]["access_token"])
    if flooder != "web":
        assert state == [{"ok": {"state": "ok"}}]
    why = "no role" if flooder == "member" else f"{flooder} already has 32 connections"
    assert f"uid {users[flooder].uid}: {why}" in vault.log()
    assert vault.log().count("refused a connection") < 10  # rate-limited, not one line per connection
