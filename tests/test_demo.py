"""The demo's generated mailbox, and demo mode existing only in a demo's own state directory."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from inboxlens import demo
from inboxlens.web import demo as web_demo
from inboxlens.web.app import make_app


def test_demo_mode_exists_only_in_a_demo_state_directory(tmp_path: Path):
    marker = '{"email": "demo@inboxlens.invalid", "login_sha256": "00"}'
    real = tmp_path / "inboxlens"
    real.mkdir()
    (real / web_demo.MARKER).write_text(marker)  # a stray marker in a real state directory
    app = make_app()
    assert not web_demo.install(app, real)
    assert web_demo.DEMO not in app and not [r for r in app.router.routes() if "/demo" in r.resource.canonical]
    (tmp_path / "inboxlens-demo").mkdir()
    assert not web_demo.install(make_app(), tmp_path / "inboxlens-demo")  # no marker: not a demo either
    (tmp_path / "inboxlens-demo" / web_demo.MARKER).write_text(marker)
    demo_app = make_app()
    assert web_demo.install(demo_app, tmp_path / "inboxlens-demo")
    assert [r for r in demo_app.router.routes() if r.resource.canonical == "/demo/login"]


def test_the_generated_mailbox_is_the_same_for_the_same_seed_and_has_every_kind():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = demo.mailbox(1, now)
    assert rows == demo.mailbox(1, now) and len(rows) > 500
    assert {r.direction for r in rows} == {"sent", "received"} and any(r.automated for r in rows)
    assert any(r.in_reply_to for r in rows) and any(r.dkim == "fail" for r in rows)
    assert all(r.sent_at <= now for r in rows) and len({r.msg_key for r in rows}) == len(rows)
