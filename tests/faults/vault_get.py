"""Ask the service's vault for one account, as a harvest (or web) caller, and say only how it went.

    python -m tests.faults.vault_get SOCKET ACCOUNT get|token_state

Run under the harvest (get) or web (token_state) uid. Prints one JSON line: {"ok": true} or
{"state": "..."} or {"error": code} or {"unavailable": class}; never a token.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from inboxlens.errors import VaultRefused
from inboxlens.service_errors import VaultUnavailable
from inboxlens.vault.client import VaultClient


async def main(socket: Path, account: str, op: str) -> None:
    try:
        async with VaultClient(socket, timeout=30) as client:
            if op == "get":
                token = await client.get(account)
                print(json.dumps({"ok": bool(token.token)}), flush=True)
            else:
                print(json.dumps({"state": await client.token_state(account)}), flush=True)
    except VaultRefused as e:
        print(json.dumps({"error": e.code}), flush=True)
    except (VaultUnavailable, OSError) as e:
        print(json.dumps({"unavailable": type(e).__name__}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]))
