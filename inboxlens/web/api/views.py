"""REST API handlers: the caller's accounts, their rollups and insights, sync, disconnect.

Reads come from the ``MetricsStore`` in the app state, whichever backend it is. An
account id that is not the caller's answers 404 exactly like one that does not exist.
Query parameters are checked here and refused with ``invalid_parameter``; ranges and
page sizes are bounded so that no request can ask for unbounded work.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import re
from collections import OrderedDict
from datetime import date, datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, TypeVar
from zoneinfo import ZoneInfo

from aiohttp import web

from inboxlens.errors import VaultError
from inboxlens.metrics.model import Card, Order, Period
from inboxlens.metrics.store import MetricsStore
from inboxlens.profiles import read
from inboxlens.service_errors import MetricsUnavailable
from inboxlens.web import accounts
from inboxlens.web.api.errors import ApiError
from inboxlens.web.auth import requires_api_caller
from inboxlens.web.pages.views import parse_id
from inboxlens.web.state import CALLER, DB, KEEP_CACHE_CONTROL, METRICS, PROFILE_CACHE, SESSIONS, VAULT

MAX_RANGE_DAYS: dict[str, int] = {"day": 366, "week": 5 * 366, "month": 10 * 366}
DEFAULT_RANGE_DAYS: dict[str, int] = {"day": 29, "week": 7 * 12 - 1, "month": 365}
MAX_LIMIT = 200
MAX_OFFSET = 100_000
MAX_ADDRESS = 320
EARLIEST, LATEST = date(1970, 1, 1), date(2999, 12, 31)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ADDRESS = re.compile(r"[^\s\x00-\x1f\x7f]{1,320}")
T = TypeVar("T")
KEPT_JSON = 2_048  # card parts whose JSON is kept, for a store that hands out the same object again


@requires_api_caller
async def me(request: web.Request) -> web.Response:
    user_id = request[CALLER].user_id
    pool = request.config_dict[DB]
    email = await pool.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    rows = await accounts.accounts_with_sync(pool, user_id)
    for row in rows:
        row["status"] = await accounts.live_status(pool, request.config_dict[VAULT], row)
    return web.json_response({"user": {"id": user_id, "email": email}, "accounts": [_account(r) for r in rows]})


def _account(row: dict[str, Any]) -> dict[str, Any]:
    fields = ("id", "address", "provider", "time_zone", "status", "connected_at", "last_sync_at", "next_sync_at",
              "messages_seen", "failures", "last_error")
    row = {**row, "next_sync_at": row["next_run_at"]}
    return {**{f: plain(row[f]) for f in fields}, "needs_reconnect": row["status"] == "reauth_required"}


@requires_api_caller
async def rollups(request: web.Request) -> web.Response:
    account = await _own_account(request)
    period: Period = _choice(request, "period", ("day", "week", "month"), "day")  # type: ignore[assignment]
    first, last = _range(request, period, _today(account["time_zone"]))
    read = {"day": _metrics(request).daily, "week": _metrics(request).weekly, "month": _metrics(request).monthly}
    found = await _guard(read[period](int(account["id"]), first, last))
    return _json({"account_id": account["id"], "period": period, "from": first, "to": last, "rollups": found})


@requires_api_caller
async def correspondents(request: web.Request) -> web.Response:
    account = await _own_account(request)
    order: Order = _choice(request, "order", ("strength", "recency", "volume"), "strength")  # type: ignore[assignment]
    limit = _int_param(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
    found = await _guard(_metrics(request).relationships(int(account["id"]), now=_now(), order=order, limit=limit,
                                                         offset=offset))
    return _json({"account_id": account["id"], "order": order, "limit": limit, "offset": offset,
                  "correspondents": found})


@requires_api_caller
async def card(request: web.Request) -> web.Response:
    account_id = await _own_account_id(request)
    address = request.match_info["address"].strip().lower()
    if not _ADDRESS.fullmatch(address):
        raise ApiError(400, "invalid_parameter", f"address: 1 to {MAX_ADDRESS} characters without spaces.")
    found, profile = await _guard(card_and_profile(request, account_id, address))
    if found is None:
        raise ApiError(404, "not_found", "This account has no message from or to that address.")
    return web.json_response(text=card_json(account_id, address, found, profile))


async def card_and_profile(request: web.Request, account_id: int, address: str) -> tuple[Card | None, str | None]:
    """The metrics card and the profile block's JSON (profiles/read.py), kept until their stamps move."""
    return await card_with_profile(_metrics(request), request.config_dict[DB], request.config_dict[PROFILE_CACHE],
                                   account_id, address, _now())


