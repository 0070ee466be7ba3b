"""log_format = "json": every child's log line is one JSON object; text stays the default."""

from __future__ import annotations

import io
import json
import logging

import pytest

from inboxlens import child
from tests.support.vaultproc import make_vault


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_event_and_any_error(restore_logging, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(child.sys, "stderr", out)
    child.setup_logging("inboxlens-web", "INFO", "json")
    log = logging.getLogger("inboxlens.web")
    log.info("account %d: %d new message(s)", 7, 3)
    try:
        raise ValueError("boom")
    except ValueError:
        log.error("failed", exc_info=True)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "account 7: 3 new message(s)" and first["level"] == "INFO"
    assert first["process"] == "inboxlens-web" and first["logger"] == "inboxlens.web" and "T" in first["time"]
    assert second["level"] == "ERROR" and "ValueError: boom" in second["error"]


async def test_a_child_started_with_json_logs_writes_only_json(tmp_path):
    vault = make_vault(tmp_path)
    vault.slice["config"]["log_format"] = "json"
    await vault.start()
    await vault.stop()
    lines = [line for line in vault.log().splitlines() if line.strip()]
    assert lines and all(json.loads(line)["process"] == "inboxlens-vault" for line in lines)
    assert any("serving on" in json.loads(line)["message"] for line in lines)
