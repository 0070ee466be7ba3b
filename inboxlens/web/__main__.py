"""inboxlens-web: the process that meets browsers (onboarding, login, REST API).

Privilege: its own uid (``inboxlens-web``) with the shared ``inboxlens`` group,
which lets it reach the vault's socket. It holds the vault's public key (asked
for over the socket) and the OAuth client secrets for the code exchange, never a
private key: it can seal a refresh token but never open one.
Untrusted input: HTTP requests on ``web.host:web.port`` (127.0.0.1:8080 by default).
Writes: HTTP answers; log lines on stderr.
Config keys: ``web.*``, ``providers.*``, ``database.dsn``, ``runtime_dir``.
Today it serves ``/healthz``; onboarding and the API build on it.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .. import child
from ..config import from_dict
from ..errors import VaultError
from ..vault.client import VaultClient

log = logging.getLogger("inboxlens.web")
VAULT = web.AppKey("vault", VaultClient)
HEALTH_VAULT_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """Liveness plus whether the vault answers this process (it must, to onboard anyone)."""
    try:
        key = await request.app[VAULT].public_key()
    except VaultError as e:
        return web.json_response({"status": "degraded", "vault": type(e).__name__}, status=503)
    return web.json_response({"status": "ok", "vault": "ok", "vault_key_id": key.key_id})


def make_app(vault: VaultClient) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[VAULT] = vault
    app.router.add_get("/healthz", healthz)
    return app


async def main(channel: child.Channel) -> None:
    config = from_dict(channel.config["config"])
    vault = VaultClient(config.vault_socket, timeout=HEALTH_VAULT_TIMEOUT)
    runner = web.AppRunner(make_app(vault), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.web.host, config.web.port).start()
    except OSError as e:
        raise child.StartError(f"cannot listen on {config.web.host}:{config.web.port} ({e.strerror})") from None
    log.info("listening on http://%s:%d", config.web.host, config.web.port)
    channel.ready()
    async for _ in channel.messages():
        pass  # web takes no control messages; the loop ends when the supervisor goes
    await runner.cleanup()
    await vault.close()


if __name__ == "__main__":
    child.run("inboxlens-web", main)
