"""What the supervisor runs, as whom, where: system users, directories, each child's slice.

Root mode: one system user per child (``inboxlens-vault``, ``-web``, ``-harvest``,
``-db``) and the group ``inboxlens`` that web and harvest share to reach the vault's
socket. Development mode (not root): one uid for all, said loudly by ``serve``.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inboxlens import paths
from inboxlens.config import build as config_build
from inboxlens.config.schema import Config
from inboxlens.errors import StartFailed
from inboxlens.observability import snapshot_dir
from inboxlens.vault.keyset import read_key_file

USERS = {"vault": "inboxlens-vault", "web": "inboxlens-web", "harvest": "inboxlens-harvest", "db": "inboxlens-db"}


SHARED_GROUP = "inboxlens"


CHILD_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")

# Root's once-per-start work when serve itself may not chown (the systemd unit runs it in ExecStartPre=+).
PREPARE_COMMAND = "python -m inboxlens.supervisor.prepare"




@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass
class Plan:
    """Who runs as whom, decided once at start."""

    dev: bool
    identities: dict[str, Identity] = field(default_factory=dict)
    shared_gid: int | None = None

    def of(self, name: str) -> Identity | None:
        return self.identities.get(name)


def make_plan() -> Plan:
    if os.geteuid() != 0:
        return Plan(dev=True)
    shared_gid = _ensure_group(SHARED_GROUP)
    identities = {}
    for role, user in USERS.items():
        entry = _ensure_user(user)
        groups = (shared_gid,) if role in ("web", "harvest") else ()
        # The vault's primary group is the shared one, so its socket is born with the group web and
        # harvest are in: nobody has to chown it (the unit gives the supervisor no CAP_CHOWN).
        gid = shared_gid if role == "vault" else entry.pw_gid
        identities[role] = Identity(entry.pw_uid, gid, groups)
    return Plan(dev=False, identities=identities, shared_gid=shared_gid)


def _ensure_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        _run_admin(["groupadd", "--system", name], name)
        return grp.getgrnam(name).gr_gid


def _ensure_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        _run_admin(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], name)
        return pwd.getpwnam(name)


def _run_admin(command: list[str], name: str) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise StartFailed(f"cannot create system user/group {name!r} ({type(e).__name__}); create it with "
                          "'systemd-sysusers config/inboxlens.sysusers' and start again") from None


def prepare_directories(config: Config, plan: Plan) -> None:
    """Every directory the children use, with the owner and mode each needs and no more (root: needs CAP_CHOWN)."""
    if plan.dev:
        for path in (config.state_dir, config.vault_dir, paths.web_dir(config.state_dir), config.runtime_dir,
                     config.vault_socket.parent, snapshot_dir(config.runtime_dir)):
            _directory(path, 0o700, None)
        return
    for path, mode, owner in _layout(config, plan):
        _directory(path, mode, owner)
    # Keys made by 'inboxlens keys init' before the vault's user existed belong to root: hand them
    # over. Only root's own regular, singly linked files: the vault owns this directory, and a link it
    # planted (to a file of root's) must not be handed to it.
    vault = plan.identities["vault"]
    for key in config.vault_dir.iterdir():
        st = key.lstat()
        if st.st_uid == 0 and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            os.chown(key, vault.uid, vault.gid, follow_symlinks=False)


def check_directories(config: Config, plan: Plan) -> None:
    """Refuse to start unless prepare_directories has run: without CAP_CHOWN/CAP_FOWNER we cannot do it ourselves."""
    for path, mode, (uid, gid) in _layout(config, plan):
        try:
            st = path.lstat()
        except FileNotFoundError:
            st = None
        group_matters = bool(mode & 0o070)
        if st is None or not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or stat.S_IMODE(st.st_mode) != mode \
                or (group_matters and st.st_gid != gid):
            raise StartFailed(f"{path} is not prepared (want a directory, owner {uid}:{gid}, mode {mode:o}); run "
                              f"'{PREPARE_COMMAND} --config FILE' as root first (the systemd unit's ExecStartPre does)")


def _layout(config: Config, plan: Plan) -> list[tuple[Path, int, tuple[int, int]]]:
    """Root mode: each directory, its mode and owner. No setgid bits (the unit's RestrictSUIDSGID forbids them)."""
    vault, db, web = plan.identities["vault"], plan.identities["db"], plan.identities["web"]
    shared = plan.shared_gid if plan.shared_gid is not None else -1
    return [(config.state_dir, 0o755, (0, 0)), (config.runtime_dir, 0o755, (0, 0)),
            (config.vault_dir, 0o700, (vault.uid, vault.gid)),
            (paths.web_dir(config.state_dir), 0o700, (web.uid, web.gid)),  # its cookie-signing key
            (config.vault_socket.parent, 0o750, (vault.uid, shared)),
            # 0750: the supervisor reads postmaster.pid through the db group instead of CAP_DAC_READ_SEARCH
            (paths.pg_data_dir(config.state_dir), 0o750, (db.uid, db.gid)),
            (paths.pg_socket_dir(config.runtime_dir), 0o750, (db.uid, shared)),
            (snapshot_dir(config.runtime_dir), 0o750, (plan.identities["harvest"].uid, web.gid))]  # harvest writes


def join_groups(plan: Plan) -> None:
    """Root mode: the supervisor reaches the PostgreSQL socket (shared group) and data directory (db group).

    Group membership instead of CAP_DAC_READ_SEARCH, which would read every file on the machine.
    """
    if not plan.dev and plan.shared_gid is not None:
        os.setgroups([plan.shared_gid, plan.identities["db"].gid])


def check_vault_socket(config: Config, plan: Plan) -> None:
    """The vault's socket must be the vault's, in the group web and harvest are in (root mode)."""
    if plan.dev or plan.shared_gid is None:
        return
    path, vault = config.vault_socket, plan.identities["vault"]
    st = path.lstat()
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != vault.uid or st.st_gid != plan.shared_gid:
        raise StartFailed(f"{path} is not the vault's socket in group {SHARED_GROUP!r}; refusing to use it")


def _directory(path: Path, mode: int, owner: tuple[int, int] | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise StartFailed(f"{path} is a symbolic link; refusing to use it")
    if owner is not None:
        os.chown(path, *owner)
    os.chmod(path, mode)


CREDENTIAL_PREFIX = "inboxlens-key-"


def read_credentials(directory: Path | None) -> dict[int, bytes]:
    """The vault's private keys passed as systemd credentials (only we, the unit's main process, can read them)."""
    found: dict[int, bytes] = {}
    for path in sorted(directory.glob(f"{CREDENTIAL_PREFIX}*")) if directory else []:
        suffix = path.name[len(CREDENTIAL_PREFIX):]
        if suffix.isdigit():
            found[int(suffix)] = read_key_file(path, int(suffix))
    return found


def slice_for(name: str, config: Config, plan: Plan, database_dsn: str) -> dict[str, Any]:
    """Only the configuration a child needs (OpenSSH passes its children only their options)."""
    common = {"state_dir": str(config.state_dir), "runtime_dir": str(config.runtime_dir), "log_level": config.log_level,
              "log_format": config.log_format}
    if name == "vault":
        credentials = read_credentials(Path(os.environ["CREDENTIALS_DIRECTORY"])
                                       if os.environ.get("CREDENTIALS_DIRECTORY") else None)
        return {"config": {**common, "vault": config_build.to_dict(config.vault),
                           "providers": config_build.to_dict(config.providers)},
                "callers": _callers(config, plan),
                "credentials": {str(k): v.hex() for k, v in credentials.items()}}
    metrics = {"metrics": config_build.to_dict(config.metrics), "insights": config_build.to_dict(config.insights),
               "profiles": config_build.to_dict(config.profiles)}  # web adds books, harvest syncs them and looks up
    section = {"web": {"web": config_build.to_dict(config.web), **metrics,
                       # the code exchange needs the client secret; web never sees a private key
                       "providers": config_build.to_dict(config.providers)},
               # harvest needs IMAP hosts and trusted authserv-ids, never a client secret
               # harvest drains its syncs within the supervisor's stop timeout (less a margin)
               "harvest": {"harvest": config_build.to_dict(config.harvest), **metrics,
                           "supervisor": {"stop_timeout_seconds": config.supervisor.stop_timeout_seconds},
                           "providers": {n: {**config_build.to_dict(p), "client_secrets": []}
                                         for n, p in config.providers.items()}}}[name]
    return {"config": {**common, **section, "database": {"dsn": database_dsn}}}


def _callers(config: Config, plan: Plan) -> dict[str, Any]:
    admins = [config.vault.admin_uid] if config.vault.admin_uid >= 0 else []
    if plan.dev:
        return {"shared_uid": os.getuid(), "admin_uids": admins + [os.getuid()]}
    return {"web_uids": [plan.identities["web"].uid], "harvest_uids": [plan.identities["harvest"].uid],
            "admin_uids": admins}


def check_reachable(plan: Plan) -> None:
    """Children run as other users: they must be able to reach the interpreter and our code."""
    if plan.dev:
        return
    for target in (Path(sys.executable).resolve(), Path(__file__).resolve().parent.parent):
        for path in [*reversed(target.parents), target]:
            if path.is_dir() and not path.stat().st_mode & 0o001:
                raise StartFailed(f"{path} is not searchable by other users, so the children cannot run "
                                  f"{target}; install InboxLens where system users can read it (e.g. /opt/inboxlens, "
                                  "with Debian's /usr/bin/python3.11)")


def child_environment() -> dict[str, str]:
    env = {k: os.environ[k] for k in CHILD_ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    return env
