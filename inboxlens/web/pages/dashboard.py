"""The dashboard: each of the user's mailboxes with its sync state, charts and insights.

``GET /dashboard`` shows every mailbox of the logged-in user, ``GET /dashboard/{id}`` one
of them (anyone else's answers 404, like a missing one). Per mailbox: status (with
Reconnect when the provider wants a new consent), last sync and messages seen, messages
per day and median reply times (inline SVG from ``charts``), the strongest
correspondents, the replies you owe and the ones you are waiting for.

Server-rendered and readable without JavaScript; every value is escaped; times are in
the mailbox's time zone. ``?days=30`` narrows the volume chart (90 days by default).
Numbers come from the ``MetricsStore`` (``request.app[METRICS]``); sync state from
``mail_accounts`` and ``harvest_state``. The page's own CSS is ``/static/dashboard.css``.
"""

from __future__ import annotations

import asyncio
import json
import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from html import escape
from typing import Any
from urllib.parse import quote

from aiohttp import web

from inboxlens.metrics.model import DayRollup, Pending, PeriodRollup, Relationship
from inboxlens.metrics.store import MetricsStore
from inboxlens.service_errors import MetricsUnavailable
from inboxlens.web import accounts
from inboxlens.web.auth import USER_ID, requires_user
from inboxlens.web.api.views import MAX_ADDRESS, card_and_profile
from inboxlens.web.pages import charts, views
from inboxlens.web.state import DB, METRICS, PROVIDERS, VAULT

WINDOWS = (30, 90)  # days the volume chart can show; the last is the default and what is read
REPLY_WEEKS = 13
TOP_CORRESPONDENTS = 10
PENDING_SHOWN = 20  # owed and awaiting messages a mailbox's section lists (waiting longest first)
ERRORS = {  # harvest's last_error codes, as a person would say them
    "reauth_required": "the provider asked for a new consent",
    "imap_auth_refused": "the mail server refused access",
}
OWED_NONE = "You owe nobody a reply: everyone who wrote recently has an answer."
AWAITING_NONE = "Nobody owes you a reply: every recent message of yours was answered."
NOT_SYNCED = "Not synced yet: this shows up after the first sync."  # an empty list says nothing before it


@dataclass(frozen=True)
class Insights:
    """What the metrics store said about one mailbox."""

    days: list[DayRollup]
    weeks: list[PeriodRollup]
    top: list[Relationship]
    owed: list[Pending]
    awaiting: list[Pending]


@dataclass(frozen=True)
class Mailbox:
    account: dict[str, Any]  # accounts.accounts_with_sync's row, status made live
    zone: zoneinfo.ZoneInfo
    today: date  # in the mailbox's time zone
    insights: Insights | None  # None: the store did not answer


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dashboard", show_all)
    app.router.add_get("/dashboard/{account_id}", show_one)
    app.router.add_get("/dashboard/{account_id}/correspondents/{address}", show_person)
    app.router.add_get("/static/dashboard.css", static_css)


@requires_user
async def show_all(request: web.Request) -> web.StreamResponse:
    return await _show(request, None)


@requires_user
async def show_one(request: web.Request) -> web.StreamResponse:
    account_id = views.parse_id(request.match_info["account_id"])
    if account_id is None:
        return views.problem(404, "No such mailbox.", request=request)
    return await _show(request, account_id)


@requires_user
async def show_person(request: web.Request) -> web.StreamResponse:
    """One correspondent of one mailbox: who they are (the card's profile block) and the numbers."""
    account_id = views.parse_id(request.match_info["account_id"])
    account = await accounts.account_of(request.app[DB], request[USER_ID], account_id) if account_id else None
    address = request.match_info["address"].strip().lower()
    if account is None or not 0 < len(address) <= MAX_ADDRESS or any(c.isspace() for c in address):
        return views.problem(404, "No such mailbox or correspondent.", request=request)
    try:
        card, profile = await card_and_profile(request, int(account["id"]), address)
    except MetricsUnavailable:
        return views.problem(503, "The metrics store did not answer; try again shortly.", request=request)
    if card is None:
        return views.problem(404, "This mailbox has no message from or to that address.", request=request)
    body = person(int(account["id"]), address, card.relationship, json.loads(profile or "null"),
                  _zone(str(account["time_zone"])))
    return views.html(address, body, request=request)


