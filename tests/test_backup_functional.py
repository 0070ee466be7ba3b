"""``inboxlens backup`` and ``restore`` against a real service as root: backup while it runs, wipe the
state, restore, and find the same dashboard, API answers and tokens the vault still opens; and every refusal."""

from __future__ import annotations

import asyncio
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import asyncpg
import pytest

from inboxlens.metrics.model import AccountRef, InsightSettings, RawRow
from inboxlens.metrics.postgres.store import PgMetricsStore
from inboxlens.supervisor import plan as supervisor
from tests.faults.test_faults_functional import Loop
from tests.support import tokens as token_store
from tests.support.oauth_provider import OAuthProvider
from tests.support.osusers import ensure_user
from tests.test_supervisor_functional import Service, free_port

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="backup and restore of a root-mode service need root")]
REPO = Path(__file__).resolve().parents[1]
SECRET = "backup-client-secret-5d"
OWNER = "dana@example.test"
FRIEND = "erin@friends.test"


@dataclass
class World:
    base: Path
    loop: Loop
    oauth: OAuthProvider
    service: Service
    jar: Any = None
    api_token: str = ""
    account: int = 0
    seen: dict[str, Any] = field(default_factory=dict)  # what the API answered before the backup
    outputs: list[str] = field(default_factory=list)  # every CLI output, checked for secrets at the end

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def dsn(self) -> str:
        return f"postgresql://inboxlens-db@/postgres?host={self.base / 'run' / 'pg'}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.service.cli(*args)
        self.outputs.append(done.stdout + done.stderr)
        return done

    def start(self) -> None:
        self.service.start()
        assert "READY=1" in self.service.notification()

    def stop(self) -> None:
        code, err = self.service.stop()
        self.outputs.append(err)
        assert code == 0, err[-3000:]
        assert "STOPPING=1" in self.service.notification()  # read now: the next start waits for READY=1

    def wipe(self) -> None:
        shutil.rmtree(self.state)
        shutil.rmtree(self.base / "run", ignore_errors=True)

    def read_api(self) -> dict[str, Any]:
        return self.loop.run(self._read_api())

    async def _read_api(self) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_token}"}
        found: dict[str, Any] = {}
        async with aiohttp.ClientSession(f"http://127.0.0.1:{self.service.port}", headers=headers) as client:
            for name, path in (("me", "/api/v1/me"), ("rollups", f"/api/v1/accounts/{self.account}/rollups"),
                               ("card", f"/api/v1/accounts/{self.account}/correspondents/{FRIEND}")):
                answer = await client.get(path)
                assert answer.status == 200, (path, answer.status, await answer.text())
                found[name] = await answer.json()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{self.service.port}", cookie_jar=self.jar) as browser:
            page = await browser.get("/dashboard", allow_redirects=False)
            found["dashboard"] = (page.status, OWNER in await page.text())
        return found

    def vault_get(self) -> dict[str, Any]:
        """The vault's ``get`` for the account, asked as harvest (its uid): opens the token and refreshes it."""
        user = pwd.getpwnam(supervisor.USERS["harvest"])
        socket_path = self.base / "run" / "vault" / "vault.sock"
        command = [sys.executable, "-m", "tests.faults.vault_get", str(socket_path), str(self.account), "get"]
        done = subprocess.run(command,
                              user=user.pw_uid, group=user.pw_gid,
                              extra_groups=[grp.getgrnam(supervisor.SHARED_GROUP).gr_gid], cwd=REPO,
                              env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(json.loads(done.stdout.splitlines()[-1]))


NOW_DEPENDENT = {"waiting", "strength"}  # computed at read time (docs/insights.md): not what a restore keeps


def settled(answer: Any) -> Any:
    """An API answer without the numbers that change with the clock."""
    if isinstance(answer, dict):
        return {k: settled(v) for k, v in answer.items() if k not in NOW_DEPENDENT}
    if isinstance(answer, list):
        return [settled(v) for v in answer]
    return answer


def provider_env(oauth: OAuthProvider) -> dict[str, str]:
    values = {"AUTHORIZATION_URL": oauth.authorize_url, "TOKEN_URL": oauth.token_url,
              "USERINFO_URL": oauth.userinfo_url, "REVOCATION_URL": oauth.revoke_url, "ISSUER": oauth.issuer,
              "CLIENT_ID": "inboxlens-test", "CLIENT_SECRETS": json.dumps([SECRET]),
              "SCOPES": json.dumps(["openid", "email", "offline_access"]), "DISPLAY_NAME": "Test Mail",
              "IMAP_HOST": "127.0.0.1", "IMAP_PORT": str(free_port()), "IMAP_TLS": "plain"}
    return {"INBOXLENS_PROVIDERS__TEST__" + k: v for k, v in values.items()}


def raw(account: int, message_id: str, at: datetime, *, received: bool, reply_to: str | None = None) -> RawRow:
    key = hashlib.sha256(b"id\0" + message_id.encode()).digest()[:16]
    return RawRow(account, key, "INBOX", int(at.timestamp()), message_id, (reply_to,) if reply_to else (), (),
                  "hello", FRIEND if received else OWNER, None, (OWNER,) if received else (FRIEND,), (), at, at,
                  True, "received" if received else "sent", False, dkim="pass" if received else None)


async def seed(world: World) -> None:
    """A short thread with a friend, folded into the rollups as harvest would."""
    now = datetime.now(timezone.utc)
    rows = [raw(world.account, "<b1@friends.test>", now - timedelta(days=3), received=True),
            raw(world.account, "<b2@own>", now - timedelta(days=3, hours=-2), received=False,
                reply_to="<b1@friends.test>"),
            raw(world.account, "<b3@friends.test>", now - timedelta(days=1), received=True, reply_to="<b2@own>")]
    pool = await asyncpg.create_pool(world.dsn, min_size=1, max_size=2)
    try:
        store = PgMetricsStore(pool, InsightSettings())
        assert await store.write_raw(rows) == len(rows)
        await store.aggregate(AccountRef(world.account, OWNER, "UTC"))
    finally:
        await pool.close()


async def connect_and_make_token(world: World) -> None:
    world.oauth.login = OWNER
    world.jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(f"http://127.0.0.1:{world.service.port}", cookie_jar=world.jar) as browser:
        page = await browser.get("/connect/test?tz=Europe/Berlin")
        assert page.status == 200 and OWNER in await page.text()
        settings = await (await browser.get("/settings")).text()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', settings)
        assert csrf
        made = await browser.post("/settings/tokens", data={"name": "backup-test", "csrf_token": csrf[1]})
        token = re.search(r"data-token>(ilk_[A-Za-z0-9_-]+)<", await made.text())
        assert made.status == 201 and token
        world.api_token = token[1]
    db = await asyncpg.connect(world.dsn)
    try:
        world.account = int(await db.fetchval("SELECT id FROM mail_accounts WHERE address = $1", OWNER))
    finally:
        await db.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """A running service with a connected mailbox, an API token and folded metrics; two backups taken
    while it runs (keys kept apart, and keys included); then stopped."""
    base = Path(tempfile.mkdtemp(prefix="inboxlens-backup-"))
    base.chmod(0o711)
    loop = Loop()
    oauth = OAuthProvider(clients={"inboxlens-test": [SECRET]})
    loop.run(oauth.start())
    service = Service(base, None)
    service.env.update(provider_env(oauth))
    service.env["INBOXLENS_HARVEST__TICK_SECONDS"] = "3600"
    w = World(base, loop, oauth, service)
    try:
        assert w.cli("keys", "init").returncode == 0
        w.start()
        loop.run(connect_and_make_token(w))
        loop.run(seed(w))
        w.seen = w.read_api()
        (base / "keys").mkdir(mode=0o700)
        for key in (w.state / "vault").glob("key-*.secret"):
            shutil.copy2(key, base / "keys" / key.name)
        yield w
    finally:
        if service.process is not None and service.process.poll() is None:
            service.stop()
        service.notify.close()
        loop.run(oauth.stop())
        loop.close()
        secrets = {SECRET, w.api_token,
                   *(r.get(k, "") for r in oauth.token_requests for k in ("refresh_token", "code"))}
        leaked = [s for s in secrets if s and any(s in out for out in w.outputs)]
        shutil.rmtree(base, ignore_errors=True)
        assert not leaked, "a secret reached the output of a command"


@pytest.fixture(scope="module")
def backups(world: World) -> tuple[Path, Path]:
    apart, whole = world.base / "backup-apart", world.base / "backup-whole"
    done = world.cli("backup", str(apart))
    assert done.returncode == 0, done.stderr
    assert "private keys are NOT in this backup" in done.stderr and str(world.state / "vault") in done.stderr
    done = world.cli("backup", "--include-private-keys", str(whole))
    assert done.returncode == 0, done.stderr
    assert "HOLDS THE VAULT'S PRIVATE KEYS" in done.stderr
    world.stop()
    return apart, whole


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_backup_holds_what_its_manifest_says_with_private_keys_only_when_asked(world: World,
                                                                                  backups: tuple[Path, Path]):
    apart, whole = backups
    for backup in (apart, whole):
        manifest = json.loads((backup / "manifest.json").read_text())
        assert mode(backup) == 0o700
        assert manifest["database"] == "embedded" and manifest["token_store"] == "sqlite"
        assert manifest["keys"] == [1] and manifest["schema"]["migrations"][0] == "001_foundation"
        for name, facts in manifest["files"].items():
            assert hashlib.sha256((backup / name).read_bytes()).hexdigest() == facts["sha256"], name
            assert mode(backup / name) & 0o077 == 0, name
        keyset = json.loads((backup / "keyset.json").read_text())
        assert [k["id"] for k in keyset["keys"]] == [1] and "private" not in json.dumps(keyset).lower()
    assert not (apart / "private").exists() and json.loads((apart / "manifest.json").read_text())["private"] == []
    assert mode(whole / "private") == 0o700 and mode(whole / "private" / "key-1.secret") == 0o400
    assert (whole / "private" / "key-1.secret").read_bytes() == (world.base / "keys" / "key-1.secret").read_bytes()
    assert not list(world.base.glob(".backup-*.partial-*")), "a staging directory was left behind"
    again = world.cli("backup", str(apart))
    assert again.returncode == 1 and "is not an empty directory" in again.stderr and "Traceback" not in again.stderr


def test_backup_wipe_restore_gives_the_same_dashboard_and_tokens_that_open(world: World, backups: tuple[Path, Path]):
    _, whole = backups
    world.wipe()
    done = world.cli("restore", str(whole))
    assert done.returncode == 0, done.stderr
    vault = world.state / "vault"
    owner = pwd.getpwnam(supervisor.USERS["vault"])
    assert mode(vault) == 0o700 and vault.stat().st_uid == owner.pw_uid
    assert mode(vault / "key-1.secret") == 0o400 and mode(vault / "tokens.sqlite3") == 0o600
    assert {p.stat().st_uid for p in vault.iterdir()} == {owner.pw_uid}
    world.start()
    try:
        now = world.read_api()
        assert settled(now["card"]) == settled(world.seen["card"]) and now["card"]["card"]["owed_total"] == 1
        assert now["rollups"] == world.seen["rollups"] and now["rollups"]["rollups"]
        assert now["me"]["user"] == world.seen["me"]["user"]
        assert [a["address"] for a in now["me"]["accounts"]] == [OWNER]
        assert now["dashboard"] == (200, True)  # the same browser session sees its dashboard
        assert world.seen["dashboard"] == (200, True)
        assert world.vault_get() == {"ok": True}  # the restored token opens and the provider takes it
        refused = world.cli("restore", "--force", str(whole))
        assert refused.returncode == 1 and "the service is running" in refused.stderr
    finally:
        world.stop()


def test_restore_needs_the_keys_kept_apart_and_finds_them_with_keys(world: World, backups: tuple[Path, Path]):
    apart, _ = backups
    world.wipe()
    refused = world.cli("restore", str(apart))
    assert refused.returncode == 1 and "private key of key 1" in refused.stderr and "--keys" in refused.stderr
    assert not world.state.exists(), "a refused restore touched the state"
    done = world.cli("restore", "--keys", str(world.base / "keys"), str(apart))
    assert done.returncode == 0, done.stderr
    assert "users sign in again" in done.stderr  # web's cookie key stayed out, with the private keys
    opened, counts = asyncio.run(token_store.opened(world.state / "vault"))
    assert list(opened) == [str(world.account)] and counts == {1: 1}


def test_restore_refuses_a_target_that_is_not_empty_unless_forced(world: World, backups: tuple[Path, Path]):
    apart, whole = backups
    if not (world.state / "vault" / "keyset.json").exists():
        assert world.cli("restore", "--keys", str(world.base / "keys"), str(apart)).returncode == 0
    before = (world.state / "vault").stat().st_ino
    refused = world.cli("restore", str(whole))
    assert refused.returncode == 1 and "not empty" in refused.stderr and "--force" in refused.stderr
    assert (world.state / "vault").stat().st_ino == before
    forced = world.cli("restore", "--force", str(whole))
    assert forced.returncode == 0, forced.stderr
    assert (world.state / "vault").stat().st_ino != before  # a new directory, renamed into place
    assert not list(world.state.glob(".vault.*")) and not list(world.state.glob(".restore-*"))


def damaged(source: Path, target: Path, how: str) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    if how == "partial":
        (target / "manifest.json").unlink()
    elif how == "missing dump":
        (target / "database.pgdump").unlink()
    elif how == "flipped byte":
        data = bytearray((target / "tokens.sqlite3").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (target / "tokens.sqlite3").write_bytes(bytes(data))
    elif how == "newer schema":
        manifest["schema"]["migrations"].append("999_from_the_future")
        (target / "manifest.json").write_text(json.dumps(manifest))
    elif how == "wrong kind":
        manifest["files"]["keyset.json"] = "trust me"
        (target / "manifest.json").write_text(json.dumps(manifest))
    elif how == "not json":
        (target / "manifest.json").write_text("{")
    return target


@pytest.mark.parametrize("how, said", [
    ("partial", "has no manifest.json"), ("missing dump", "partial backup: database.pgdump is missing"),
    ("flipped byte", "tokens.sqlite3 is damaged"), ("newer schema", "newer than this InboxLens knows"),
    ("not json", "is damaged (not JSON)"), ("wrong kind", "a field is missing or of the wrong kind")])
def test_restore_refuses_a_damaged_partial_or_newer_backup_before_touching_anything(
        world: World, backups: tuple[Path, Path], how: str, said: str):
    _, whole = backups
    if world.state.exists():
        world.wipe()
    bad = damaged(whole, world.base / f"bad-{how.replace(' ', '-')}", how)
    refused = world.cli("restore", str(bad))
    assert refused.returncode == 1, refused.stdout
    assert said in refused.stderr and "Traceback" not in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert not world.state.exists()


def test_backup_and_restore_are_refused_to_other_users(world: World, backups: tuple[Path, Path]):
    _, whole = backups
    other = ensure_user("inboxlens-t-other")
    for args in (["backup", str(world.base / "by-other")], ["restore", str(whole)]):
        done = subprocess.run([sys.executable, "-m", "inboxlens", *args], env=world.service.env, cwd="/",
                              user=other.pw_uid, group=other.pw_gid, capture_output=True, text=True, timeout=60)
        assert done.returncode == 77, done.stderr
        assert "not permitted" in done.stderr and "vault.admin_uid" in done.stderr
        assert len(done.stderr.splitlines()) == 1
    assert not (world.base / "by-other").exists()


@pytest.mark.skipif(not shutil.which("setpriv"), reason="drops capabilities with setpriv")
def test_root_without_capabilities_gets_one_line_too(world: World, backups: tuple[Path, Path]):
    """As systemd's sandbox leaves root: no override of the vault's and PostgreSQL's modes."""
    apart, _ = backups
    if not (world.state / "vault" / "keyset.json").exists():
        assert world.cli("restore", "--force", "--keys", str(world.base / "keys"), str(apart)).returncode == 0
    for args in (["backup", str(world.base / "by-capless")], ["restore", "--force", str(apart)]):
        done = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "inboxlens",
                               *args], env=world.service.env, cwd="/", capture_output=True, text=True, timeout=60)
        assert done.returncode == 77, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1 and "root" in done.stderr
    assert not (world.base / "by-capless").exists() and not list(world.base.glob(".by-capless*"))


def test_backup_of_a_missing_state_says_so(tmp_path: Path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "INBOXLENS_STATE_DIR": str(tmp_path / "none"),
           "INBOXLENS_RUNTIME_DIR": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, "-m", "inboxlens", "backup", str(tmp_path / "b")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "nothing to back up" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "b").exists()
