"""The extension's id follows from the public key in its manifest, and the Settings page names it."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from inboxlens.web.pages import render

MANIFEST = Path(__file__).resolve().parents[2] / "extension" / "manifest.json"


def extension_id(public_key_b64: str) -> str:
    digest = hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def test_the_settings_page_shows_the_cors_line_for_the_manifest_key() -> None:
    key = json.loads(MANIFEST.read_text())["key"]
    assert extension_id(key) == render.EXTENSION_ID
    page = render.settings([], "csrf", None)
    assert f'cors_origins = ["chrome-extension://{render.EXTENSION_ID}"]' in page
    assert "<p data-handoff>" in page and "<strong>Connect</strong>" in page  # the paste-free way, named


def test_the_manifest_holds_a_public_key_only() -> None:
    text = MANIFEST.read_text()
    assert "PRIVATE KEY" not in text
    assert len(base64.b64decode(json.loads(text)["key"])) < 600  # a 2048-bit SubjectPublicKeyInfo is 294 bytes
