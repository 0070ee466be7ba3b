"""``inboxlens keys export`` / ``keys import``: one node's keyset and web's cookie-signing key on another.

Run as the admin would, through the command line, on two state directories that stand for two
nodes. The service itself is not started: tests/multinode/test_two_nodes_functional.py shows two
running nodes serving each other's users and tokens after an import.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from inboxlens.vault.keyset import KeysetLock
from tests.support import tokens
from tests.support.osusers import ensure_user

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the key files belong to service users")]

WEB, VAULT = "inboxlens-web", "inboxlens-vault"


class Node:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.state = base / "state"

    @property
    def vault_dir(self) -> Path:
        return self.state / "vault"

    @property
    def web_key(self) -> Path:
        return self.state / "web" / "session.key"

    def keys(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "HOME": str(self.base), "INBOXLENS_STATE_DIR": str(self.state),
               "INBOXLENS_RUNTIME_DIR": str(self.base / "run")}
        # As another user: that user's own group and no other (subprocess keeps root's groups otherwise).
        who = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
        return subprocess.run([sys.executable, "-m", "inboxlens", "keys", *args], capture_output=True, text=True,
                              env=env, timeout=60, cwd=Path(__file__).resolve().parents[2], **who)

    def start_web_once(self) -> bytes:
        """What web's first start leaves: its cookie-signing key, 0600, owned by web."""
        from inboxlens.web.sessions import load_key
        key = load_key(self.web_key)
        web = pwd.getpwnam(WEB)
        os.chown(self.web_key.parent, web.pw_uid, web.pw_gid)
        os.chown(self.web_key, web.pw_uid, web.pw_gid)
        return key

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.vault_dir.iterdir() if p.name.startswith(("key-", "keyset"))}


@pytest.fixture
def nodes(tmp_path: Path) -> tuple[Node, Node]:
    for user in (WEB, VAULT):
        ensure_user(user)
    tmp_path.chmod(0o755)  # the unprivileged caller below must reach the state to be refused by us, not the OS
    return Node(tmp_path / "a"), Node(tmp_path / "b")


def test_export_then_import_gives_the_other_node_the_same_keys(nodes: tuple[Node, Node], tmp_path: Path):
    a, b = nodes
    assert a.keys("init").returncode == 0
    missing = a.keys("export", str(tmp_path / "out"))
    assert missing.returncode == 1 and "start 'inboxlens serve' on this node once" in missing.stderr
    assert not (tmp_path / "out").exists()
    web_key = a.start_web_once()
    expected = asyncio.run(tokens.fill(a.vault_dir, 20))

    done = a.keys("export", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "manifest.json": 0o400, "keyset.json": 0o400, "key-1.secret": 0o400, "session.key": 0o400}
    secrets = [web_key.hex(), (a.vault_dir / "key-1.secret").read_bytes().hex()]
    assert not [s for s in secrets if s in done.stdout + done.stderr]

    imported = b.keys("import", str(out))
    assert imported.returncode == 0, imported.stderr
    assert "imported keys 1 (primary 1)" in imported.stdout
    assert b.files() == a.files() and b.web_key.read_bytes() == web_key
    assert (b.vault_dir / "key-1.secret").stat().st_uid == pwd.getpwnam(VAULT).pw_uid
    assert stat.S_IMODE((b.vault_dir / "key-1.secret").stat().st_mode) == 0o400
    assert b.web_key.stat().st_uid == pwd.getpwnam(WEB).pw_uid and stat.S_IMODE(b.web_key.stat().st_mode) == 0o600
    # Node B opens what node A sealed (here a copy of A's store stands for the shared one).
    shutil.copy2(a.vault_dir / "tokens.sqlite3", b.vault_dir / "tokens.sqlite3")
    assert asyncio.run(tokens.opened(b.vault_dir))[0] == expected
    assert b.keys("import", str(out)).returncode == 0  # the same keys again: nothing to refuse


