"""Quantities and percentages that normalize to exponent form (10 -> 1E+1) print as people write
them: in the API's JSON, the approval Slack message, the approval email and the link page."""

from __future__ import annotations

import httpx

from tests.utils.approvals import emailed_link, mails_to, path_of, slack_request_for
from tests.utils.deals import FINANCE, REP, create_deal, wait_for_stage


def _no_exponent(text: str) -> None:
    for exponent in ("E+", "E-"):
        assert exponent not in text, text


async def test_round_numbers_never_print_in_exponent_form(http: httpx.AsyncClient, auth):
    deal = await create_deal(
        http,
        auth(REP),
        discount_pct="20",  # normalizes to 2E+1
        line_items=[
            {"sku": "PLAT-ENT", "description": "Platform", "quantity": "100", "unit_price": "450"},
            {"sku": "ONB-STD", "description": "Onboarding", "quantity": "10", "unit_price": "500"},
        ],
    )
    read = (await http.get(f"/v1/deals/{deal['id']}", headers=auth(REP))).json()
    assert read["discount_pct"] == "20"
    assert [li["quantity"] for li in read["line_items"]] == ["100", "10"]

    await http.post(f"/v1/deals/{deal['id']}/ready-to-close", headers=auth(REP))
    await wait_for_stage(http, deal["id"], auth(REP), "awaiting_approval")
    step_id = f"{deal['id']}.v1.s0.finance_director"

    slack = await slack_request_for(http, FINANCE, step_id)
    assert "20% / 12 months" in str(slack["blocks"])
    _no_exponent(str(slack["blocks"]))

    link = await emailed_link(http, FINANCE, step_id)
    [mail] = [m for m in await mails_to(http, FINANCE) if f"Reference: {step_id}" in m["text"]]
    assert "Discount:  20%" in mail["text"] and "20%" in mail["html"]
    _no_exponent(mail["text"] + mail["html"])

    page = await http.get(path_of(link))
    assert page.status_code == 200 and "20%" in page.text
    _no_exponent(page.text)
