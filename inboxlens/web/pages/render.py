"""Server-rendered HTML: small functions, every value escaped, no external assets."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable
from urllib.parse import quote

from inboxlens.web.tokens import TokenInfo


def layout(title: str, body: str, *, user_email: str = "", csrf: str = "") -> str:
    account = (f'<form method="post" action="/logout" class="inline">{csrf_field(csrf)}'
               f'<a href="/dashboard">Dashboard</a> <a href="/settings">Settings</a> <span>{escape(user_email)}</span> '
               '<button type="submit">Log out</button></form>') if user_email else ""
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(title)} · InboxLens</title><link rel=\"stylesheet\" href=\"/static/app.css\">"
            # No favicon request (a 404 in every browser console otherwise).
            "<link rel=\"icon\" href=\"data:,\">"
            "<script src=\"/static/app.js\" defer></script></head><body>"
            f"<header><a href=\"/\" class=\"brand\">InboxLens</a>{account}</header>"
            f"<main><h1>{escape(title)}</h1>{body}</main></body></html>")


# On every page of `inboxlens demo` (web/demo.py puts it first in <body>), never elsewhere.
DEMO_BANNER = ('<div class="demo" role="status" data-demo>Demo data: a generated mailbox, no real mail. '
               'Remove it with <code>inboxlens demo --remove</code>.</div>')


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{escape(token)}">'


def welcome(providers: Iterable[tuple[str, str]], base_url: str = "") -> str:
    items = list(providers)
    if not items:
        example = f"{base_url}/oauth/google/callback"
        return ("<p>No mail provider is configured yet.</p><ol>"
                "<li>Register InboxLens with your provider as a web application, with the redirect URI "
                f"<code>{escape(base_url)}/oauth/&lt;name&gt;/callback</code> (for Google: "
                f"<code>{escape(example)}</code>). <code>docs/providers.md</code> in your copy of InboxLens "
                "walks through Google, Microsoft and any OpenID Connect provider.</li>"
                "<li>Put its client id and secret under <code>[providers.&lt;name&gt;]</code> in the "
                "configuration, and restart.</li>"
                "<li>Run <code>inboxlens doctor</code> to check the set-up.</li></ol>")
    connect = _connect_links(items)
    login = "".join(f'<li><a href="/login/{quote(n)}">Log in with {escape(label)}</a></li>' for n, label in items)
    return (f"<p>Connect a mailbox to see who you write to, how fast you reply and who is waiting on you. "
            f"InboxLens reads message headers only, never bodies.</p><ul class=\"actions\">{connect}</ul>"
            f"<h2>Already connected?</h2><ul>{login}</ul>")


def _connect_links(providers: Iterable[tuple[str, str]]) -> str:
    """A button per provider; Google's also with its contacts (one more scope, an address book)."""
    return "".join(f'<li><a class="button" data-tz href="/connect/{quote(n)}">Connect {escape(label)}</a></li>' + (
        f'<li><a class="button" data-tz href="/connect/{quote(n)}?contacts=1">Connect {escape(label)} and also '
        'use my contacts</a></li>' if n == "google" else "") for n, label in providers)


def dashboard(accounts: list[dict[str, Any]], providers: Iterable[tuple[str, str]], csrf: str) -> str:
    rows = "".join(_account_row(a, csrf) for a in accounts) or '<tr><td colspan="5">No mailbox yet.</td></tr>'
    connect = _connect_links(providers)
    return ("<table><thead><tr><th>Address</th><th>Provider</th><th>Time zone</th>"
            f"<th>Status</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
            f"<h2>Connect another mailbox</h2><ul class=\"actions\">{connect}</ul>")


def _account_row(account: dict[str, Any], csrf: str) -> str:
    account_id = int(account["id"])
    needs_reconnect = account["status"] == "reauth_required"
    status = ('<strong class="warn">Reconnect needed</strong> '
              f'<a class="button" data-tz href="/reconnect/{account_id}">Reconnect</a>') if needs_reconnect \
        else escape(str(account["status"]))
    tz = (f'<form method="post" action="/accounts/{account_id}/time-zone" class="inline">{csrf_field(csrf)}'
          f'<input name="time_zone" value="{escape(account["time_zone"])}" size="18" aria-label="time zone">'
          '<button type="submit">Save</button></form>')
    disconnect = f'<a class="button danger" href="/accounts/{account_id}/disconnect">Disconnect…</a>'
    return (f'<tr data-account="{account_id}"><td>{escape(account["address"])}</td>'
            f"<td>{escape(account.get('provider_label') or account['provider'])}</td><td>{tz}</td><td>{status}</td>"
            f"<td>{disconnect}</td></tr>")


def confirm_disconnect(account_id: int, address: str, provider: str, held: dict[str, int], csrf: str) -> str:
    """What Disconnect will do, before it does it: nothing happens until the button is pressed."""
    return (f"<p>Disconnect <strong>{escape(address)}</strong>?</p><ul>"
            f"<li>InboxLens's access is revoked at {escape(provider)} and its stored refresh token deleted;</li>"
            f"<li>what InboxLens learned from this mailbox is deleted: {_held(held)}, with the daily, weekly and "
            "monthly rollups and the insights built on them;</li><li>the contact profiles this mailbox brought: "
            "its Google address book, if any, and the public profiles found for it.</li></ul><p>This cannot be "
            "undone; you can connect "
            "the mailbox again later, and InboxLens will read it afresh.</p>"
            f'<form method="post" action="/accounts/{account_id}/disconnect">{csrf_field(csrf)}'
            '<button type="submit" class="danger">Disconnect and delete</button> <a href="/">Cancel</a></form>')