def test_a_rotation_reaches_the_other_node_without_force(nodes: tuple[Node, Node], tmp_path: Path):
    a, b = nodes
    assert a.keys("init").returncode == 0
    a.start_web_once()
    assert a.keys("export", str(tmp_path / "first")).returncode == 0
    assert b.keys("import", str(tmp_path / "first")).returncode == 0
    assert "key 2 is now primary" in a.keys("rotate").stdout
    assert a.keys("export", str(tmp_path / "second")).returncode == 0
    done = b.keys("import", str(tmp_path / "second"))
    assert done.returncode == 0, done.stderr
    assert "imported keys 1, 2 (primary 2)" in done.stdout and b.files() == a.files()
    # Then key 1 is revoked on A (no token needs it): the next export takes its private key away on B too.
    assert a.keys("revoke", "1").returncode == 0
    assert a.keys("export", str(tmp_path / "third")).returncode == 0
    assert b.keys("import", str(tmp_path / "third")).returncode == 0
    assert not (b.vault_dir / "key-1.secret").exists() and b.files() == a.files()
    older = b.keys("import", str(tmp_path / "second"))  # an export from before the revocation
    assert older.returncode == 1 and "the export is older than this node's keyset" in older.stderr


def test_another_keyset_or_cookie_key_needs_force(nodes: tuple[Node, Node], tmp_path: Path):
    a, b = nodes
    for node in (a, b):
        assert node.keys("init").returncode == 0
    a.start_web_once()
    own_key = b.start_web_once()
    before = b.files()
    assert a.keys("export", str(tmp_path / "out")).returncode == 0
    refused = b.keys("import", str(tmp_path / "out"))
    assert refused.returncode == 1
    assert "has key(s) 1 that the export does not" in refused.stderr and "cookie-signing key" in refused.stderr
    assert "--force" in refused.stderr and b.files() == before and b.web_key.read_bytes() == own_key
    forced = b.keys("import", "--force", str(tmp_path / "out"))
    assert forced.returncode == 0, forced.stderr
    assert b.files() == a.files() and b.web_key.read_bytes() == a.web_key.read_bytes()


def test_a_damaged_export_is_refused_and_nothing_changes(nodes: tuple[Node, Node], tmp_path: Path):
    a, b = nodes
    assert a.keys("init").returncode == 0
    a.start_web_once()
    out = tmp_path / "out"
    assert a.keys("export", str(out)).returncode == 0
    key = out / "key-1.secret"
    key.chmod(0o600)
    key.write_bytes(bytes([key.read_bytes()[0] ^ 1]) + key.read_bytes()[1:])
    key.chmod(0o400)
    done = b.keys("import", str(out))
    assert done.returncode == 1 and "key-1.secret does not match its checksum" in done.stderr
    assert not b.vault_dir.exists() and not b.web_key.exists()
    not_one = b.keys("import", str(tmp_path))
    assert not_one.returncode == 1 and "not a directory 'inboxlens keys export' wrote" in not_one.stderr
    taken = a.keys("export", str(out))
    assert taken.returncode == 1 and "not an empty directory" in taken.stderr


def test_import_waits_for_the_vault_to_stop_and_others_may_not(nodes: tuple[Node, Node], tmp_path: Path):
    a, b = nodes
    assert a.keys("init").returncode == 0
    a.start_web_once()
    assert a.keys("export", str(tmp_path / "out")).returncode == 0
    (tmp_path / "out").chmod(0o755)
    b.vault_dir.mkdir(parents=True)
    running = KeysetLock(b.vault_dir)  # what a running vault holds
    assert running.acquire()
    try:
        done = b.keys("import", str(tmp_path / "out"))
    finally:
        running.release()
    assert done.returncode == 1 and "the vault is running on this node" in done.stderr
    assert not (b.vault_dir / "keyset.json").exists()
    nobody = ensure_user("inboxlens-t-dev").pw_name
    for action in (["export", str(tmp_path / "x")], ["import", str(tmp_path / "out")]):
        refused = b.keys(*action, user=nobody)
        assert refused.returncode == 77 and "run it as root" in refused.stderr, refused.stderr
