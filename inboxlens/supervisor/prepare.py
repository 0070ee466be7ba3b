"""``python -m inboxlens.supervisor.prepare [--config FILE]``: the once-per-start root work before ``serve``.

Privilege: full root, run by the systemd unit as ``ExecStartPre=+`` (outside its sandbox and
capability bounding set). It finds or creates the system users and gives each directory its
owner and mode (chown, chmod: CAP_CHOWN, CAP_FOWNER), then exits. ``serve`` itself then runs
without those capabilities and only checks the result. Started as root outside systemd,
``serve`` does this step itself.
Untrusted input: none; it reads the config file.
Writes: directories under ``state_dir`` and ``runtime_dir``; the owner of the vault's key files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inboxlens.config import loader as config_loader
from inboxlens.errors import ConfigError, InboxLensError
from inboxlens.supervisor.plan import check_reachable, make_plan, prepare_directories

EX_CONFIG = 78  # sysexits.h, as the inboxlens command


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inboxlens.supervisor.prepare",
                                description="make and hand over the directories 'inboxlens serve' uses (root)")
    p.add_argument("--config", type=Path, help="the config file, as given to 'inboxlens serve'")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("inboxlens: prepare is for root (serve prepares its own directories in development mode)",
              file=sys.stderr)
        return 1
    try:
        config = config_loader.load(args.config)
    except ConfigError as e:
        print(f"inboxlens: configuration error: {e}", file=sys.stderr)
        return EX_CONFIG
    try:
        plan = make_plan()
        check_reachable(plan)
        prepare_directories(config, plan)
    except (InboxLensError, OSError) as e:
        print(f"inboxlens: cannot prepare the directories: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
