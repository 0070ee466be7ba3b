"""The OpenAPI 3.1 document of ``/api/v1``, served at ``/api/v1/openapi.json``.

Written by hand next to the handlers (``api_views.py``) and kept true by tests: every
route is documented and every documented operation routed
(``tests/web/test_api_openapi.py``), functional tests validate real answers against
these schemas, and Schemathesis fuzzes the live server with it.
"""

from __future__ import annotations

from typing import Any

from inboxlens.metrics.model import CARD_LIST
from inboxlens.profiles import read
from inboxlens.web.api import views as api_views
from inboxlens.web import tokens

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: dict[str, Schema], description: str = "") -> Schema:
    schema: Schema = {"type": "object", "required": list(required), "properties": required,
                      "additionalProperties": False}
    return {**schema, "description": description} if description else schema


def array(items: Schema, size: int | None = None) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    return {**schema, "minItems": size, "maxItems": size} if size is not None else schema


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


COUNT: Schema = {"type": "integer", "minimum": 0}
NUMBER: Schema = {"type": "number"}
TEXT: Schema = {"type": "string"}
DATE: Schema = {"type": "string", "format": "date"}
TIME: Schema = {"type": "string", "format": "date-time"}
SECONDS: Schema = {"type": "number", "minimum": 0, "description": "seconds"}
ACCOUNT_ID: Schema = {"type": "integer", "minimum": 1}
HOURS = array(COUNT, 24)
WEEKDAYS = array(COUNT, 7)
CHECK = {"type": "string", "enum": ["dkim", "spf", "dmarc"]}

