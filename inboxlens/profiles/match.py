"""Profiles matched to correspondents by normalised address, duplicates merged into people.

An address is compared as metrics stores a correspondent: stripped and entirely lower-case
(``normalise_address``), so a card's ``Ann@Example.COM`` finds the correspondent
``ann@example.com``. One person may have several addresses; every address of a card finds it.

Duplicates: cards that share an address, within one address book or across several, are one
person (transitively: a card with addresses a and b joins the card with a and the card with b).
The merge is deterministic, whatever order the cards come in: the cards are ordered by
``CardRef`` (the address book's id, then the card's href), and each single-valued field (name,
name parts, organisation, title, photo) comes from the first card in that order that has it;
addresses and links are the union, in that order, without repeats. So an older address book
(a lower id) wins a conflict, and which card gave each field is kept in ``Person.sources``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # vcard normalises addresses with this module's function
    from inboxlens.profiles.vcard import Profile

MAX_ADDRESS = 254  # RFC 5321's path limit less the brackets
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~\u0080-\U0010ffff-]+"
_LOCAL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = r"[a-z0-9\u0080-\U0010ffff](?:[a-z0-9\u0080-\U0010ffff-]{0,61}[a-z0-9\u0080-\U0010ffff])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
SINGLE_FIELDS = ("name", "name_parts", "organization", "title", "photo")


def normalise_address(text: str) -> str | None:
    """``text`` as an address is compared (stripped, ``mailto:`` and ``<>`` removed, lower-case),
    or None when it is not shaped like local@domain (a dot-atom at a dotted domain)."""
    address = text.strip()
    if address[:7].lower() == "mailto:":
        address = address[7:]
    address = address.strip().removeprefix("<").removesuffix(">").lower()
    local, at, domain = address.rpartition("@")
    if not at or len(address) > MAX_ADDRESS or len(local) > 64:
        return None
    if _LOCAL.fullmatch(local) is None or _DOMAIN.fullmatch(domain) is None:
        return None
    return address


@dataclass(frozen=True, order=True)
class CardRef:
    """Where a card came from: the address book's id (lower wins a conflict) and the card's href."""

    book: int
    href: str


@dataclass(frozen=True)
class Person:
    """The cards that share addresses, merged; ``sources`` names the card each field came from."""

    profile: Profile
    cards: tuple[CardRef, ...]
    sources: Mapping[str, CardRef]  # field name ("name", "photo", ...) -> the card that gave it


def merge(cards: Mapping[CardRef, Profile]) -> list[Person]:
    """One Person per group of cards sharing an address, ordered by each group's first card."""
    order = sorted(cards)
    groups = _group_by_shared_address([cards[ref].emails for ref in order])
    return [_merged([(order[i], cards[order[i]]) for i in group]) for group in groups]


def by_address(people: Iterable[Person]) -> dict[str, Person]:
    """Every address of every person, to that person (addresses are already normalised)."""
    return {address: person for person in people for address in person.profile.emails}


def match(people: Iterable[Person], correspondents: Iterable[str]) -> dict[str, Person]:
    """The correspondents (as metrics stores them, or raw) that have a profile, to it."""
    index = by_address(people)
    found: dict[str, Person] = {}
    for correspondent in correspondents:
        key = normalise_address(correspondent)
        if key is not None and key in index:
            found[correspondent] = index[key]
    return found


def _group_by_shared_address(addresses: list[tuple[str, ...]]) -> list[list[int]]:
    """Indexes grouped when their address sets meet (union-find); groups and members in index order."""
    parent = list(range(len(addresses)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[str, int] = {}
    for i, emails in enumerate(addresses):
        for address in emails:
            j = first_with.setdefault(address, i)
            a, b = root(i), root(j)
            parent[max(a, b)] = min(a, b)  # the lower index stays the root: order is kept
    groups: dict[int, list[int]] = {}
    for i in range(len(addresses)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _merged(cards: list[tuple[CardRef, Profile]]) -> Person:
    first_ref, merged = cards[0]
    sources = {field: first_ref for field in SINGLE_FIELDS if getattr(merged, field)}
    for ref, profile in cards[1:]:
        for field in SINGLE_FIELDS:
            if field not in sources and getattr(profile, field):
                merged = replace(merged, **{field: getattr(profile, field)})
                sources[field] = ref
    emails = tuple(dict.fromkeys(a for _, p in cards for a in p.emails))
    links = tuple(dict.fromkeys(link for _, p in cards for link in p.links))
    merged = replace(merged, emails=emails, links=links)
    return Person(merged, tuple(ref for ref, _ in cards), sources)
