"""Scenario ``signature`` (issue 4): DocuSign Connect "completed" to closed-won in CRM and Stripe.

A deal no approval rule fires for (2 x 99 USD, no discount), so ready-to-close takes it straight
to ``awaiting_signature``. Untimed, before the batch: the closure runs up to the envelope being
sent, every signer but the last views and signs, the last one views, and the deal shows those
recipients' statuses (so their Connect events are processed). Timed:

* the last signer's ``sign`` on the DocuSign sandbox control API is sent; the sandbox delivers
  the Connect webhook (``envelope-completed``, HMAC-signed) to the API before it answers;
* -> ``GET /v1/deals/{id}`` (polled) shows stage ``closed_won`` with ``billing.stripe_invoice_id``
  and ``crm.status == "closed_won"``: the signed documents were downloaded, the CRM deal marked
  closed-won with its note, the Stripe customer and invoice created, revenue and commission rows
  written.

The signature tracking's polling fallback keeps its production default (900 s): only the Connect
webhook can complete a run here.
"""

from __future__ import annotations

import time
from datetime import datetime

from bench.common import Batch, BenchError, Metric, Scenario, ms_since, run_batch, wait_untimed
from tests.utils.deals import REP

SMALL_DEAL = {  # 2 x 99: no approval rule fires (cf. tests/integration/test_signature_crash.py)
    "discount_pct": "0",
    "line_items": [
        {"sku": "STARTER", "description": "Starter", "quantity": "2", "unit_price": "99"}
    ],
}
EN_ROUTE_STAGES = frozenset({"awaiting_signature", "closing"})


class SignatureScenario(Scenario):
    name = "signature"
    metrics = (
        Metric(
            "closed_won",
            "signature: Connect -> closed-won (seen)",
            headline=True,
            short="closed-won",
        ),
        Metric("sign_call", "  of which sign call (Connect delivered)"),
        Metric("closed_won_set_workflow_clock", "  closed_won set (workflow timeline)"),
    )
    poll_what = "GET /v1/deals/{id}"

    async def batch(self, n: int) -> Batch:
        prepared = await run_batch(range(n), lambda _: self.prepare(), self.cfg.concurrency)
        batch = Batch()
        await run_batch(prepared, lambda p: self.complete(*p, batch), self.cfg.concurrency)
        return batch

    async def _envelope(self, deal_id: str) -> dict | None:
        resp = await self.api.sandbox.get(
            "/_sandbox/docusign/envelopes", params={"custom_field": f"dealflow_key={deal_id}.v1"}
        )
        if resp.status_code != 200:
            raise BenchError(f"DocuSign sandbox answered {resp.status_code}: {resp.text}")
        found = [e for e in resp.json()["envelopes"] if e["status"] in ("sent", "delivered")]
        return found[0] if found else None

    async def _act(self, envelope_id: str, email: str, action: str) -> dict:
        resp = await self.api.sandbox.post(
            f"/_sandbox/docusign/envelopes/{envelope_id}/recipients/{email}/{action}", json={}
        )
        if resp.status_code != 200:
            raise BenchError(f"DocuSign sandbox {action} answered {resp.status_code}: {resp.text}")
        body = resp.json()
        for delivery in body["deliveries"]:
            codes = [a.get("status_code") for a in delivery["attempts"]]
            if not any(code and 200 <= code < 300 for code in codes):
                raise BenchError(
                    f"Connect {delivery['event']} for {envelope_id} not accepted by the API: "
                    f"{delivery['attempts']}"
                )
        return body

    async def prepare(self) -> tuple[str, str, str]:
        """Untimed: a deal whose envelope waits only for the last signer's signature."""
        deal_id = await self.api.create_deal(REP, **SMALL_DEAL)
        resp = await self.api.http.post(
            f"/v1/deals/{deal_id}/ready-to-close", headers=self.api.auth(REP)
        )
        if resp.status_code != 202:
            raise BenchError(f"ready-to-close answered {resp.status_code}: {resp.text}")
        timeout = self.cfg.run_timeout
        envelope = await wait_untimed(
            f"envelope for {deal_id}", lambda: self._envelope(deal_id), timeout, 0.1
        )
        signers = sorted(envelope["recipients"], key=lambda r: r["routing_order"])
        for r in signers[:-1]:
            await self._act(envelope["envelope_id"], r["email"], "view")
            await self._act(envelope["envelope_id"], r["email"], "sign")
        last = signers[-1]["email"]
        await self._act(envelope["envelope_id"], last, "view")
        expected = {r["email"]: "completed" for r in signers[:-1]} | {last: "delivered"}

        async def settled() -> bool | None:
            deal = await self.api.get_deal(deal_id, REP)
            if deal["stage"] in ("draft", "quoting"):
                return None
            if deal["stage"] != "awaiting_signature":
                raise BenchError(
                    f"deal {deal_id} at {deal['stage']!r} ({deal.get('stage_reason')}), expected "
                    "awaiting_signature: the benchmark deal now needs approval?"
                )
            sig = deal.get("signature") or {}
            seen = {r["email"]: r["status"] for r in sig.get("recipients") or []}
            return True if seen == expected else None

        await wait_untimed(f"signers of {deal_id} shown", settled, timeout, 0.1)
        return deal_id, envelope["envelope_id"], last

    async def complete(self, deal_id: str, envelope_id: str, last: str, batch: Batch) -> None:
        wall_started = time.time()
        started = time.perf_counter()
        await self._act(envelope_id, last, "sign")
        signed = time.perf_counter()

        async def probe() -> dict | None:
            deal = await self.api.get_deal(deal_id, REP)
            billing, crm = deal.get("billing") or {}, deal.get("crm") or {}
            # closed_won, or already past it: the handoff starts right after closed_won, and
            # with the CRM beside Stripe a poll under load can first see the next stage.
            if (
                deal["stage"] in ("closed_won", "handoff")
                and billing.get("stripe_invoice_id")
                and crm.get("status") == "closed_won"
            ):
                return deal
            if deal["stage"] not in EN_ROUTE_STAGES | {"closed_won", "handoff"}:
                raise BenchError(
                    f"deal {deal_id} reached {deal['stage']!r} ({deal.get('stage_reason')}) "
                    "instead of closed_won"
                )
            return None

        deal, seen = await self.poll_until(f"deal {deal_id} closed-won", probe, batch, started)
        set_at = next(
            t["at"] for t in reversed(deal["timeline"]) if t["event"] == "stage.closed_won"
        )
        set_wall = datetime.fromisoformat(set_at).timestamp()
        batch.add("closed_won", ms_since(started, seen))
        batch.add("sign_call", ms_since(started, signed))
        batch.add("closed_won_set_workflow_clock", (set_wall - wall_started) * 1000)