async def static_css(request: web.Request) -> web.Response:
    return web.Response(text=CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600"})


async def _show(request: web.Request, only: int | None) -> web.Response:
    """Only ever called from a handler under @requires_user: request[USER_ID] is set."""
    rows = await accounts.accounts_with_sync(request.app[DB], request[USER_ID])
    if only is not None:
        rows = [r for r in rows if r["id"] == only]
        if not rows:
            return views.problem(404, "No such mailbox.", request=request)
    now, window = datetime.now(timezone.utc), _window(request)
    configs = request.app[PROVIDERS].configs
    for row in rows:  # only the provider's own mail server's verdicts count: none are trusted, none count
        known = configs.get(str(row["provider"]))
        row["authenticity_off"] = known is not None and not known.trusted_authserv_ids
        if row["authenticity_off"]:  # what harvest saw on top of its received mail, offered as the fix
            row["seen_authserv_id"] = await request.app[DB].fetchval(
                "SELECT seen_authserv_id FROM harvest_state WHERE account_id = $1", row["id"])
    boxes = [await _mailbox(request, row, now) for row in rows]
    body = render(boxes, now, window, only)
    return views.html(boxes[0].account["address"] if only is not None else "Dashboard", body, request=request)


def _window(request: web.Request) -> int:
    text = request.query.get("days", "")
    return int(text) if text in {str(w) for w in WINDOWS} else WINDOWS[-1]


async def _mailbox(request: web.Request, row: dict[str, Any], now: datetime) -> Mailbox:
    row["status"] = await accounts.live_status(request.app[DB], request.app[VAULT], row)
    zone = _zone(str(row["time_zone"]))
    today = now.astimezone(zone).date()
    try:
        insights: Insights | None = await load(request.app[METRICS], int(row["id"]), today, now)
    except MetricsUnavailable:
        insights = None
    return Mailbox(row, zone, today, insights)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


async def load(store: MetricsStore, account_id: int, today: date, now: datetime) -> Insights:
    """The last 90 days, the last 13 weeks, the top correspondents and what waits, read at once."""
    monday = today - timedelta(days=today.weekday())
    days, weeks, top, owed, awaiting = await asyncio.gather(
        store.daily(account_id, today - timedelta(days=WINDOWS[-1] - 1), today),
        store.weekly(account_id, monday - timedelta(weeks=REPLY_WEEKS - 1), monday),
        store.relationships(account_id, now=now, order="strength", limit=TOP_CORRESPONDENTS),
        store.owed(account_id, now=now), store.awaiting(account_id, now=now))
    return Insights(days, weeks, top, owed, awaiting)


# ---- rendering: every value escaped ----

def render(boxes: list[Mailbox], now: datetime, window: int, only: int | None) -> str:
    head = '<link rel="stylesheet" href="/static/dashboard.css">'
    if not boxes:
        return (f'{head}<p class="empty-state">You have no mailbox connected yet. '
                '<a href="/">Connect one</a> and its numbers appear here after the first sync.</p>')
    back = '<p><a href="/dashboard">All mailboxes</a></p>' if only is not None else ""
    return head + back + _windows(window, only) + _jump(boxes) + "".join(
        _section(b, now, window, heading=only is None) for b in boxes)


def _windows(window: int, only: int | None) -> str:
    path = f"/dashboard/{only}" if only is not None else "/dashboard"
    links = " · ".join(f'<a href="{path}?days={w}" aria-current="page">{w} days</a>' if w == window
                       else f'<a href="{path}?days={w}">{w} days</a>' for w in WINDOWS)
    return f'<nav class="windows" aria-label="period">Messages per day over the last: {links}</nav>'


def _jump(boxes: list[Mailbox]) -> str:
    if len(boxes) < 2:
        return ""
    links = "".join(f'<li><a href="#account-{int(b.account["id"])}">{escape(b.account["address"])}</a></li>'
                    for b in boxes)
    return f'<nav aria-label="mailboxes"><ul class="jump">{links}</ul></nav>'


def _section(box: Mailbox, now: datetime, window: int, *, heading: bool = True) -> str:
    """One mailbox; on its own page the page's title names it already, so no second heading."""
    account_id = int(box.account["id"])
    title = f'<h2><a href="/dashboard/{account_id}">{escape(box.account["address"])}</a></h2>' if heading else ""
    return (f'<section class="mailbox" id="account-{account_id}" data-account="{account_id}">{title}'
            f"{_sync(box, now)}{_insights(box, window)}</section>")


def _sync(box: Mailbox, now: datetime) -> str:
    a = box.account
    rows = [("Status", _status(box)), ("Last sync", escape(_last_sync(a["last_sync_at"], box.zone, now))),
            ("Messages seen", escape(charts.count(a["messages_seen"])))]
    if a["failures"] and a["last_error"]:
        # harvest records the rest in words already: which server, and what went wrong
        said = ERRORS.get(str(a["last_error"]), str(a["last_error"]))
        rows.append(("Last attempt", escape(f"failed {a['failures']} time(s) in a row: {said}; "
                                            "InboxLens tries again by itself")))
    if a.get("authenticity_off"):
        rows.append(("Sender checks", escape(_authenticity_off(str(a["provider"]), a.get("seen_authserv_id")))))
    items = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    return f'<dl class="sync">{items}</dl>'


def _authenticity_off(provider: str, seen: str | None) -> str:
    off = ("off: no mail server's Authentication-Results are trusted for this provider, so DKIM, SPF and "
           "DMARC verdicts are never counted. ")
    why = ("only your own server's verdicts count, since anyone can write that header and your server adds "
           "its own on top")
    if seen is None:
        return (off + f"Your administrator sets providers.{provider}.trusted_authserv_ids to your mail server's "
                "name (the first word of the Authentication-Results header in mail you received); " + why + ".")
    return (off + f"Your received mail is topped by {seen}'s; if that is your mail server, your administrator "
            f'adds trusted_authserv_ids = ["{seen}"] under [providers.{provider}] ({why}).')


def _last_sync(at: datetime | None, zone: zoneinfo.ZoneInfo, now: datetime) -> str:
    if at is None:
        return "Not yet: the first sync is pending."
    return f"{_local(at, zone)} ({charts.human_duration((now - at).total_seconds())} ago)"


def _status(box: Mailbox) -> str:
    account_id, status = int(box.account["id"]), str(box.account["status"])
    if status in ("reauth_required", "missing token"):
        return ('<strong class="warn">Reconnect needed</strong> '
                f'<a class="button" data-tz href="/reconnect/{account_id}">Reconnect</a>')
    return escape({"active": "Active", "error": "Error: the mail server refused access"}.get(status, status))


def _insights(box: Mailbox, window: int) -> str:
    found = box.insights
    if found is None:
        return '<p class="problem">The metrics store did not answer; the numbers will be back shortly.</p>'
    first = box.today - timedelta(days=window - 1)
    shown = [d for d in found.days if d.day >= first]
    monday = box.today - timedelta(days=box.today.weekday())
    return (f"{_totals(shown, window)}<h3>Messages per day</h3>"
            f"{charts.volume_chart(shown, first, box.today)}<h3>Reply times</h3>"
            f"{charts.reply_chart(found.weeks, monday - timedelta(weeks=REPLY_WEEKS - 1), monday)}"
            f"<h3>Top correspondents</h3>{_top(found.top, box.zone, int(box.account['id']))}"
            f"<h3>You owe a reply</h3>{_pending(found.owed, box.zone, 'From', 'Received', _none(box, OWED_NONE))}"
            f"<h3>Waiting for a reply</h3>"
            f"{_pending(found.awaiting, box.zone, 'To', 'Sent', _none(box, AWAITING_NONE))}")


def _none(box: Mailbox, synced: str) -> str:
    return synced if box.account["last_sync_at"] is not None else NOT_SYNCED



def _totals(days: list[DayRollup], window: int) -> str:
    received, sent = sum(d.received for d in days), sum(d.sent for d in days)
    return (f'<p class="totals">Last {window} days: <strong data-total="received">{charts.count(received)}</strong> '
            f'received, <strong data-total="sent">{charts.count(sent)}</strong> sent.</p>')


def _top(top: list[Relationship], zone: zoneinfo.ZoneInfo, account_id: int) -> str:
    if not top:
        return '<p class="empty-state">No correspondents yet.</p>'
    rows = "".join(
        f'<tr data-correspondent="{escape(r.correspondent)}"><td><a href="/dashboard/{account_id}/correspondents/'
        f'{escape(quote(r.correspondent, safe="@"))}">{escape(r.correspondent)}</a></td>'
        f'<td class="strength"><meter min="0" max="100" value="{r.strength:.1f}"></meter> {round(r.strength)}</td>'
        f"<td>{r.last_30}</td><td>{r.received} / {r.sent}</td><td>{round(r.reciprocity * 100)} %</td>"
        f'<td class="when">{escape(_local(r.last_contact, zone))}</td></tr>' for r in top)
    return ('<table class="top"><thead><tr><th>Correspondent</th><th>Strength</th><th>Last 30 days</th>'
            "<th>Received / sent</th><th>Reciprocity</th><th>Last contact</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _pending(found: list[Pending], zone: zoneinfo.ZoneInfo, who: str, when: str, none: str) -> str:
    if not found:
        return f'<p class="empty-state">{escape(none)}</p>'
    rows = "".join(f'<tr data-msg="{escape(p.msg_key)}"><td>{escape(p.correspondent)}</td>'
                   f"<td>{escape(_local(p.sent_at, zone))}</td>"
                   f"<td>{escape(charts.human_duration(p.waiting.total_seconds()))}</td></tr>"
                   for p in found[:PENDING_SHOWN])
    more = len(found) - PENDING_SHOWN
    return (f'<table class="pending"><thead><tr><th>{who}</th><th>{when}</th><th>Waiting</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
            + (f'<p class="more">… and {more} more, newer than these.</p>' if more > 0 else ""))


def person(account_id: int, address: str, r: Relationship, profile: dict[str, Any] | None,
           zone: zoneinfo.ZoneInfo) -> str:
    """A correspondent's page: the profile block (each field with its source), then the numbers."""
    back = f'<p><a href="/dashboard/{account_id}">Back to the mailbox</a></p>'
    numbers = (f'<dl class="sync"><dt>Received / sent</dt><dd>{r.received} / {r.sent}</dd>'
               f"<dt>Last 30 days</dt><dd>{r.last_30}</dd><dt>Strength</dt><dd>{round(r.strength)}</dd>"
               f"<dt>Last contact</dt><dd>{escape(_local(r.last_contact, zone))}</dd></dl>")
    return f'<link rel="stylesheet" href="/static/dashboard.css">{back}{_profile(profile, zone)}{numbers}'


def _profile(profile: dict[str, Any] | None, zone: zoneinfo.ZoneInfo) -> str:
    if profile is None:
        return ('<p class="empty-state" data-profile="none">No profile: add an address book in '
                '<a href="/settings#address-books">Settings</a>, or turn public profiles on there.</p>')
    photo = profile.get("photo")
    image = (f'<img class="photo" src="{escape(photo["url"])}" alt="" width="96" height="96" '
             f'data-source="{escape(photo["source"]["kind"])}">{_source(photo, zone)}') if photo else ""
    rows = "".join(f'<dt>{label}</dt><dd data-field="{name}">{escape(profile[name]["value"])} '
                   f"{_source(profile[name], zone)}</dd>"
                   for name, label in (("name", "Name"), ("organization", "Organisation"), ("title", "Title"))
                   if profile.get(name))
    links = "".join(f'<li data-link="{escape(link["kind"])}">{_link(link)} {_source(link, zone)}</li>'
                    for link in profile.get("links", []))
    return (f'<section class="profile" data-profile>{image}<dl class="sync">{rows}</dl>'
            + (f'<ul class="links">{links}</ul>' if links else "") + "</section>")


def _link(link: dict[str, Any]) -> str:
    """An http(s) link as a link (never followed with a referrer); anything else as text."""
    value, label = str(link["value"]), str(link.get("label") or "")
    text = escape(f"{label}: {value}" if label else value)
    if value.lower().startswith(("https://", "http://")):
        return f'<a href="{escape(value)}" rel="noopener noreferrer nofollow" target="_blank">{text}</a>'
    return text


def _source(field: dict[str, Any], zone: zoneinfo.ZoneInfo) -> str:
    source = field["source"]
    at = datetime.fromisoformat(str(field["refreshed_at"]).replace("Z", "+00:00"))
    return (f'<small class="source" data-source="{escape(source["kind"])}">from {escape(source["label"])}, '
            f"{escape(_local(at, zone))}</small>")


def _local(moment: datetime, zone: zoneinfo.ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


CSS = """
nav.windows{margin:.5rem 0 1rem}
nav.windows a[aria-current]{font-weight:700;text-decoration:none;color:inherit}
ul.jump{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:1rem}
section.mailbox{background:#fff;padding:1rem 1.5rem;margin:0 0 2rem;border:1px solid #dde1e7;border-radius:6px}
section.mailbox h2{margin-top:0}
dl.sync{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0 0 1rem}
dl.sync dt{font-weight:600}
dl.sync dd{margin:0}
svg.chart{display:block;width:100%;height:auto;max-width:720px}
svg.chart rect.bar:hover{opacity:.75}
table.top td.strength,table.top td.when{white-space:nowrap}
table.top meter{width:4rem;vertical-align:middle}
.empty-state{color:#4a5263;font-style:italic}
section.profile{background:#fff;padding:1rem;border:1px solid #dde1e7;border-radius:6px;margin:0 0 1rem}
section.profile img.photo{float:right;border-radius:6px;object-fit:cover}
small.source{color:#4a5263}
ul.links{padding-left:1.2rem}
"""
