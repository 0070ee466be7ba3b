"""One exception tree: every deliberate error derives from ``errors.InboxLensError``, and the
tree drawn in ``errors``' docstring names each class, the ones in ``service_errors`` marked."""

from __future__ import annotations

import inspect
import re

from inboxlens import errors, service_errors


def _classes(module: object) -> dict[str, type]:
    return {name: cls for name, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, Exception) and cls.__module__ == getattr(module, "__name__")}


def test_every_class_is_in_the_one_tree_and_drawn_where_it_lives():
    drawn = dict(re.findall(r"[├└]── (\w+)( \*)?", errors.__doc__ or ""))
    here, beside = _classes(errors), _classes(service_errors)
    assert here and beside and not set(here) & set(beside)
    for name, cls in {**here, **beside}.items():
        assert issubclass(cls, errors.InboxLensError), name
    assert {n for n, star in drawn.items() if not star} == set(here) - {"InboxLensError"}
    assert {n for n, star in drawn.items() if star} == set(beside)


def test_each_vault_answer_code_names_one_class():
    assert set(service_errors.VAULT_ERRORS) == {c.code for c in _classes(errors).values()
                                                if issubclass(c, errors.VaultRefused) and c is not errors.VaultRefused}