def _held(counts: dict[str, int]) -> str:
    """ "1,234 messages' metadata and 56 sender domains" """
    messages, domains = counts.get("messages", 0), counts.get("sender domains", 0)
    return (f"{messages:,} message{'' if messages == 1 else 's'}' metadata and "
            f"{domains:,} sender domain{'' if domains == 1 else 's'}")


def disconnected(address: str, revocation: str, deleted: dict[str, int]) -> str:
    said = {"revoked": "InboxLens's access was revoked at your provider.",
            "not_supported": "Your provider has no revocation endpoint: remove InboxLens in your account's "
                             "security settings to be sure.",
            "failed": "Revoking access at your provider failed: remove InboxLens in your account's security "
                      "settings to be sure.",
            "no_token": "No stored token was left to revoke."}.get(revocation, "")
    mailbox = "the mailbox and its sync state" if deleted.get("mail accounts") else "no mailbox row (already gone)"
    return (f"<p>{escape(address)} is disconnected. {escape(said)}</p><p>Deleted:</p>"
            f"<ul><li>{mailbox}</li><li>{_held(deleted)}, with their rollups and insights</li>"
            f"<li>{deleted.get('address books', 0):,} address book(s) and {deleted.get('public profiles', 0):,} "
            "public profile(s) this mailbox brought</li>"
            "<li>the stored refresh token (in the vault)</li></ul><p><a href=\"/\">Back</a></p>")


EXTENSION_ID = "kedfbmhakcljommjfnkjpndeifbjneie"  # from the public key in extension/manifest.json


def settings(listed: list[TokenInfo], csrf: str, created: tuple[str, str] | None) -> str:
    """API tokens: the list, revoke buttons, the form for a new one, and a new one's secret, once."""
    rows = "".join(_token_row(t, csrf) for t in listed) or '<tr><td colspan="4">No API token yet.</td></tr>'
    return (f"{_new_token(*created) if created else ''}<h2>API tokens</h2>"
            "<p>The InboxLens browser extension (or any API client) sends one of these as "
            "<code>Authorization: Bearer ilk_…</code>. A token reads everything about your mailboxes: "
            "revoke it when a device is lost.</p>"
            "<p>To let the InboxLens browser extension call this server, the configuration's <code>[web]</code> "
            f'section needs: <code data-cors-line>cors_origins = ["chrome-extension://{EXTENSION_ID}"]</code></p>'
            "<p data-handoff>No need to copy a token into the extension: in its settings, type this server's "
            "address and click <strong>Connect</strong>. A window of this site asks you to allow it, and the "
            "extension receives a token of its own (listed below as \"Browser extension\").</p>"
            "<table><thead><tr><th>Name</th><th>Created</th><th>Last used</th><th></th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            f'<h2>New token</h2><form method="post" action="/settings/tokens">{csrf_field(csrf)}'
            '<input name="name" maxlength="100" required aria-label="token name" placeholder="Chrome at work">'
            '<button type="submit">Create token</button></form>')


def _new_token(name: str, secret: str) -> str:
    return (f'<div class="notice"><p>Your new token <strong>{escape(name)}</strong>. Copy it now: '
            "it is not shown again, and InboxLens keeps only a hash of it.</p>"
            f'<p><code class="secret" data-token>{escape(secret)}</code></p></div>')


def _token_row(token: TokenInfo, csrf: str) -> str:
    revoke = (f'<form method="post" action="/settings/tokens/{token.id}/revoke" class="inline">'
              f'{csrf_field(csrf)}<button type="submit" class="danger">Revoke</button></form>')
    return (f"<tr data-token-id=\"{token.id}\"><td>{escape(token.name)}</td><td>{_when(token.created_at)}</td>"
            f"<td>{_when(token.last_used_at) if token.last_used_at else 'never'}</td><td>{revoke}</td></tr>")


def _when(moment: datetime) -> str:
    return escape(moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def problem(message: str, hint: str = "") -> str:
    extra = f"<p>{escape(hint)}</p>" if hint else ""
    return f'<p class="problem">{escape(message)}</p>{extra}<p><a href="/">Back to InboxLens</a></p>'


CSS = """
body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;justify-content:space-between;align-items:center;padding:.6rem 1.5rem;background:#1d2330;color:#fff}
header a.brand{color:#fff;font-weight:700;text-decoration:none}
header a,header span{color:#ffffff}
main{max-width:58rem;margin:2rem auto;padding:0 1.5rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.5rem;border-bottom:1px solid #dde1e7}
.button,button{display:inline-block;padding:.35rem .8rem;border:1px solid #3b5bdb;border-radius:4px;
 background:#3b5bdb;color:#fff;text-decoration:none;cursor:pointer;font:inherit}
.danger{background:#c92a2a;border-color:#c92a2a}
form.inline{display:inline}
ul.actions{list-style:none;padding:0;display:flex;gap:.8rem}
input{font:inherit;padding:.3rem .4rem;margin-right:.4rem}
.problem{padding:.8rem;background:#fff4e6;border-left:4px solid #e8590c}
.warn{color:#c92a2a}
.notice{padding:.8rem;background:#ebfbee;border-left:4px solid #2f9e44}
code.secret{font-size:1.05rem;word-break:break-all;user-select:all}
form.stacked label{display:block;margin:.4rem 0}
ul.reasons{margin:.2rem 0}
.demo{padding:.5rem 1.5rem;background:#fff3bf;color:#5c3c00;border-bottom:2px solid #f08c00;font-weight:600}
"""

# Fills in the browser's time zone on connect links; without JavaScript the server uses UTC.
JS = """
document.addEventListener("DOMContentLoaded", function () {
  var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!tz) return;
  document.querySelectorAll("a[data-tz]").forEach(function (a) {
    var url = new URL(a.href, document.baseURI);
    url.searchParams.set("tz", tz);
    a.href = url.pathname + url.search;
  });
});
"""
