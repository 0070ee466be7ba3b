"""Every CQL statement the Cassandra store prepares, by name, and its rows as typed values.

Writes of recomputed rows carry ``USING TIMESTAMP ?``: the microsecond the recomputation
started reading. Of two folds recomputing the same row at once, the one that read later
saw every index write the other saw, and its write wins whatever order they land in (see
docs/cassandra.md). Facts (index entries, raw rows) take the driver's own timestamps.
Inserts leave out ``answered`` and ``complete``: only their own UPDATEs set them, to true.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Mapping

from inboxlens.metrics.cassandra.fold import CorrespondentDay, DayRow, DomainYear, Entry, Reply, from_us
from inboxlens.metrics.cassandra.contacts import ContactMessage, ContactYear
from inboxlens.metrics.model import CheckCount, RawRow

Row = Mapping[str, Any]

_ENTRY = "sent_us, hour, direction, automated, correspondents, parent_keys, gm_thread_id, from_domain, dkim, spf, dmarc"
_RAW = ("account_id, bucket, msg_key, mailbox, uid, message_id, in_reply_to, refs, subject, from_address, from_name, "
        "to_addresses, cc_addresses, sent_us, internal_us, date_reliable, direction, automated, list_id, dkim, spf, "
        "dmarc, dkim_domains, gm_thread_id, dkim_signatures")
_STAMP = "USING TIMESTAMP ?"


def _insert(table: str, columns: str, suffix: str = "") -> str:
    marks = ", ".join("?" for _ in columns.split(","))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks}) {suffix}".strip()


STATEMENTS: dict[str, str] = {
    "put_account": _insert("accounts", "account_id, address, time_zone"),
    "account": "SELECT address, time_zone FROM accounts WHERE account_id = ?",
    "put_day": _insert("account_days", "account_id, day"),
    "days": "SELECT day FROM account_days WHERE account_id = ?",
    "put_raw": _insert("raw_rows", _RAW),
    "raw_keys": "SELECT msg_key FROM raw_rows WHERE account_id = ? AND bucket = ? AND msg_key IN ?",
    "raw": "SELECT * FROM raw_rows WHERE account_id = ? AND bucket = ?",
    "del_raw": "DELETE FROM raw_rows WHERE account_id = ? AND bucket = ? AND msg_key = ?",
    "put_index": _insert("message_index", f"account_id, msg_key, day, {_ENTRY}"),
    "index": "SELECT * FROM message_index WHERE account_id = ? AND msg_key = ?",
    "complete": "UPDATE message_index SET complete = true WHERE account_id = ? AND msg_key = ?",
    "put_day_message": _insert("day_messages", f"account_id, day, msg_key, {_ENTRY}"),
    "day_messages": "SELECT * FROM day_messages WHERE account_id = ? AND day = ?",
    "answer": "UPDATE day_messages SET answered = true WHERE account_id = ? AND day = ? AND msg_key = ?",
    "put_day_thread": _insert("day_threads", "account_id, day, msg_key, thread_key, to_me, message_id"),
    "day_threads": "SELECT msg_key, thread_key, to_me, message_id FROM day_threads WHERE account_id = ? AND day = ?",
    "put_thread_entry": _insert("thread_entries", "account_id, thread_key, direction, sent_us, msg_key"),
    "thread_latest": "SELECT sent_us, msg_key FROM thread_entries WHERE account_id = ? AND thread_key = ? "
                     "AND direction = ? LIMIT 1",
    "put_link": _insert("parent_links", "account_id, parent_key, child_key"),
    "links": "SELECT child_key FROM parent_links WHERE account_id = ? AND parent_key = ?",
    "put_thread": _insert("thread_messages", "account_id, gm_thread_id, sent_us, msg_key, day, hour, direction, "
                                             "automated, correspondents, parent_keys, from_domain"),
    "thread": "SELECT * FROM thread_messages WHERE account_id = ? AND gm_thread_id = ?",
    "put_contact_message": _insert("contact_messages", "account_id, correspondent, year, sent_us, msg_key, "
                                                       "direction, automated, hour"),
    "contact_messages": "SELECT sent_us, direction, automated, hour FROM contact_messages "
                        "WHERE account_id = ? AND correspondent = ? AND year = ?",
    "put_domain_message": _insert("domain_messages", "account_id, domain, year, msg_key, sent_us, dkim, spf, dmarc"),
    "domain_messages": "SELECT sent_us, dkim, spf, dmarc FROM domain_messages "
                       "WHERE account_id = ? AND domain = ? AND year = ?",
    "put_day_reply": _insert("day_replies", "account_id, day, reply_key, direction, correspondent, asked_us, "
                                            "answered_us", _STAMP),
    "day_reply": "SELECT correspondent FROM day_replies WHERE account_id = ? AND day = ? AND reply_key = ?",
    "day_replies": "SELECT * FROM day_replies WHERE account_id = ? AND day = ?",
    "put_contact_reply": _insert("contact_replies", "account_id, correspondent, year, reply_key, direction, "
                                                    "asked_us, answered_us", _STAMP),
    "del_contact_reply": "DELETE FROM contact_replies USING TIMESTAMP ? "
                         "WHERE account_id = ? AND correspondent = ? AND year = ? AND reply_key = ?",
    "contact_replies": "SELECT direction, asked_us, answered_us FROM contact_replies "
                       "WHERE account_id = ? AND correspondent = ? AND year = ?",
    "put_day_rollup": _insert("day_rollups", "account_id, year, day, received, sent, correspondents, "
                                             "received_by_hour, sent_by_hour, yours_seconds, theirs_seconds", _STAMP),
    "day_rollups": "SELECT * FROM day_rollups WHERE account_id = ? AND year = ? AND day >= ? AND day <= ?",
    "put_correspondent_day": _insert("correspondent_days", "account_id, month, day, correspondent, received, sent, "
                                                           "yours_seconds, theirs_seconds", _STAMP),
    "correspondent_days": "SELECT * FROM correspondent_days WHERE account_id = ? AND month = ? "
                          "AND day >= ? AND day <= ?",
    "put_contact": _insert("contacts", "account_id, correspondent, year, received, sent, received_automated, "
                                       "first_us, last_us, received_by_hour", _STAMP),
    "contacts": "SELECT * FROM contacts WHERE account_id = ?",
    "contact": "SELECT * FROM contacts WHERE account_id = ? AND correspondent = ?",
    "put_domain_year": _insert("domain_auth", "account_id, domain, year, messages, dkim_checked, dkim_passed, "
                                              "spf_checked, spf_passed, dmarc_checked, dmarc_passed, last_us", _STAMP),
    "domain_years": "SELECT * FROM domain_auth WHERE account_id = ?",
    "domain_year_rows": "SELECT * FROM domain_auth WHERE account_id = ? AND domain = ?",
    "put_flag": _insert("auth_flags", "account_id, year, sent_us, msg_key, domain, correspondent, failed"),
    "flags": "SELECT * FROM auth_flags WHERE account_id = ? AND year = ?",
}

# forget_account: whole partitions, by their full partition key.
PARTITIONS: dict[str, str] = {
    "accounts": "account_id", "account_days": "account_id", "raw_rows": "account_id, bucket",
    "message_index": "account_id, msg_key", "day_messages": "account_id, day", "day_threads": "account_id, day",
    "thread_entries": "account_id, thread_key",
    "parent_links": "account_id, parent_key", "thread_messages": "account_id, gm_thread_id",
    "contact_messages": "account_id, correspondent, year", "day_replies": "account_id, day",
    "contact_replies": "account_id, correspondent, year", "day_rollups": "account_id, year",
    "correspondent_days": "account_id, month", "contacts": "account_id",
    "domain_messages": "account_id, domain, year", "domain_auth": "account_id", "auth_flags": "account_id, year",
}
STATEMENTS.update({f"drop_{table}": f"DELETE FROM {table} WHERE " + " AND ".join(f"{c.strip()} = ?"
                                                                                 for c in key.split(","))
                   for table, key in PARTITIONS.items()})


# -- rows in ----------------------------------------------------------------------------------------

def raw_params(row: RawRow, bucket: int, sent_us: int, internal_us: int) -> tuple[Any, ...]:
    return (row.account_id, bucket, row.msg_key, row.mailbox, row.uid, row.message_id, list(row.in_reply_to),
            list(row.refs), row.subject, row.from_address, row.from_name, list(row.to_addresses),
            list(row.cc_addresses), sent_us, internal_us, row.date_reliable, row.direction, row.automated,
            row.list_id, row.dkim, row.spf, row.dmarc, list(row.dkim_domains), row.gm_thread_id,
            list(row.dkim_signatures))


def entry_params(e: Entry) -> tuple[Any, ...]:
    """The _ENTRY columns, in order."""
    return (e.sent_us, e.hour, e.direction, e.automated, list(e.correspondents), list(e.parent_keys),
            e.gm_thread_id, e.from_domain, e.dkim, e.spf, e.dmarc)


def thread_params(account_id: int, e: Entry) -> tuple[Any, ...]:
    return (account_id, e.gm_thread_id, e.sent_us, e.msg_key, e.day, e.hour, e.direction, e.automated,
            list(e.correspondents), list(e.parent_keys), e.from_domain)


def day_row_params(account_id: int, d: DayRow, stamp: int) -> tuple[Any, ...]:
    return (account_id, d.day.year, d.day, d.received, d.sent, d.correspondents, list(d.received_by_hour),
            list(d.sent_by_hour), list(d.yours), list(d.theirs), stamp)


def correspondent_day_params(account_id: int, c: CorrespondentDay, stamp: int) -> tuple[Any, ...]:
    return (account_id, c.day.replace(day=1), c.day, c.correspondent, c.received, c.sent, list(c.yours),
            list(c.theirs), stamp)


def contact_params(account_id: int, c: ContactYear, stamp: int) -> tuple[Any, ...]:
    return (account_id, c.correspondent, c.year, c.received, c.sent, c.received_automated, c.first_us, c.last_us,
            list(c.received_by_hour), stamp)


def domain_params(account_id: int, d: DomainYear, stamp: int) -> tuple[Any, ...]:
    return (account_id, d.domain, d.year, d.messages, d.dkim.checked, d.dkim.passed, d.spf.checked, d.spf.passed,
            d.dmarc.checked, d.dmarc.passed, d.last_us, stamp)


# -- rows out ---------------------------------------------------------------------------------------

def as_date(value: Any) -> date:
    """The driver hands a CQL date as cassandra.util.Date."""
    return value if isinstance(value, date) else value.date()


def texts(value: Any) -> tuple[str, ...]:
    """A frozen list as a tuple: Cassandra stores an empty collection as null."""
    return tuple(str(v) for v in value or ())


def ints(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value or ())


def floats(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in value or ())


def raw_from(row: Row) -> RawRow:
    return RawRow(int(row["account_id"]), bytes(row["msg_key"]), row["mailbox"], int(row["uid"]), row["message_id"],
                  texts(row["in_reply_to"]), texts(row["refs"]), row["subject"] or "", row["from_address"],
                  row["from_name"], texts(row["to_addresses"]), texts(row["cc_addresses"]), from_us(row["sent_us"]),
                  from_us(row["internal_us"]), bool(row["date_reliable"]), row["direction"], bool(row["automated"]),
                  row["list_id"], row["dkim"], row["spf"], row["dmarc"], texts(row["dkim_domains"]),
                  row["gm_thread_id"], texts(row["dkim_signatures"]))


def entry_from(row: Row) -> Entry:
    """From message_index, day_messages or thread_messages (which keep no verdicts)."""
    return Entry(bytes(row["msg_key"]), int(row["sent_us"]), as_date(row["day"]), int(row["hour"]), row["direction"],
                 bool(row["automated"]), texts(row["correspondents"]), tuple(bytes(k) for k in row["parent_keys"] or ()),
                 row["gm_thread_id"], row["from_domain"], row.get("dkim"), row.get("spf"), row.get("dmarc"),
                 bool(row.get("answered")))


def reply_from(row: Row) -> Reply:
    return Reply(bytes(row["reply_key"]), as_date(row["day"]), row["direction"], row["correspondent"],
                 int(row["asked_us"]), int(row["answered_us"]))


def day_row_from(row: Row) -> DayRow:
    return DayRow(as_date(row["day"]), int(row["received"]), int(row["sent"]), int(row["correspondents"]),
                  ints(row["received_by_hour"]), ints(row["sent_by_hour"]), floats(row["yours_seconds"]),
                  floats(row["theirs_seconds"]))


def correspondent_day_from(row: Row) -> CorrespondentDay:
    return CorrespondentDay(as_date(row["day"]), row["correspondent"], int(row["received"]), int(row["sent"]),
                            floats(row["yours_seconds"]), floats(row["theirs_seconds"]))


def contact_message_from(row: Row) -> ContactMessage:
    return ContactMessage(int(row["sent_us"]), row["direction"], bool(row["automated"]), int(row["hour"]))


def contact_from(row: Row) -> ContactYear:
    return ContactYear(row["correspondent"], int(row["year"]), int(row["received"]), int(row["sent"]),
                       int(row["received_automated"]), int(row["first_us"]), int(row["last_us"]),
                       ints(row["received_by_hour"]))


def domain_year_from(row: Row) -> DomainYear:
    def count(check: str) -> CheckCount:
        return CheckCount(int(row[f"{check}_checked"]), int(row[f"{check}_passed"]))
    return DomainYear(row["domain"], int(row["year"]), int(row["messages"]), count("dkim"), count("spf"),
                      count("dmarc"), int(row["last_us"]))
