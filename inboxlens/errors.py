"""Every exception InboxLens raises on purpose derives from one root.

    InboxLensError
    ├── ConfigError             the operator's mistake: a bad key, value or path in config
    ├── KeysetError             the key files: missing, unreadable, wrong mode, unknown key id
    ├── SealedTokenError        a sealed token cannot be opened (one opaque message, on purpose)
    ├── StartFailed             the service cannot start
    │   └── StartError              a child cannot start with what it was given (exit 78, not retried)
    ├── DrainExpired            a stopping child's in-flight work outlived its drain deadline
    ├── PgError *               the embedded or configured PostgreSQL cannot be used
    ├── MetricsUnavailable *    the world's fault: the metrics store cannot be reached or timed out
    ├── AccountNotFound *       the caller's mistake: it named an account the metrics store does not have
    ├── BackupError *           a backup cannot be made or restored (``inboxlens backup``, ``restore``)
    ├── LeaseLost *             the world's doing: another harvest process holds the account's lease now
    ├── MailError *             talking to an IMAP server
    │   ├── MailServerError *       the world's fault: unreachable, failed, broke the protocol or a limit
    │   └── AuthenticationRefused * the server refused our XOAUTH2 login (the token, or the account)
    └── VaultError              talking to the vault
        ├── VaultUnavailable *  the world's fault: no socket, connection lost, timed out
        ├── ProtocolError       a frame broke the protocol (either side)
        └── VaultRefused        the vault answered with an error code (``.code``)
            ├── NotPermitted        the caller's uid/pid may not run that operation
            ├── BadRequest          the caller sent a malformed or unknown request
            ├── UnknownAccount      no token stored for that account
            ├── ReauthRequired      the provider said invalid_grant: the user must reconnect
            ├── ProviderUnavailable the provider failed transiently; try again later
            ├── ProviderRejected    the provider refused our client (id/secret) or answered nonsense
            ├── CannotOpen          the sealed token cannot be opened (opaque)
            └── Conflict            the operation conflicts with state (e.g. revoking a key in use)

``*``: in ``inboxlens.service_errors`` (the vault never loads it). No message carries a token, key or secret.
"""

from __future__ import annotations


class InboxLensError(Exception):
    """Root of every deliberate InboxLens error."""


class ConfigError(InboxLensError):
    """The configuration (file, environment or CLI) is wrong; the message names the key."""


class KeysetError(InboxLensError):
    """The vault's key files are missing, unreadable or inconsistent."""


class SealedTokenError(InboxLensError):
    """A sealed token is corrupted or not intended for this key and account."""

    def __init__(self) -> None:
        super().__init__("sealed token corrupted or not intended for this key and account")


class StartFailed(InboxLensError):
    """The service cannot start; the message says why."""


class StartError(StartFailed):
    """A child cannot start with what it was given; the message says why, without secrets."""


class DrainExpired(InboxLensError):
    """A stopping child's in-flight work did not finish within its drain deadline."""


class VaultError(InboxLensError):
    """Talking to the vault failed."""


class ProtocolError(VaultError):
    """A frame violated the vault protocol."""


class VaultRefused(VaultError):
    """The vault answered with an error code."""

    code = "error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class NotPermitted(VaultRefused):
    code = "not_permitted"


class BadRequest(VaultRefused):
    code = "bad_request"


class UnknownAccount(VaultRefused):
    code = "unknown_account"


class ReauthRequired(VaultRefused):
    code = "reauth_required"


class ProviderUnavailable(VaultRefused):
    code = "provider_unavailable"


class ProviderRejected(VaultRefused):
    code = "provider_rejected"


class CannotOpen(VaultRefused):
    code = "cannot_open"


class Conflict(VaultRefused):
    code = "conflict"
