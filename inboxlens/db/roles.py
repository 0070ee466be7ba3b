"""Database roles for the children: what each may do, table by table, from one declared table.

``TABLES`` names every table and view of the schema and, for each, what web and what
harvest may do, written as the privilege list of a GRANT (``"SELECT, UPDATE (status)"``;
empty: nothing). ``SEQUENCES`` does the same for the sequences we create ourselves (the
ones behind identity columns need no grant: an INSERT's default uses them). Nothing else
gets a right: the migrations' owner (the superuser) keeps DDL, and ``schema_migrations``,
users' sessions, API tokens and the audit trail are out of harvest's reach.

A relation with no entry stops ``apply_grants`` (and ``tests/db/test_roles_functional.py``
fails) until someone decides who may touch it: a new table must never be granted by
accident, nor forgotten and break a child at run time.

Embedded, root mode: peer authentication lets each child log in only as its own OS
user's role; ``apply_grants`` runs at every start and ``inboxlens migrate``, after the
migrations. With a configured DSN an administrator grants the same, see
``grant_statements``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import asyncpg

from inboxlens.service_errors import PgError

Role = Literal["web", "harvest"]
ROLES: tuple[Role, ...] = ("web", "harvest")


@dataclass(frozen=True)
class Access:
    """What web and what harvest may do on one relation, as GRANT privilege lists."""

    web: str
    harvest: str

    def of(self, role: Role) -> str:
        return self.web if role == "web" else self.harvest


_METRICS_BY_HARVEST = Access(web="SELECT, DELETE",  # reads insights; forget_account deletes an account's
                             harvest="SELECT, INSERT, UPDATE")  # harvest folds raw rows into them
_VIEW = Access(web="SELECT", harvest="")

TABLES: dict[str, Access] = {
    # Accounts and identity: web's. Harvest reads what it needs to sync an account and
    # writes only its sync state; never the owner (user_id), users, sessions or tokens.
    "users": Access(web="SELECT, INSERT, UPDATE (email)", harvest=""),
    "mail_accounts": Access(
        web="SELECT, INSERT, UPDATE, DELETE",
        harvest="SELECT (id, address, provider, time_zone, status, public_profiles), UPDATE (status, last_sync_at)"),
    "web_sessions": Access(web="SELECT, INSERT, UPDATE, DELETE", harvest=""),
    "api_tokens": Access(web="SELECT, INSERT, UPDATE (last_used_at), DELETE", harvest=""),
    "extension_handoffs": Access(web="SELECT, INSERT, DELETE", harvest=""),  # web/handoff.py's one-time codes
    "connect_pending": Access(web="SELECT, INSERT, UPDATE (created_at), DELETE", harvest=""),  # set, not yet committed
    "book_pending": Access(web="SELECT, INSERT, UPDATE (created_at), DELETE", harvest=""),  # the same, for books
    # Web may rewrite a detail (a disconnected mailbox's address becomes a keyed hash), never delete.
    "audit_events": Access(web="SELECT, INSERT, UPDATE (detail)", harvest=""),
    "schema_migrations": Access(web="", harvest=""),  # the migrations' owner only
    # Harvest's work queue: web shows it and asks for an early run, nothing more.
    "harvest_state": Access(
        web="SELECT, INSERT (account_id, next_run_at), UPDATE (next_run_at)",
        harvest="SELECT, INSERT (account_id), UPDATE (next_run_at, lease_owner, lease_expires_at, failures, "
                "last_error, first_sync_done, messages_seen, seen_authserv_id)"),
    "mailbox_checkpoints": Access(web="", harvest="SELECT, INSERT, UPDATE (uidvalidity, last_uid)"),
    # Metrics: harvest writes them, web reads them; both sweep expired raw rows.
    "raw_headers": Access(web="SELECT, DELETE", harvest="SELECT, INSERT, DELETE"),
    "message_index": _METRICS_BY_HARVEST,
    "message_replies": _METRICS_BY_HARVEST,
    # The fold writes a message's parent keys once and reads them to match replies; web reads
    # them for owed and awaiting, and forget_account deletes them.
    "reply_parents": Access(web="SELECT, DELETE", harvest="SELECT, INSERT"),
    "metrics_state": _METRICS_BY_HARVEST,
    "account_daily": _METRICS_BY_HARVEST,
    "correspondent_daily": _METRICS_BY_HARVEST,
    "contacts": _METRICS_BY_HARVEST,
    "sender_domains": _METRICS_BY_HARVEST,
    "auth_flags": _METRICS_BY_HARVEST,
    # Profiles (issue 17): web adds and removes books and imports .vcf files; harvest syncs
    # the CardDAV books and looks up public profiles. Neither writes the other's queue state.
    "address_books": Access(web="SELECT, INSERT, UPDATE (label), DELETE",
                            harvest="SELECT (id, user_id, kind, url, username, account_id)"),
    "address_book_sync": Access(
        web="SELECT, INSERT (book_id, next_run_at), UPDATE (next_run_at)",
        harvest="SELECT, UPDATE (next_run_at, lease_owner, lease_expires_at, sync_token, etags, last_sync_at, "
                "last_error, failures, cards)"),
    "profile_cards": Access(web="SELECT, INSERT, DELETE", harvest="SELECT, INSERT, UPDATE, DELETE"),
    "profile_addresses": Access(web="SELECT, INSERT, DELETE", harvest="SELECT, INSERT, DELETE"),
    "public_profiles": Access(web="SELECT, DELETE", harvest="SELECT, INSERT, UPDATE, DELETE"),
    "profile_versions": Access(web="SELECT, INSERT, UPDATE (version)", harvest="SELECT, INSERT, UPDATE (version)"),
    "account_weekly": _VIEW,
    "account_monthly": _VIEW,
    "correspondent_weekly": _VIEW,
    "correspondent_monthly": _VIEW,
}

SEQUENCES: dict[str, Access] = {
    "contacts_version_seq": Access(web="", harvest="USAGE"),  # each fold stamps the contacts it touched
}

_PRIVILEGE = re.compile(r"(SELECT|INSERT|UPDATE|DELETE|USAGE)(?: \(([a-z_]+(?:, [a-z_]+)*)\))?")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
ALL_COLUMNS = ("*",)


def privileges(spec: str) -> dict[str, tuple[str, ...]]:
    """``"SELECT, UPDATE (a, b)"`` as {"SELECT": ("*",), "UPDATE": ("a", "b")}; refuses anything else."""
    found: dict[str, tuple[str, ...]] = {}
    for part in re.split(r",\s*(?![^()]*\))", spec) if spec else []:
        match = _PRIVILEGE.fullmatch(part.strip())
        if match is None or match[1] in found:
            raise PgError(f"db.roles: {spec!r} is not a privilege list like 'SELECT, UPDATE (a, b)'")
        found[match[1]] = tuple(match[2].split(", ")) if match[2] else ALL_COLUMNS
    return found


def grant_statements(role: Role, name: str) -> list[str]:
    """The GRANTs that give role (logged in as ``name``) its rights, e.g. for a configured DSN."""
    quoted = _quote(name)
    statements = [f"GRANT USAGE ON SCHEMA public TO {quoted}"]
    for kind, declared in (("TABLE", TABLES), ("SEQUENCE", SEQUENCES)):
        for relation, access in sorted(declared.items()):
            if access.of(role):
                privileges(access.of(role))  # validated before it reaches SQL
                statements.append(f"GRANT {access.of(role)} ON {kind} {_quote(relation)} TO {quoted}")
    return statements


async def undeclared(connection: asyncpg.Connection) -> list[str]:
    """Tables, views and sequences of schema public with no entry here (identity sequences excepted)."""
    rows = await connection.fetch(
        """SELECT c.relname, c.relkind::text AS relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype = 'i')""")
    return sorted(r["relname"] for r in rows
                  if r["relname"] not in (SEQUENCES if r["relkind"] == "S" else TABLES))


async def apply_grants(dsn: str, logins: dict[Role, str]) -> None:
    """Give each role exactly its declared rights (creating it if needed), in one transaction."""
    connection = await asyncpg.connect(dsn)
    try:
        missing = await undeclared(connection)
        if missing:
            raise PgError(f"no rights declared for {', '.join(missing)}: add an entry for each to TABLES or "
                          "SEQUENCES in inboxlens/db/roles.py (what web and harvest may do with it)")
        async with connection.transaction():
            for role, name in logins.items():
                await _reset(connection, name)
                for statement in grant_statements(role, name):
                    await connection.execute(statement)
    finally:
        await connection.close()


async def _reset(connection: asyncpg.Connection, name: str) -> None:
    """The role exists and holds nothing in schema public (table revokes take column grants too)."""
    if not _IDENTIFIER.fullmatch(name.replace("-", "_")):
        raise PgError(f"{name!r} is not a usable role name")
    quoted = _quote(name)
    if not await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
        await connection.execute(f"CREATE ROLE {quoted} LOGIN")
    await connection.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}")
    await connection.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {quoted}")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
