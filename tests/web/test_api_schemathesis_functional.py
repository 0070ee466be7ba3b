"""Schemathesis against the live web process, from the document it serves, with a real token.

Generated requests for every operation (valid by the document's schemas, so mostly
real paths with random ids, dates, orders and pages) must never get a 5xx, and every
answer must be documented: status, content type, headers and body schema. Bounded:
a fixed number of examples per operation, a per-request deadline, no example database.
Runs in a thread: the test's event loop keeps serving the OAuth provider meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from tests.web.conftest import Stack, account_id, bearer, connect, new_token, seed_metrics

EXAMPLES_PER_OPERATION = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]

pytestmark = pytest.mark.slow


@pytest.fixture
def web_settings() -> dict[str, Any]:
    return {"api_requests_per_minute": 100_000, "api_burst": 10_000}  # fuzz the API, not the limiter


def fuzz(base: str, headers: dict[str, str], account: int) -> Counter[tuple[str, int]]:
    """How many answers of each (operation, status) the checks passed."""
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json", timeout=10)
    seen: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        # Half the examples on the caller's own account, so the handlers behind the 404 are reached.
        for fixed in ({}, {"account_id": account}):
            known = {k: v for k, v in fixed.items() if "{" + k + "}" in operation.path}
            strategy = operation.as_strategy(path_parameters=known)

            @given(case=strategy)
            @settings(max_examples=EXAMPLES_PER_OPERATION // 2, deadline=timedelta(seconds=5), database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case: schemathesis.Case) -> None:
                response = case.call_and_validate(base_url=f"{base}/api/v1", headers=headers, checks=CHECKS,
                                                  timeout=10)
                seen[operation.label, response.status_code] += 1

            check()
    return seen


async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(stack: Stack):
    async with stack.browser() as browser:
        await connect(stack, browser, "alice@example.test")
        token = await new_token(browser)
    account = await account_id(stack, "alice@example.test")
    await seed_metrics(stack, account, "alice@example.test")
    seen = await asyncio.wait_for(asyncio.to_thread(fuzz, stack.web.url, bearer(token), account), 300)
    operations = {label for label, _ in seen}
    # Schemathesis leaves out the document's own operation; every other one ran in full.
    assert len(operations) == 11 and sum(seen.values()) >= 11 * EXAMPLES_PER_OPERATION
    assert seen["GET /me", 200] and seen["GET /accounts/{account_id}/correspondents/{address}", 404]
    assert sum(n for (label, status), n in seen.items() if "rollups" in label and status == 200) > 0
    assert "Traceback" not in stack.web.log() and token not in stack.web.log()
