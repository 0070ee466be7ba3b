"""Roles from peer credentials: uids in separated mode, registered PIDs in development mode."""

from __future__ import annotations

import pytest

from inboxlens.vault.ops import ADMIN, HARVEST, WEB, Callers, Peer


def test_roles_by_uid_in_separated_mode():
    callers = Callers.from_dict({"web_uids": [1001], "harvest_uids": [1002], "admin_uids": [1003]})
    assert callers.role_of(Peer(10, 1001, 1001)) == WEB
    assert callers.role_of(Peer(10, 1002, 1002)) == HARVEST
    assert callers.role_of(Peer(10, 1003, 1003)) == ADMIN
    assert callers.role_of(Peer(10, 0, 0)) == ADMIN
    assert callers.role_of(Peer(10, 1004, 1001)) is None  # the gid alone names nothing


def test_registered_pids_in_development_mode():
    callers = Callers.from_dict({"shared_uid": 1000, "admin_uids": [1000]})
    callers.register(500, WEB)
    callers.register(501, HARVEST)
    assert callers.role_of(Peer(500, 1000, 1000)) == WEB
    assert callers.role_of(Peer(501, 1000, 1000)) == HARVEST
    assert callers.role_of(Peer(502, 1000, 1000)) == ADMIN  # the operator's own shell
    assert callers.role_of(Peer(500, 1001, 1001)) is None  # a registered PID under another uid is nobody
    callers.unregister(500)
    assert callers.role_of(Peer(500, 1000, 1000)) == ADMIN


@pytest.mark.parametrize("pid, role", [(1, WEB), (0, WEB), (500, ADMIN), (500, "root")])
def test_registration_accepts_only_web_and_harvest(pid, role):
    with pytest.raises(ValueError):
        Callers().register(pid, role)


@pytest.mark.parametrize("raw", [{"web_uids": "1001"}, {"web_uids": [-1]}, {"shared_uid": "x"}])
def test_bad_caller_slices_are_refused(raw):
    with pytest.raises(ValueError):
        Callers.from_dict(raw)
