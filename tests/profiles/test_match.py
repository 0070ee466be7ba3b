"""Addresses compared as metrics stores correspondents; duplicates merged the same way whatever the order."""

from __future__ import annotations

import itertools

import pytest

from inboxlens.profiles.match import CardRef, match, merge, normalise_address
from inboxlens.profiles.vcard import Link, Photo, Profile


@pytest.mark.parametrize("text, address", [
    (" Ann@Example.ORG ", "ann@example.org"), ("mailto:ann@example.org", "ann@example.org"),
    ("<ann.lee+tag@mail.example.org>", "ann.lee+tag@mail.example.org"), ("zoë@bücher.example", "zoë@bücher.example"),
    ("ann", None), ("ann@localhost", None), ("a b@example.org", None), ("ann@@example.org", None),
    (".ann@example.org", None), ("ann@-example.org", None), ("x" * 65 + "@example.org", None), ("", None),
])
def test_normalise_address(text, address):
    assert normalise_address(text) == address


A = Profile(("a@example.org",), name="Ann", title="Chemist", links=(Link("url", "https://a.example"),))
A_WORK = Profile(("a@work.example", "a@example.org"), name="Dr. Ann Lee", organization="Acme",
                 photo=Photo(url="https://p.example/a.jpg"), links=(Link("url", "https://a.example"),))
A_LAB = Profile(("a@lab.example", "a@work.example"), title="Head of Lab", organization="Lab")
B = Profile(("b@example.org",), name="Bob")


def test_cards_sharing_an_address_merge_transitively_and_deterministically():
    cards = {CardRef(2, "/w/a.vcf"): A_WORK, CardRef(1, "/p/b.vcf"): B, CardRef(1, "/p/a.vcf"): A,
             CardRef(3, "/l/a.vcf"): A_LAB}
    results = {repr(merge(dict(order))) for order in itertools.permutations(cards.items())}
    assert len(results) == 1
    ann, bob = merge(cards)
    assert ann.cards == (CardRef(1, "/p/a.vcf"), CardRef(2, "/w/a.vcf"), CardRef(3, "/l/a.vcf"))
    assert (ann.profile.name, ann.profile.title, ann.profile.organization) == ("Ann", "Chemist", "Acme")
    assert ann.profile.emails == ("a@example.org", "a@work.example", "a@lab.example")
    assert ann.profile.links == (Link("url", "https://a.example"),)
    assert ann.sources == {"name": CardRef(1, "/p/a.vcf"), "title": CardRef(1, "/p/a.vcf"),
                           "organization": CardRef(2, "/w/a.vcf"), "photo": CardRef(2, "/w/a.vcf")}
    assert bob.profile == B and bob.cards == (CardRef(1, "/p/b.vcf"),)


def test_match_finds_every_address_of_a_person_however_it_is_written():
    people = merge({CardRef(1, "a"): A_WORK, CardRef(1, "b"): B})
    found = match(people, ["A@Work.Example", "a@example.org", "nobody@example.org", "not an address"])
    assert set(found) == {"A@Work.Example", "a@example.org"}
    assert found["A@Work.Example"] is found["a@example.org"] is people[0]
