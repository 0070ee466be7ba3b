"""The dashboard in headless Chromium: content, charts drawn, no console complaint, nothing fetched elsewhere.

The browser and its DevTools client are those of ``test_browser_functional``. A screenshot of
the page is left in the test's tmp_path for a human to look at.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.web.conftest import Stack, account_id
from tests.web.test_browser_functional import Page, chromium, open_tab, pytestmark as browser_marks
from tests.web.test_dashboard_functional import ALICE, COLLEAGUE, FRIEND, TZ, alice_mail, fold

pytestmark = browser_marks


def requests_to(page: Page, since: int) -> list[str]:
    """Every URL the tab asked for since `since`, whatever the kind (documents, styles, scripts, images)."""
    return [e["params"]["request"]["url"] for e in page.cdp.events[since:]
            if e["method"] == "Network.requestWillBeSent" and e.get("sessionId") == page.session]


@pytest.mark.slow
async def test_the_dashboard_in_a_browser(stack: Stack, tmp_path: Path) -> None:
    stack.oauth.login = ALICE
    async with chromium(TZ) as cdp:
        page = await open_tab(cdp)

        # Connect (the provider approves at once), then give the mailbox something to show.
        await page.goto(f"{stack.web.url}/connect/test?tz={TZ}")
        alice = await account_id(stack, ALICE)
        await fold(stack, alice, ALICE, alice_mail(alice, datetime.now(timezone.utc)))

        start = cdp.mark()
        assert await page.goto(f"{stack.web.url}/dashboard") == f"{stack.web.url}/dashboard"
        assert await page.evaluate("document.title") == "Dashboard · InboxLens"
        shown = await page.evaluate(f"""(() => {{
            const s = document.querySelector("section[data-account='{alice}']");
            return {{
                address: s.querySelector("h2").textContent,
                headings: [...s.querySelectorAll("h3")].map(h => h.textContent),
                charts: [...s.querySelectorAll("svg.chart")].map(c => c.getAttribute("aria-label")),
                bars: [...s.querySelectorAll("svg.chart rect.bar")].map(r => r.getBoundingClientRect().height),
                top: [...s.querySelectorAll("table.top tbody tr")].map(tr => tr.cells[0].textContent),
                owed: s.querySelectorAll("table.pending")[0].tBodies[0].rows.length,
                width: s.querySelector("svg.chart").getBoundingClientRect().width,
            }};
        }})()""")
        height = await page.evaluate("document.documentElement.scrollHeight")
        await page.send("Emulation.setDeviceMetricsOverride", {"width": 1200, "height": height,
                                                               "deviceScaleFactor": 1, "mobile": False})
        await page.screenshot(tmp_path / "dashboard.png")  # the whole page
        complaints, fetched = page.complaints(start), requests_to(page, start)

    assert shown["address"] == ALICE
    assert shown["headings"] == ["Messages per day", "Reply times", "Top correspondents", "You owe a reply",
                                 "Waiting for a reply"]
    assert [label.split(",")[0] for label in shown["charts"]] == ["Messages per day", "Median reply time per week"]
    assert shown["bars"] and all(h > 0 for h in shown["bars"]), "the bars were not drawn"
    assert 0 < shown["width"] <= 720, "the stylesheet did not size the chart"
    assert shown["top"] == [FRIEND, COLLEAGUE, "dana.o'neil&co@elsewhere.test"] and shown["owed"] == 2
    assert complaints == []
    web = urlsplit(stack.web.url).netloc
    assert fetched and all(urlsplit(u).netloc == web or u.startswith("data:") for u in fetched), fetched
    assert {urlsplit(u).path for u in fetched} >= {"/dashboard", "/static/dashboard.css", "/static/app.css"}
