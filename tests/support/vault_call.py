"""Run vault client calls from a separate process (tests start it under other uids).

    python -m tests.support.vault_call SOCKET '[["op", {"arg": ...}], ...]'

Prints one JSON line per call: {"ok": result} or {"error": code} or {"unavailable": text}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

from inboxlens.errors import VaultRefused
from inboxlens.service_errors import VaultUnavailable
from inboxlens.vault.client import VaultClient


async def run(socket: Path, calls: list[tuple[str, dict[str, Any]]]) -> None:
    async with VaultClient(socket, timeout=10) as client:
        for op, args in calls:
            if op == "seal_and_set":  # seal with the vault's public key, as web does
                key = await client.public_key()
                token = args.pop("refresh_token")
                sealed = key.seal(args["account_id"], args["provider"], token)
                args = {**args, "sealed": base64.b64encode(sealed).decode()}
                op = "set"
            try:
                print(json.dumps({"ok": await client.call(op, **args)}), flush=True)
            except VaultRefused as e:
                print(json.dumps({"error": e.code}), flush=True)
            except VaultUnavailable as e:
                print(json.dumps({"unavailable": str(e)}), flush=True)


if __name__ == "__main__":
    asyncio.run(run(Path(sys.argv[1]), json.loads(sys.argv[2])))
