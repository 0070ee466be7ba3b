"""Settings for contact profiles (issue 17): address books, the .vcf import, public profiles.

On the settings page (``views.settings`` adds ``section``): each address book (label, kind,
cards, last sync, the last error in words, Sync now, Remove), the form that adds a CardDAV
book (label, URL, user name, app password), the .vcf import, and per mailbox the public
profiles switch (off by default). Every form is a POST with the session's CSRF token: the
app's guard checks the url-encoded ones; the import is multipart, read here in bounded parts
(the app's 64 KiB body limit would refuse a file), so it checks its token itself, before
anything is written. A book or mailbox of anyone else answers 404, like a missing one.
Nothing here logs a URL, user name, password, label or address.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape
from typing import Any, Mapping

from aiohttp import BodyPartReader, web

from inboxlens.errors import VaultError
from inboxlens.profiles import imports
from inboxlens.profiles.errors import BadVCard
from inboxlens.profiles.vcard import DEFAULT_LIMITS
from inboxlens.web import accounts, books
from inboxlens.web.auth import USER_ID, requires_user
from inboxlens.web.pages import render
from inboxlens.web.pages.views import busy, csrf_ok, parse_id, problem, redirect, settings_page
from inboxlens.web.state import DB, PROFILES, VAULT

IMPORT_PATH = "/settings/books/import"  # multipart: app.guard leaves its CSRF check to import_file
MAX_FIELD = 1024  # bytes of a non-file field of the import form
KINDS = {"carddav": "CardDAV", "google": "Google Contacts", "vcf": ".vcf file"}
PUBLIC_SENTENCE = ("When this is on, the InboxLens server asks Gravatar and Libravatar for the public photo and "
                   "profile of the people this mailbox writes with, sending only a SHA-256 hash of each address "
                   "(not the address itself, your mailbox or who you are); turning it off deletes what they sent.")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/settings/books", add_book)
    app.router.add_post(IMPORT_PATH, import_file)
    app.router.add_post("/settings/books/{book_id}/remove", remove_book)
    app.router.add_post("/settings/books/{book_id}/sync", sync_book)
    app.router.add_post("/settings/public/{account_id}", switch_public)


@requires_user
async def add_book(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    config = request.app[PROFILES]
    label = books.clean_text(str(form.get("label", "")), books.MAX_LABEL)
    url = str(form.get("url", "")).strip()
    username = books.clean_text(str(form.get("username", "")), books.MAX_USERNAME)
    password = str(form.get("password", ""))
    wrong = _wrong(label, url, username, password, config.allow_private_addresses)
    if wrong:
        return problem(400, wrong + " Nothing was added.", "Go back and correct it.", request)
    # The limit before the lookup: a user who may add nothing makes this server resolve nothing.
    over = await books.limit_problem(request.app[DB], request[USER_ID], config.max_books_per_user)
    if over:
        return problem(400, over, request=request)
    try:
        unreachable = await books.reach_problem(url, config.allow_private_addresses, owner=request[USER_ID])
    except books.Busy as e:
        return busy(problem(503, str(e), "Please try again in a moment.", request))
    if unreachable:
        return problem(400, unreachable + " Nothing was added.", "Go back and correct it.", request)
    try:
        await books.add_carddav(request.app[DB], request.app[VAULT], request[USER_ID], label=str(label), url=url,
                                username=str(username), password=password, limit=config.max_books_per_user)
    except books.BookRefused as e:
        return problem(400, str(e), request=request)
    except accounts.MarkBusy:  # no connection for the mark within accounts.MARK_WAIT: the pool is full
        return busy(problem(503, "InboxLens is busy; nothing was added.", "Please try again in a moment.", request))
    except VaultError as e:
        books.log.error("the vault did not store an address book's password (%s); nothing was added", type(e).__name__)
        return problem(503, "InboxLens could not store the password safely; nothing was added.",
                       "Please try again in a moment.", request)
    return redirect("/settings#address-books")


def _wrong(label: str | None, url: str, username: str | None, password: str, allow_private: bool) -> str | None:
    if label is None:
        return f"Give the address book a name of 1 to {books.MAX_LABEL} characters."
    if username is None:
        return f"The user name must be 1 to {books.MAX_USERNAME} characters on one line."
    if books.clean_text(password, books.MAX_PASSWORD) != password:
        return (f"The app password must be 1 to {books.MAX_PASSWORD} characters, without control characters "
                "or spaces at its ends.")
    return books.url_problem(url, allow_private)


@requires_user
async def remove_book(request: web.Request) -> web.StreamResponse:
    book_id = parse_id(request.match_info["book_id"])
    try:
        removed = book_id is not None and await books.remove(request.app[DB], request.app[VAULT], request[USER_ID],
                                                             book_id)
    except VaultError:
        return problem(503, "InboxLens could not reach its vault to delete the password; nothing was removed.",
                       "Please try again in a moment.", request)
    if not removed:
        return problem(404, "No such address book.", request=request)
    return redirect("/settings#address-books")


@requires_user
async def sync_book(request: web.Request) -> web.StreamResponse:
    book_id = parse_id(request.match_info["book_id"])
    if book_id is None or not await books.sync_now(request.app[DB], request[USER_ID], book_id):
        return problem(404, "No such address book to sync (a .vcf import is not synced: import the file again).",
                       request=request)
    return redirect("/settings#address-books")


@requires_user
async def switch_public(request: web.Request) -> web.StreamResponse:
    account_id = parse_id(request.match_info["account_id"])
    on = str((await request.post()).get("public", "")) == "on"
    if account_id is None or not await books.set_public(request.app[DB], request[USER_ID], account_id, on):
        return problem(404, "No such mailbox.", request=request)
    return redirect("/settings#public-profiles")


class _BadForm(Exception):
    pass


class _TooLarge(Exception):
    pass


@requires_user
async def import_file(request: web.Request) -> web.StreamResponse:
    limit = DEFAULT_LIMITS.file_bytes
    try:
        fields = await _multipart(request, limit)
    except _TooLarge:
        return problem(413, f"The file is over {limit // (1024 * 1024)} MiB; nothing was imported.",
                       "Export fewer contacts at a time, or add the address book over CardDAV.", request)
    except _BadForm:
        return problem(400, "That upload was not the import form; nothing was imported.", "Go back and try again.",
                       request)
    if not csrf_ok(request, fields.get("csrf_token", b"").decode("ascii", "replace")):
        return problem(403, "This form has expired or did not come from InboxLens.",
                       "Go back, reload the page and try again.", request)
    data = fields.get("file", b"")
    if not data:
        return problem(400, "Choose a .vcf file to import; nothing was imported.", request=request)
    label = books.clean_text(fields.get("label", b"").decode("utf-8", "replace"), books.MAX_LABEL) \
        or "Imported contacts"
    try:
        parsed = await imports.parse(data)
    except BadVCard as e:
        return problem(400, f"This file cannot be imported ({e.reason}); nothing was imported.",
                       "Export the contacts again as a vCard (.vcf) file.", request)
    if not parsed.profiles:
        return problem(400, "No card in this file has a usable e-mail address; nothing was imported.",
                       _reasons("Cards left out", parsed.skipped), request)
    user_id, config = request[USER_ID], request.app[PROFILES]

    async def check(conn: Any) -> None:
        await books.lock_and_count(conn, user_id, config.max_books_per_user)

    try:
        done = await imports.import_vcf(request.app[DB], user_id, label, parsed, check)
    except books.BookRefused as e:
        return problem(400, str(e) + " Nothing was imported.", request=request)
    books.log.info("address book %d imported from a .vcf file: %d card(s), %d skipped", done.book_id, done.cards,
                   sum(done.skipped.values()))
    return await settings_with(request, imported(label, done))


async def _multipart(request: web.Request, limit: int) -> dict[str, bytes]:
    """csrf_token, label and file of a multipart form, each read up to its bound."""
    if request.content_type != "multipart/form-data":
        raise _BadForm
    try:
        reader = await request.multipart()
        fields: dict[str, bytes] = {}
        for _ in range(4):
            part = await reader.next()
            if part is None:
                return fields
            if not isinstance(part, BodyPartReader) or part.name not in ("csrf_token", "label", "file") \
                    or part.name in fields:
                raise _BadForm
            fields[part.name] = await _read(part, limit if part.name == "file" else MAX_FIELD, part.name == "file")
    except (ValueError, AssertionError, RuntimeError):
        raise _BadForm from None
    raise _BadForm


async def _read(part: BodyPartReader, bound: int, is_file: bool) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > bound:
            raise _TooLarge if is_file else _BadForm
    return bytes(data)


async def settings_with(request: web.Request, notice: str) -> web.Response:
    """The settings page with a notice on top (views' own page, so both stay one)."""
    return await settings_page(request, notice=notice)


# ---- rendering: every value escaped ----

def imported(label: str, done: imports.Imported) -> str:
    cards = f"{done.cards:,} card{'' if done.cards == 1 else 's'}"
    return (f'<div class="notice" data-imported="{done.cards}"><p>Imported {cards} into '
            f"<strong>{escape(label)}</strong>.</p>{_reasons('Cards left out', done.skipped)}"
            f"{_reasons('Values left out of imported cards', done.dropped)}</div>")


def _reasons(title: str, counts: Mapping[str, int]) -> str:
    if not counts:
        return ""
    items = "".join(f"<li>{escape(reason)}: {n:,}</li>" for reason, n in sorted(counts.items()))
    return f'<p>{escape(title)}:</p><ul class="reasons">{items}</ul>'


async def section(request: web.Request, user_id: int, csrf: str) -> str:
    listed = await books.books_of(request.app[DB], user_id)
    switches = await books.public_switches(request.app[DB], user_id)
    config = request.app[PROFILES]
    sources = [name for name, on in (("Gravatar", config.gravatar), ("Libravatar", config.libravatar)) if on]
    return _books(listed, csrf) + _add_forms(csrf) + _public(switches, sources, csrf)


def _books(listed: list[dict[str, Any]], csrf: str) -> str:
    rows = "".join(_book_row(b, csrf) for b in listed) or '<tr><td colspan="6">No address book yet.</td></tr>'
    return ('<h2 id="address-books">Address books</h2><p>The card shows who a correspondent is from your own '
            "address books: name, organisation, title, photo and links, each with where it came from.</p>"
            "<table><thead><tr><th>Name</th><th>Kind</th><th>Cards</th><th>Last sync</th><th>Last error</th>"
            f"<th></th></tr></thead><tbody>{rows}</tbody></table>")


def _book_row(book: dict[str, Any], csrf: str) -> str:
    book_id, kind = int(book["id"]), str(book["kind"])
    synced = kind != "vcf"
    last = _when(book["last_sync_at"]) if book["last_sync_at"] else ("pending" if synced else "imported " +
                                                                     _when(book["created_at"]))
    error = escape(str(book["last_error"])) if book["last_error"] else ""
    sync = (f'<form method="post" action="/settings/books/{book_id}/sync" class="inline">{render.csrf_field(csrf)}'
            '<button type="submit">Sync now</button></form> ') if synced else ""
    remove = (f'<form method="post" action="/settings/books/{book_id}/remove" class="inline">'
              f'{render.csrf_field(csrf)}<button type="submit" class="danger">Remove</button></form>')
    return (f'<tr data-book="{book_id}"><td>{escape(str(book["label"]))}</td><td>{escape(KINDS.get(kind, kind))}</td>'
            f'<td>{int(book["cards"]):,}</td><td>{escape(last)}</td><td class="warn" data-error>{error}</td>'
            f"<td>{sync}{remove}</td></tr>")


def _add_forms(csrf: str) -> str:
    return ("<h3>Add a CardDAV address book</h3><p>Nextcloud, Fastmail, iCloud, Radicale and most others speak "
            "CardDAV: use the address book's own URL and an app password (not your main password). The password "
            "is sealed for InboxLens's vault at once and only the process that syncs can read it.</p>"
            f'<form method="post" action="/settings/books" class="stacked">{render.csrf_field(csrf)}'
            f'<label>Name <input name="label" maxlength="{books.MAX_LABEL}" required placeholder="Work contacts">'
            f'</label><label>URL <input name="url" type="url" maxlength="{books.MAX_URL}" required '
            'placeholder="https://dav.example.com/addressbooks/me/contacts/"></label>'
            f'<label>User name <input name="username" maxlength="{books.MAX_USERNAME}" required '
            'autocomplete="off"></label>'
            f'<label>App password <input name="password" type="password" maxlength="{books.MAX_PASSWORD}" '
            'required autocomplete="new-password"></label><button type="submit">Add address book</button></form>'
            f"<h3>Import a .vcf file</h3><p>Up to {DEFAULT_LIMITS.file_bytes // (1024 * 1024)} MiB and "
            f"{DEFAULT_LIMITS.cards:,} cards. A file that cannot be read is refused whole: nothing is half-imported."
            f' Only names, organisations, titles, photos, addresses and links are kept.</p>'
            f'<form method="post" action="{IMPORT_PATH}" enctype="multipart/form-data" class="stacked">'
            f'{render.csrf_field(csrf)}<label>Name <input name="label" maxlength="{books.MAX_LABEL}" '
            'placeholder="Imported contacts"></label><label>File <input name="file" type="file" '
            'accept=".vcf,text/vcard" required></label><button type="submit">Import</button></form>')


def _public(switches: list[dict[str, Any]], sources: list[str], csrf: str) -> str:
    head = f'<h2 id="public-profiles">Public profiles</h2><p data-public-explained>{escape(PUBLIC_SENTENCE)}</p>'
    if not sources:
        return head + "<p>The administrator has turned public profiles off on this server.</p>"
    if not switches:
        return head + "<p>Connect a mailbox first.</p>"
    rows = "".join(_switch(s, csrf) for s in switches)
    return (head + f"<p>Asked: {escape(', '.join(sources))}. Off unless you turn it on, per mailbox.</p>"
            f"<table><tbody>{rows}</tbody></table>")


def _switch(row: dict[str, Any], csrf: str) -> str:
    account_id, on = int(row["id"]), bool(row["public_profiles"])
    button = '<button type="submit" class="danger">Turn off (and delete what was found)</button>' if on \
        else '<button type="submit">Turn on</button>'
    return (f'<tr data-public="{account_id}"><td>{escape(str(row["address"]))}</td><td>{"On" if on else "Off"}</td>'
            f'<td><form method="post" action="/settings/public/{account_id}" class="inline">'
            f'{render.csrf_field(csrf)}<input type="hidden" name="public" value="{"off" if on else "on"}">'
            f"{button}</form></td></tr>")


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