SCHEMAS: dict[str, Schema] = {
    "Error": obj({"error": obj({"code": {"type": "string", "pattern": "^[a-z][a-z_]*$"}, "message": TEXT})},
                 "Every error: a stable snake_case code clients may branch on, and a message for people."),
    "Quantiles": obj({"count": COUNT, "median": nullable(SECONDS), "p90": nullable(SECONDS)},
                     "Reply times in seconds: how many, median and 90th percentile."),
    "DayRollup": obj({"day": DATE, "received": COUNT, "sent": COUNT, "correspondents": COUNT,
                      "received_by_hour": HOURS, "sent_by_hour": HOURS, "yours": ref("Quantiles"),
                      "theirs": ref("Quantiles")}, "One local calendar day in the account's time zone."),
    "PeriodRollup": obj({"start": DATE, "received": COUNT, "sent": COUNT, "correspondents": COUNT,
                         "received_by_hour": HOURS, "sent_by_hour": HOURS, "received_by_weekday": WEEKDAYS,
                         "sent_by_weekday": WEEKDAYS, "yours": ref("Quantiles"), "theirs": ref("Quantiles")},
                        "An ISO week (start: its Monday) or calendar month (start: its first day)."),
    "Relationship": obj({"correspondent": TEXT, "first_contact": TIME, "last_contact": TIME,
                         "received": COUNT, "sent": COUNT, "last_30": COUNT, "last_90": COUNT, "last_365": COUNT,
                         "reciprocity": {"type": "number", "minimum": 0, "maximum": 1},
                         "strength": {"type": "number", "minimum": 0, "maximum": 100}, "hours": HOURS,
                         "automated": {"type": "boolean"}}, "One correspondent (docs/insights.md)."),
    "ReplyTimes": obj({"count": COUNT, "median": nullable(SECONDS), "p90": nullable(SECONDS),
                       "within_hour": nullable({"type": "number", "minimum": 0, "maximum": 1}),
                       "buckets": array(COUNT, 6)},
                      "p90: the 90th percentile (null with no replies). Buckets: <1h, 1-4h, 4-24h, 1-3d, 3-7d, >7d."),
    "ReplyStats": obj({k: ref("ReplyTimes") for k in ("yours", "theirs", "yours_business", "theirs_business")}),
    "Pending": obj({"msg_key": {"type": "string", "pattern": "^[0-9a-f]+$"}, "correspondent": TEXT,
                    "sent_at": TIME, "waiting": SECONDS, "message_id": nullable(TEXT)},
                   "A message waiting for an answer. message_id: its Message-ID without angle brackets (for "
                   "Gmail's rfc822msgid: search), null when it had none or was indexed before it was kept."),
    "CheckCount": obj({"checked": COUNT, "passed": COUNT}),
    "DomainAuth": obj({"domain": TEXT, "messages": COUNT, "dkim": ref("CheckCount"), "spf": ref("CheckCount"),
                       "dmarc": ref("CheckCount"), "last_seen": TIME}),
    "AuthFlag": obj({"msg_key": {"type": "string", "pattern": "^[0-9a-f]+$"}, "domain": TEXT,
                     "correspondent": TEXT, "sent_at": TIME, "failed": array(CHECK)},
                    "A message that failed a check its sender's domain usually passes."),
    "Card": obj({"relationship": ref("Relationship"), "replies": ref("ReplyStats"),
                 "owed": {**array(ref("Pending")), "maxItems": CARD_LIST},
                 "awaiting": {**array(ref("Pending")), "maxItems": CARD_LIST},
                 "domain": nullable(ref("DomainAuth")), "flags": {**array(ref("AuthFlag")), "maxItems": CARD_LIST},
                 "owed_total": COUNT, "awaiting_total": COUNT},
                f"Owed and awaiting: the {CARD_LIST} waiting longest, oldest first (the totals count all); "
                f"flags: the {CARD_LIST} newest."),
    "ProfileSource": obj({"kind": {"type": "string", "enum": ["carddav", "google", "vcf", "gravatar", "libravatar"]},
                          "label": TEXT}, "Where a field came from: the address book's kind and label, or the service "
                                          "(label Gravatar or Libravatar)."),
    "ProfileText": obj({"value": TEXT, "source": ref("ProfileSource"), "refreshed_at": TIME}),
    "ProfilePhoto": obj({"url": {"type": "string", "pattern": "^/api/v1/photos/[A-Za-z0-9_-]+$"},
                         "source": ref("ProfileSource"), "refreshed_at": TIME},
                        "The photo on InboxLens itself (GET it with the same token or session); never a third "
                        "party's URL."),
    "ProfileLink": obj({"kind": {"type": "string", "enum": ["url", "social", "impp"]}, "value": TEXT, "label": TEXT,
                        "source": ref("ProfileSource"), "refreshed_at": TIME}),
    "Profile": obj({"name": nullable(ref("ProfileText")), "organization": nullable(ref("ProfileText")),
                    "title": nullable(ref("ProfileText")), "photo": nullable(ref("ProfilePhoto")),
                    "links": {**array(ref("ProfileLink")), "maxItems": read.MAX_LINKS}},
                   "Who the correspondent is (docs/profiles.md): from your address books (by book, then card), then "
                   "Gravatar, then Libravatar (photo only), the public ones only if the mailbox opted in. Each "
                   "field says its source and when that source was refreshed."),
    "Account": obj({"id": ACCOUNT_ID, "address": TEXT, "provider": TEXT, "time_zone": TEXT,
                    "status": {"type": "string", "description": "active, reauth_required, error, missing token"},
                    "connected_at": TIME, "last_sync_at": nullable(TIME), "next_sync_at": nullable(TIME),
                    "messages_seen": COUNT, "failures": COUNT, "last_error": nullable(TEXT),
                    "needs_reconnect": {"type": "boolean"}}),
}

RESPONSES: dict[str, Schema] = {
    name: {"description": description, "content": {"application/json": {"schema": ref("Error")}}}
    for name, description in [
        ("BadRequest", "invalid_parameter: a query or path parameter is out of range"),
        ("Unauthorized", "unauthorized: no valid API token (or logged-in session)"),
        ("CsrfFailed", "csrf_failed: a cookie-authenticated change without the session's X-CSRF-Token"),
        ("NotFound", "not_found: no such account of yours (another user's looks the same), or no such thing"),
        ("Conflict", "needs_reconnect: the mailbox must be reconnected first"),
        ("ServerError", "internal_error: the server failed; no details"),
        ("Unavailable", "database_unavailable, metrics_unavailable or vault_unavailable: a backend did not answer; "
                         "try again (database_unavailable comes with Retry-After)"),
    ]
}
RESPONSES["Unavailable"]["headers"] = {"Retry-After": {
    "required": False, "description": "whole seconds to wait (sent with database_unavailable)",
    "schema": {"type": "integer", "minimum": 1}}}