async def card_with_profile(store: MetricsStore, pool: Any, cache: read.ProfileCache, account_id: int, address: str,
                            now: datetime) -> tuple[Card | None, str | None]:
    """PostgreSQL's store reads the profile stamp with the card's state, on its connection: a card
    whose profiles did not change costs no round trip more. Another store (Cassandra) answers the
    card; the stamp is then one primary-key lookup in PostgreSQL."""
    async def profile(db: Any, state: Any) -> str:
        return await cache.block_json(db, account_id, address, state)

    with_profile = getattr(store, "card_with", None)
    if with_profile is not None:
        found, text = await with_profile(account_id, address, now=now, extra=profile)
        return found, text
    found = await store.card(account_id, address, now=now)
    if found is None:
        return None, None
    async with pool.acquire() as db:
        state = await db.fetchrow(read.STAMP, account_id)
        return found, (await profile(db, state) if state is not None else None)


@requires_api_caller
async def photo(request: web.Request) -> web.StreamResponse:
    """A profile photo, by its opaque id, only to the user whose profile it is (any other: 404)."""
    cache = request.config_dict[PROFILE_CACHE]
    found = await read.photo(request.config_dict[DB], cache.ids, request[CALLER].user_id,
                             request.match_info["opaque"])
    if found is None:
        raise ApiError(404, "not_found", "No such photo.")
    body, media_type = found
    response = web.Response(body=body, content_type=media_type,
                            headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"})
    response[KEEP_CACHE_CONTROL] = True
    return response


@requires_api_caller
async def owed(request: web.Request) -> web.Response:
    return await _pending_page(request, "owed")


@requires_api_caller
async def awaiting(request: web.Request) -> web.Response:
    return await _pending_page(request, "awaiting")


async def _pending_page(request: web.Request, which: str) -> web.Response:
    """A page of the owed or awaiting messages, oldest first, and how many there are."""
    account = await _own_account(request)
    limit = _int_param(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
    store = _metrics(request)
    read = store.owed_page if which == "owed" else store.awaiting_page
    found, total = await _guard(read(int(account["id"]), now=_now(), limit=limit, offset=offset))
    return _json({"account_id": account["id"], "limit": limit, "offset": offset, "total": total, which: found})


@requires_api_caller
async def senders(request: web.Request) -> web.Response:
    """A page of sender domains (most messages first) and the MAX_LIMIT newest flags."""
    account = await _own_account(request)
    limit = _int_param(request, "limit", 50, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, MAX_OFFSET)
    domains, total = await _guard(_metrics(request).sender_domains_page(int(account["id"]), limit=limit,
                                                                        offset=offset))
    flags = await _guard(_metrics(request).auth_flags(int(account["id"]), limit=MAX_LIMIT))
    return _json({"account_id": account["id"], "limit": limit, "offset": offset, "domains_total": total,
                  "domains": domains, "flags": flags})


@requires_api_caller
async def sync(request: web.Request) -> web.Response:
    account = await _own_account(request)
    if account["status"] != "active":
        raise ApiError(409, "needs_reconnect", f"This mailbox is {account['status']}: reconnect it first.")
    due = await accounts.request_sync(request.config_dict[DB], int(account["id"]))
    return _json({"account_id": account["id"], "next_sync_at": due}, status=202)


@requires_api_caller
async def disconnect(request: web.Request) -> web.Response:
    account, user_id = await _own_account(request), request[CALLER].user_id
    try:
        revocation, deleted = await accounts.disconnect(request.config_dict[DB], request.config_dict[VAULT],
                                                        _metrics(request), user_id, account,
                                                        address_key=request.config_dict[SESSIONS].address_key())
    except VaultError:
        raise ApiError(503, "vault_unavailable", "The token vault did not answer; nothing was disconnected. "
                                                 "Try again in a moment.") from None
    return _json({"account_id": account["id"], "address": account["address"], "revocation": revocation,
                  "deleted": deleted})


async def _own_account(request: web.Request) -> dict[str, Any]:
    account_id = parse_id(request.match_info["account_id"])
    account = await accounts.account_of(request.config_dict[DB], request[CALLER].user_id, account_id) \
        if account_id else None
    if account is None:
        raise ApiError(404, "not_found", "You have no account with this id.")
    return account


async def _own_account_id(request: web.Request) -> int:
    """The id of the caller's account in the path, for a handler that needs nothing else of it.

    A token's verification listed the user's accounts (tokens.py: at most VERIFIED_FOR old):
    one of them needs no lookup. An account disconnected since then is still the same user's:
    with PostgreSQL metrics its card reads nothing (the card joins mail_accounts); with
    Cassandra, until disconnect's forget_account has run, its own card may still be read for
    that second. One connected since, or any other id, is looked up."""
    caller, account_id = request[CALLER], parse_id(request.match_info["account_id"])
    if caller.accounts is not None and account_id in caller.accounts:
        return account_id
    return int((await _own_account(request))["id"])


def _metrics(request: web.Request) -> MetricsStore:
    return request.config_dict[METRICS]


async def _guard(awaitable: Awaitable[T]) -> T:
    """The store's answer; a metrics backend that is down is a 503, not a 500."""
    try:
        return await awaitable
    except MetricsUnavailable:
        raise ApiError(503, "metrics_unavailable", "The metrics store did not answer; try again shortly.") from None


def _choice(request: web.Request, name: str, options: tuple[str, ...], default: str) -> str:
    value = request.query.get(name, default)
    if value not in options:
        raise ApiError(400, "invalid_parameter", f"{name}: one of {', '.join(options)}.")
    return value


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and low <= int(text) <= high):
        raise ApiError(400, "invalid_parameter", f"{name}: a whole number from {low} to {high}.")
    return int(text)


def _date_param(request: web.Request, name: str) -> date | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = date.fromisoformat(text) if _DATE.fullmatch(text) else None
    except ValueError:
        value = None
    if value is None or not EARLIEST <= value <= LATEST:
        raise ApiError(400, "invalid_parameter", f"{name}: a date YYYY-MM-DD from {EARLIEST} to {LATEST}.")
    return value


def _range(request: web.Request, period: str, today: date) -> tuple[date, date]:
    last = _date_param(request, "to") or today
    first = _date_param(request, "from") or max(EARLIEST, last - timedelta(days=DEFAULT_RANGE_DAYS[period]))
    if first > last:
        raise ApiError(400, "invalid_parameter", "from: must not be after to.")
    if (last - first).days >= MAX_RANGE_DAYS[period]:
        raise ApiError(400, "invalid_parameter", f"from, to: at most {MAX_RANGE_DAYS[period]} days apart "
                                                 f"for period={period}.")
    return first, last


def _today(time_zone: str) -> date:
    return datetime.now(ZoneInfo(time_zone)).date()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(plain(body), status=status)


def card_json(account_id: int, address: str, card: Card, profile: str | None = None) -> str:
    """``json.dumps(plain(...))`` of a card's answer, byte for byte, but the parts a store may
    hand out again and again (the PostgreSQL store keeps reply times, domain and flags until
    the next fold: the very same objects) are encoded once. ``profile``: the profile block's
    JSON text (``null`` for none), put after the card; None leaves the key out."""
    fields = ", ".join(f'"{name}": {_encoded_once(value) if name in _KEPT_PARTS else json.dumps(plain(value))}'
                       for name, value in zip(_CARD_FIELDS, _card_values(card)))
    extra = f', "profile": {profile}' if profile is not None else ""
    return (f'{{"account_id": {json.dumps(account_id)}, "correspondent": {json.dumps(address)}, '
            f'"card": {{{fields}}}{extra}}}')


def _encoded_once(value: Any) -> str:
    """The JSON of an immutable value, by identity (kept with it, so its id is not reused)."""
    found = _ENCODED.get(id(value))
    if found is not None and found[0] is value:
        _ENCODED.move_to_end(id(value))
        return found[1]
    text = json.dumps(plain(value))
    _ENCODED[id(value)] = (value, text)
    if len(_ENCODED) > KEPT_JSON:
        _ENCODED.popitem(last=False)
    return text


_CARD_FIELDS = tuple(f.name for f in dataclasses.fields(Card))
_card_values = operator.attrgetter(*_CARD_FIELDS)
_KEPT_PARTS = frozenset({"replies", "domain", "flags"})  # frozen dataclasses, and a tuple of them
_ENCODED: OrderedDict[int, tuple[Any, str]] = OrderedDict()


def plain(value: Any) -> Any:
    """JSON-able data: dataclasses as objects, times as ISO 8601 (UTC), durations as seconds.

    A card is a few hundred values: each is converted by a function looked up by its exact
    type (a dataclass's fields found once), not by a chain of isinstance tests; strings,
    numbers, booleans and None pass as they are without a call."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    convert = _CONVERT.get(kind)
    return convert(value) if convert is not None else _plain_other(value)


def _plain_other(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        _CONVERT[type(value)] = _object_of(tuple(f.name for f in dataclasses.fields(value)))
        return plain(value)
    if isinstance(value, datetime):
        return _time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return _object(value)
    if isinstance(value, (list, tuple, frozenset)):
        return _array(value)
    return value


def _object_of(names: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    values = operator.attrgetter(*names) if len(names) > 1 else lambda v: (getattr(v, names[0]),)
    return lambda v: {name: x if type(x) in _AS_IS else plain(x) for name, x in zip(names, values(v))}


def _time(value: datetime) -> str:
    if value.tzinfo is not timezone.utc:  # PostgreSQL's are in UTC already
        value = value.astimezone(timezone.utc)
    return value.isoformat().replace("+00:00", "Z")


def _object(value: dict[Any, Any]) -> dict[str, Any]:
    return {str(k): v if type(v) in _AS_IS else plain(v) for k, v in value.items()}


def _array(value: Any) -> list[Any]:
    return [v if type(v) in _AS_IS else plain(v) for v in value]


_AS_IS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
_CONVERT: dict[type, Callable[[Any], Any]] = {
    datetime: _time, date: date.isoformat, timedelta: timedelta.total_seconds, dict: _object, list: _array,
    tuple: _array, frozenset: _array}
