"""The extension's browser test runs against the web package's real stack (web + vault + PostgreSQL)."""

from __future__ import annotations

from tests.web.conftest import stack, web_settings  # noqa: F401  (fixtures, re-exported for this package)