RESPONSES["RateLimited"] = {
    "description": "rate_limited: too many requests for this token (or session)",
    "headers": {"Retry-After": {"required": True, "description": "whole seconds to wait",
                                "schema": {"type": "integer", "minimum": 1}}},
    "content": {"application/json": {"schema": ref("Error")}},
}


def answer(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*extra: str) -> dict[str, Schema]:
    codes = {"401": "Unauthorized", "404": "NotFound", "429": "RateLimited", "500": "ServerError",
             "503": "Unavailable", **{c: n for c, n in (e.split(":") for e in extra)}}
    return {code: {"$ref": f"#/components/responses/{name}"} for code, name in sorted(codes.items())}


def query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


ACCOUNT_PARAM: Schema = {"name": "account_id", "in": "path", "required": True, "schema": ACCOUNT_ID}
ADDRESS_PARAM: Schema = {"name": "address", "in": "path", "required": True, "description": "an e-mail address",
                         "schema": {"type": "string", "minLength": 1, "maxLength": api_views.MAX_ADDRESS}}
DATE_PARAM = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
ROLLUP_PARAMS = [
    query("period", {"type": "string", "enum": ["day", "week", "month"], "default": "day"}, "rollup period"),
    query("from", DATE_PARAM, "first day (local date); default: about a month, 12 weeks or a year before to. "
                              "At most 366 days before to (day), 1830 (week), 3660 (month)"),
    query("to", DATE_PARAM, "last day (local date), inclusive; default today in the account's time zone"),
]
LIMIT_PARAMS = [
    query("limit", {"type": "integer", "minimum": 1, "maximum": api_views.MAX_LIMIT, "default": 50}, "page size"),
    query("offset", {"type": "integer", "minimum": 0, "maximum": api_views.MAX_OFFSET, "default": 0}, "skip"),
]
PAGE_PARAMS = [
    query("order", {"type": "string", "enum": ["strength", "recency", "volume"], "default": "strength"},
          "best first by"),
    *LIMIT_PARAMS,
]


def account_op(summary: str, op_id: str, body: Schema, params: list[Schema] | None = None, *extra: str,
               status: str = "200") -> Schema:
    return {"summary": summary, "operationId": op_id, "parameters": [ACCOUNT_PARAM, *(params or [])],
            "responses": {status: answer(body), **errors(*extra)}}


def with_account(fields: dict[str, Schema]) -> Schema:
    return obj({"account_id": ACCOUNT_ID, **fields})


