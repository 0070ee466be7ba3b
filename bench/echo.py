"""The baseline server: a bare asyncio Unix-socket echo with the vault's framing, in its own process.

It reads 4-byte-length + JSON frames with ``inboxlens.vault.protocol``, decodes each request
and answers a JSON object shaped and sized like the vault's answer to ``get``, so that a
``VaultClient`` drives it unchanged. No roles, no validation, no timeouts: the ceiling a
vault on stock asyncio could reach.

Child: ``python -m bench.echo <socket>``; prints ``ready``, serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from inboxlens.vault import protocol

START_TIMEOUT = 20.0
ACCESS_TOKEN = "e" * 43  # the test provider's access tokens are token_urlsafe(32): 43 characters


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            header = await reader.readexactly(protocol.LENGTH.size)
            request = protocol.decode_body(await reader.readexactly(protocol.check_length(header, protocol.DEFAULT_MAX_FRAME)))
            result = {"access_token": ACCESS_TOKEN, "expires_at": time.time() + 3600, "op": request["op"]}
            writer.write(protocol.encode(protocol.ok(request.get("id"), result)))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(path: Path) -> None:
    server = await asyncio.start_unix_server(answer, path=path, limit=64 * 1024)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    os.write(1, b"ready\n")
    await stdin.read()  # until the parent closes our stdin
    server.close()


class EchoProcess:
    """Starts and stops the echo child, like ``tests.support.vaultproc`` does the vault."""

    def __init__(self, socket: Path, env: dict[str, str] | None = None) -> None:
        self.socket = socket
        self.env = env  # None: this process's environment
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.echo", str(self.socket),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parent.parent, env=self.env)
        assert self.process.stdout is not None
        if await asyncio.wait_for(self.process.stdout.readline(), START_TIMEOUT) != b"ready\n":
            raise RuntimeError(f"echo server did not start (exit {await self.process.wait()})")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            await asyncio.wait_for(self.process.wait(), 10)


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
