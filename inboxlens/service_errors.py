"""The branches of the ``inboxlens.errors`` tree that only the other processes raise.

The database, metrics, harvest and the vault's callers raise these; the vault raises
none of them, so it never loads this module. The tree, whole, is drawn in ``errors``.
"""

from __future__ import annotations

import traceback

from inboxlens.errors import (BadRequest, CannotOpen, Conflict, InboxLensError, NotPermitted, ProviderRejected,
                              ProviderUnavailable, ReauthRequired, UnknownAccount, VaultError, VaultRefused)


class PgError(InboxLensError):
    """PostgreSQL (embedded or configured) could not be started, reached or migrated."""


class MetricsUnavailable(InboxLensError):
    """The world's fault: the metrics store's cluster is unreachable, overloaded or timed out."""


class AccountNotFound(InboxLensError, LookupError):
    """The caller named an account the metrics store has nothing for (or that was deleted meanwhile)."""


class BackupError(InboxLensError):
    """A backup cannot be made, or a backup directory cannot be restored; the message says why."""


class LeaseLost(InboxLensError):
    """Another harvest process holds the account now; stop working it."""


class MailError(InboxLensError):
    """Talking to an IMAP server failed; the message names the server (host:port) and the cause."""


class MailServerError(MailError):
    """The world's fault: the IMAP server is unreachable, failed, or broke the protocol or a limit; try later."""


class AuthenticationRefused(MailError):
    """The IMAP server refused the XOAUTH2 login."""


class VaultUnavailable(VaultError):
    """The vault could not be reached or did not answer in time."""


# The client turns an answer's error code back into its exception.
VAULT_ERRORS: dict[str, type[VaultRefused]] = {
    cls.code: cls
    for cls in (NotPermitted, BadRequest, UnknownAccount, ReauthRequired,
                ProviderUnavailable, ProviderRejected, CannotOpen, Conflict)
}


def traceback_without_message(error: BaseException) -> str:
    """Where an unexpected error happened, without what it says: web and harvest hold tokens,
    form fields and header data, and an exception's text (a library's, say) may quote any of them."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    return f"{type(error).__name__}\nTraceback (most recent call last; the message is left out):\n{frames}"