PATHS: dict[str, Schema] = {
    "/openapi.json": {"get": {
        "summary": "This document", "operationId": "openapi", "security": [],
        "responses": {"200": answer({"type": "object"}, "The OpenAPI 3.1 document")}}},
    "/me": {"get": {
        "summary": "You, and your mailboxes with their sync status", "operationId": "me",
        "responses": {"200": answer(obj({"user": obj({"id": ACCOUNT_ID, "email": TEXT}),
                                         "accounts": array(ref("Account"))})), **errors()}}},
    "/accounts/{account_id}/rollups": {"get": account_op(
        "Daily, weekly or monthly rollups of one mailbox", "rollups", with_account({
            "period": {"type": "string", "enum": ["day", "week", "month"]}, "from": DATE, "to": DATE,
            "rollups": {"anyOf": [array(ref("DayRollup")), array(ref("PeriodRollup"))]}}),
        ROLLUP_PARAMS, "400:BadRequest")},
    "/accounts/{account_id}/correspondents": {"get": account_op(
        "Your correspondents, a page at a time", "correspondents", with_account({
            "order": {"type": "string", "enum": ["strength", "recency", "volume"]}, "limit": COUNT,
            "offset": COUNT, "correspondents": array(ref("Relationship"))}),
        PAGE_PARAMS, "400:BadRequest")},
    "/accounts/{account_id}/correspondents/{address}": {"get": account_op(
        "Everything known about one correspondent (the overlay's card)", "card",
        with_account({"correspondent": TEXT, "card": ref("Card"), "profile": nullable(ref("Profile"))}),
        [ADDRESS_PARAM], "400:BadRequest")},
    "/photos/{opaque}": {"get": {
        "summary": "A profile photo the card's profile block links to (private to its user)", "operationId": "photo",
        "parameters": [{"name": "opaque", "in": "path", "required": True, "description": "the id in the block's URL",
                        "schema": {"type": "string", "minLength": 1, "maxLength": read.MAX_PHOTO_ID}}],
        "responses": {"200": {"description": "The image, as stored (Cache-Control: private)", "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in ("image/jpeg", "image/png", "image/gif")}}, **errors()}}},
    "/accounts/{account_id}/owed": {"get": account_op(
        "Messages from people you have not answered, oldest first, a page at a time", "owed",
        with_account({"limit": COUNT, "offset": COUNT, "total": COUNT, "owed": array(ref("Pending"))}),
        LIMIT_PARAMS, "400:BadRequest")},
    "/accounts/{account_id}/awaiting": {"get": account_op(
        "Your messages people have not answered, oldest first, a page at a time", "awaiting",
        with_account({"limit": COUNT, "offset": COUNT, "total": COUNT, "awaiting": array(ref("Pending"))}),
        LIMIT_PARAMS, "400:BadRequest")},
    "/accounts/{account_id}/senders": {"get": account_op(
        "Sender domains' DKIM/SPF/DMARC record (a page, most messages first) and the newest flagged messages",
        "senders", with_account({"limit": COUNT, "offset": COUNT, "domains_total": COUNT,
                                 "domains": array(ref("DomainAuth")),
                                 "flags": {**array(ref("AuthFlag")), "maxItems": api_views.MAX_LIMIT}}),
        LIMIT_PARAMS, "400:BadRequest")},
    "/accounts/{account_id}/sync": {"post": account_op(
        "Sync this mailbox now (harvest picks it up on its next tick)", "sync",
        with_account({"next_sync_at": TIME}), None, "403:CsrfFailed", "409:Conflict", status="202")},
    "/accounts/{account_id}": {"delete": account_op(
        "Disconnect: revoke access at the provider, delete the mailbox and everything derived from it",
        "disconnect", with_account({"address": TEXT, "revocation": {
            "type": "string", "enum": ["revoked", "not_supported", "failed", "no_token"]},
            "deleted": {"type": "object", "additionalProperties": COUNT}}), None, "403:CsrfFailed")},
    "/extension/token": {"post": {
        "summary": "The browser extension's hand-off: a one-time code and its PKCE verifier for a new API token "
                   "(docs/api.md)", "operationId": "extension_token", "security": [],
        "requestBody": {"required": True, "content": {"application/json": {"schema": obj({
            "code": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
            "verifier": {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}})}}},
        "responses": {"201": answer(obj({"token": TEXT, "name": TEXT}), "The new API token, shown this once"),
                      **{code: {"description": text, "content": {"application/json": {"schema": ref("Error")}}}
                         for code, text in [
                             ("400", "invalid_grant: unknown, expired or used code, or the wrong verifier; "
                                     "bad_request: not that JSON shape"),
                             ("403", "origin_not_allowed: sent from a page other than the extension"),
                             ("409", "too_many_tokens: the user has as many API tokens as allowed"),
                             ("415", "unsupported_media_type: the body is not JSON")]},
                      "429": {"$ref": "#/components/responses/RateLimited"},
                      "500": {"$ref": "#/components/responses/ServerError"},
                      "503": {"$ref": "#/components/responses/Unavailable"}}}},
}

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {"title": "InboxLens API", "version": "1",
             "description": "Header-metadata insights for the InboxLens browser extension. See docs/api.md."},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}, {"session": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": f"{tokens.PREFIX}...",
                       "description": "An API token made on the settings page (/settings)."},
            "session": {"type": "apiKey", "in": "cookie", "name": "inboxlens_session",
                        "description": "The dashboard's own calls; POST and DELETE also need X-CSRF-Token."},
        },
    },
}
