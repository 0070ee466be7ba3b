"""The ``inboxlens`` command: serve, keys, migrate, doctor, harvest, backup, restore, demo.

Exit status: 0 done; 1 the operation failed (the message says why); 2 a usage
error; 77 not permitted (another user's state: the message says who may); 78 the
configuration is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import sys
from pathlib import Path
from typing import Callable

from inboxlens.config import loader as config_loader
from inboxlens.child import setup_logging
from inboxlens.config.schema import Config
from inboxlens.errors import ConfigError, InboxLensError
from inboxlens.service_errors import MetricsUnavailable

EX_CONFIG = 78
EX_NOPERM = 77
REWRAP_BATCH = 100  # tokens per rewrap request; the vault's admin code loads only for 'keys'


def _version() -> str:
    try:
        return importlib.metadata.version("inboxlens")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _key_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a key id (a whole number from 1); see 'inboxlens keys list'")
    return int(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("a port is a whole number from 1 to 65535")
    return int(text)


def _batch(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError("batch is a whole number from 1 to 1000")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inboxlens", description="Self-hosted augmented inbox.")
    p.add_argument("--version", action="version", version=f"inboxlens {_version()}")
    p.add_argument("--config", type=Path, help="TOML config file (default: $INBOXLENS_CONFIG, else built-in defaults)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the service (supervisor, vault, web, harvest)")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("doctor", help="check configuration, directories, keys and the running vault")
    hv = sub.add_parser("harvest", help="sync mailboxes now, in the foreground")
    hv.add_argument("--once", action="store_true", required=True, help="one sync of the due accounts (or ACCOUNT)")
    hv.add_argument("account", nargs="?", type=_key_id, metavar="ACCOUNT", help="an account id (any state of due-ness)")
    k = sub.add_parser("keys", help="manage the vault's keyset (online or offline)")
    ks = k.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = ks.add_parser("init", help="create the keyset (offline)")
    init.add_argument("--if-missing", action="store_true", help="do nothing if a keyset exists")
    ks.add_parser("list", help="keys with state, creation time and how many tokens each seals")
    ks.add_parser("status", help="tokens by state and the latest refresh failures and recoveries")
    ks.add_parser("rotate", help="add a new primary key")
    rw = ks.add_parser("rewrap", help="re-seal every token under the primary key (resumable)")
    rw.add_argument("--batch", type=_batch, default=REWRAP_BATCH, help="tokens per request (1-1000)")
    rv = ks.add_parser("revoke", help="destroy a key's private key once no token needs it")
    rv.add_argument("key_id", type=_key_id)
    ex = ks.add_parser("export", help="write this node's keyset and web's cookie-signing key to a new DIR (root)")
    ex.add_argument("directory", type=Path, metavar="DIR")
    im = ks.add_parser("import", help="install another node's export here (root; this node's vault stopped)")
    im.add_argument("directory", type=Path, metavar="DIR")
    im.add_argument("--force", action="store_true", help="replace a keyset or cookie key that is not this node's")
    bk = sub.add_parser("backup", help="write the database, token store and keyset (public part) to a new DIR")
    bk.add_argument("directory", type=Path, metavar="DIR")
    bk.add_argument("--include-private-keys", action="store_true",
                    help="also the vault's private keys (DIR/private, 0400): the backup then opens every token")
    rs = sub.add_parser("restore", help="put a backup back (the service stopped; checks everything first)")
    rs.add_argument("directory", type=Path, metavar="DIR")
    rs.add_argument("--force", action="store_true", help="replace a target that is not empty")
    rs.add_argument("--keys", type=Path, metavar="KEYDIR", help="where the private keys kept apart are")
    dm = sub.add_parser("demo", help="run the service on a generated mailbox, in a state of its own")
    dm.add_argument("--port", type=_port, help="the web port (default: web.port)")
    dm.add_argument("--remove", action="store_true", help="delete the demo and all its data")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging("inboxlens")
    try:
        config = config_loader.load(args.config)
        setup_logging("inboxlens", config.log_level, config.log_format)
        return COMMANDS[args.command](config, args)
    except ConfigError as e:
        print(f"inboxlens: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    except InboxLensError as e:
        print(f"inboxlens: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("inboxlens: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # another user's state: say who may run it, not where Python was
        where = f" ({e.filename})" if e.filename else ""
        print(f"inboxlens {args.command}: {e.strerror or e}{where}; run it as root, the user the service's "
              "state belongs to", file=sys.stderr)
        return EX_NOPERM if isinstance(e, PermissionError) else 1


def _serve(config: Config, args: argparse.Namespace) -> int:
    from inboxlens.supervisor import serve
    return serve(config)


def _keys(config: Config, args: argparse.Namespace) -> int:
    from inboxlens.vault import admin as keys
    if args.action == "init":
        return keys.init(config, args.if_missing)
    if args.action in ("export", "import"):
        from inboxlens.vault import nodekeys
        return nodekeys.export(config, args.directory) if args.action == "export" else \
            nodekeys.import_(config, args.directory, args.force)
    actions: dict[str, Callable[[keys.Admin], object]] = {
        "list": keys.list_keys,
        "status": keys.show_status,
        "rotate": keys.rotate,
        "rewrap": lambda a: keys.rewrap(a, args.batch),
        "revoke": lambda a: keys.revoke(a, args.key_id),
    }
    return keys.run(config, actions[args.action])  # type: ignore[arg-type]


def _migrate(config: Config, args: argparse.Namespace) -> int:
    from inboxlens.metrics.factory import migrate_metrics
    from inboxlens.supervisor.database import open_database
    from inboxlens.supervisor.plan import make_plan, prepare_directories

    # The driver logs each failed contact point with a traceback; our one line says it all.
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)

    async def go() -> None:
        plan = make_plan()
        if not config.database.dsn:
            prepare_directories(config, plan)
        _, server = await open_database(config, plan)
        if server is not None:  # a running service's server stays up: we only attached to it
            await asyncio.to_thread(server.release)
        metrics = await migrate_metrics(config)
        if metrics:
            print(f"{metrics}: schema is up to date")

    try:
        asyncio.run(go())
    except MetricsUnavailable as e:
        print(f"inboxlens migrate: the metrics store: {e}", file=sys.stderr)
        return 1
    print("database schema is up to date")
    return 0


def _doctor(config: Config, args: argparse.Namespace) -> int:
    from inboxlens import doctor
    return doctor.run(config)


def _harvest(config: Config, args: argparse.Namespace) -> int:
    from inboxlens.harvest.once import harvest_once
    return harvest_once(config, args.account)


def _backup(config: Config, args: argparse.Namespace) -> int:
    from inboxlens.backup import backup
    return backup(config, args.directory, args.include_private_keys)


def _demo(config: Config, args: argparse.Namespace) -> int:
    from inboxlens.demo import run
    return run(config, args.port, args.remove)


def _restore(config: Config, args: argparse.Namespace) -> int:
    from inboxlens.restore import restore
    return restore(config, args.directory, args.force, args.keys)


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "serve": _serve, "keys": _keys, "migrate": _migrate, "doctor": _doctor, "harvest": _harvest,
    "backup": _backup, "restore": _restore, "demo": _demo}

if __name__ == "__main__":
    sys.exit(main())
