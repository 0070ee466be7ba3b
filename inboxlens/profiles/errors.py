"""What goes wrong reading contacts: a branch of the one tree, under ``errors.InboxLensError``.

    InboxLensError
    └── ContactsError           reading contacts: a CardDAV address book or a .vcf file
        ├── AddressBookRefused      the server refused the user name or app password (401, 403)
        ├── AddressBookUnavailable  the world's fault: unreachable, timed out, failing (5xx); try later
        ├── NotAnAddressBook        the user's mistake: the URL is not a CardDAV address book (or not https)
        ├── AddressBookBroken       the server's fault: malformed XML, an answer over a limit or not per RFC 6352
        └── BadVCard                a card or .vcf file cannot be read (``.reason``); a file is refused whole

Drawn here rather than in ``errors``' tree: the vault loads ``errors``, whose closure is held at
its measured ceiling (tests/test_import_closure.py), and never reads a contact. No message
carries a password, a path, a user name or an address: an address book's URL often holds its
owner's address, so messages name the server by scheme, host and port.
"""

from __future__ import annotations

from inboxlens.errors import InboxLensError


class ContactsError(InboxLensError):
    """Reading contacts failed; the message says why and names no path, user, password or address."""


class AddressBookRefused(ContactsError):
    """The CardDAV server refused the user name or app password (HTTP 401 or 403)."""


class AddressBookUnavailable(ContactsError):
    """The world's fault: the CardDAV server is unreachable, timed out or failing; try later."""


class NotAnAddressBook(ContactsError):
    """The user's mistake: the URL answers, but not as a CardDAV address book (or is not https)."""


class AddressBookBroken(ContactsError):
    """The server's fault: its answer is malformed XML, over a limit, or not what RFC 6352 says."""


class BadVCard(ContactsError, ValueError):
    """A vCard, or a whole .vcf file, cannot be read; ``reason`` says why without quoting it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
