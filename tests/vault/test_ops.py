"""The operations table: who may call what, strict arguments, and no drift from handlers or client."""

from __future__ import annotations

import base64
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inboxlens.errors import BadRequest
from inboxlens.vault import ops
from inboxlens.vault.client import VaultClient
from inboxlens.vault.ops import ADMIN, HARVEST, OPS, WEB, permitted
from inboxlens.vault.server import Vault

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


def _public_methods(cls: type, prefix: str = "") -> set[str]:
    return {name[len(prefix):] for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
            if name.startswith(prefix) and not name.startswith("_")}


def test_table_handlers_and_client_methods_cannot_drift():
    handlers = _public_methods(Vault, "answer_")
    client = _public_methods(VaultClient) - {"call", "close"}
    assert handlers == set(OPS), "every row needs Vault.answer_<op>, and every answer_<op> a row"
    assert client == set(OPS), "every row needs VaultClient.<op>, and every client method a row"
    for op, row in OPS.items():
        handler_args = set(inspect.signature(getattr(Vault, f"answer_{op}")).parameters) - {"self"}
        assert handler_args == set(row.args), op


@pytest.mark.parametrize("op, allowed", [
    ("public_key", {WEB, HARVEST, ADMIN}), ("set", {WEB}), ("forget", {WEB}), ("token_state", {WEB}),
    ("get", {HARVEST}), ("secret", {HARVEST}),
    ("status", {ADMIN}), ("rotate", {ADMIN}), ("rewrap", {ADMIN}), ("revoke", {ADMIN}),
])
def test_permit_table(op, allowed):
    for role in (WEB, HARVEST, ADMIN, None):
        assert permitted(role, op) == (role in allowed)


@pytest.mark.parametrize("op", ["no_such_op", "answer_get", "__init__", "", 3, None, ["get"], {"get": 1}])
def test_unknown_operations_are_permitted_to_nobody(op):
    for role in (WEB, HARVEST, ADMIN, None):
        assert not permitted(role, op)


@pytest.mark.parametrize("op, args", [
    ("get", {}), ("get", {"account_id": "a", "x": 1}), ("get", {"account_id": "", "rejected": ""}),
    ("get", {"account_id": "a/../b", "rejected": ""}), ("get", {"account_id": "a" * 129, "rejected": ""}),
    ("get", []), ("get", {"account_id": "a", "rejected": 7}),
    ("set", {"account_id": "a", "provider": "Google", "sealed": "AAAA"}),
    ("set", {"account_id": "a", "provider": "g", "sealed": "not base64!"}),
    ("set", {"account_id": "a", "provider": "g", "sealed": "A" * 20000}),
    ("rewrap", {"limit": 0}), ("rewrap", {"limit": True}), ("rewrap", {"limit": 1001}),
    ("secret", {"account_id": "book:7", "rejected": ""}), ("secret", {"account_id": 7}), ("secret", {}),
    ("revoke", {"key_id": "1"}), ("forget", {"account_id": "a"}), ("forget", {"account_id": "a", "revoke": 1}),
])
def test_malformed_arguments_are_refused(op, args):
    with pytest.raises(BadRequest):
        ops.check_args(op, args)


def test_well_formed_arguments_are_checked_and_converted():
    args = ops.check_args("set", {"account_id": "acct:42@example.test", "provider": "google",
                                  "sealed": base64.b64encode(b"\x01abc").decode()})
    assert args["sealed"] == b"\x01abc"
    assert ops.check_args("rewrap", {"limit": 1000}) == {"limit": 1000}
    assert ops.check_args("secret", {"account_id": "book:42"}) == {"account_id": "book:42"}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(OPS)), json_values)
def test_validator_never_fails_other_than_bad_request(op, args):
    try:
        checked = ops.check_args(op, args)
    except BadRequest:
        return
    assert set(checked) == set(OPS[op].args)
