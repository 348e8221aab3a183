"""The signed approval link page in a real browser: headless Chromium opens it, approves, and
sees the confirmation (Debian's chromium and chromedriver, installed by scripts/dev)."""

from __future__ import annotations

import asyncio
import shutil

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.utils.approvals import emailed_link, eventually
from tests.utils.deals import FINANCE, REP, create_deal, wait_for_stage


def _browser() -> webdriver.Chrome:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromedriver are installed by `make test`"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # Headless, no network beyond loopback: without the background-networking flags Chromium
    # tries to reach Google's services at start.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _approve_in_browser(url: str) -> tuple[str, str, str]:
    browser = _browser()
    try:
        browser.get(url)
        title = browser.title
        reason = browser.find_element(By.CLASS_NAME, "reason").text
        browser.find_element(By.ID, "comment").send_keys("Looks good from finance.")
        browser.find_element(By.CSS_SELECTOR, "button.approve").click()
        outcome = WebDriverWait(browser, 20).until(
            expected_conditions.presence_of_element_located((By.ID, "outcome"))
        )
        return title, reason, outcome.text
    finally:
        browser.quit()


async def test_approver_opens_the_link_in_chromium_approves_and_sees_the_confirmation(http, auth):
    deal = await create_deal(http, auth(REP))  # Finance Director only
    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    sid = f"{deal['id']}.v1.s0.finance_director"
    link = await emailed_link(http, FINANCE, sid)

    title, reason, outcome = await asyncio.to_thread(_approve_in_browser, link)

    assert deal["name"] in title
    assert "25,000.00 USD Finance Director threshold" in reason
    assert outcome.startswith("Approved.")
    final = await wait_for_stage(http, deal["id"], auth(REP), "awaiting_signature")
    approval = final["approvals"][0]
    assert (approval["decided_by"], approval["comment"]) == (FINANCE, "Looks good from finance.")

    async def link_spent():
        return (await http.get("/" + link.split("/", 3)[3])).status_code == 409

    assert await eventually(link_spent, what="the link refusing a second use")
