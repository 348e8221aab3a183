"""The OpenAPI document is the contract: schemathesis against the live stack finds no deviation.

Every operation of the published ``/openapi.json`` gets a fixed number of generated requests,
valid ones (positive) and invalid ones (negative), as four callers: no key, a rep, an approver
and ops (keys from ``config/sandbox.toml``). Reads also get the ids of a real deal and campaign
(created first), so their 200 bodies are checked against the documented schema too. Each
response must pass:

- ``not_a_server_error``: no 5xx for any input;
- ``status_code_conformance``: the status is one the operation documents;
- ``content_type_conformance``: the content type is one documented for that status;
- ``response_schema_conformance``: the body matches the documented schema (errors included:
  ``ErrorResponse`` is closed, so an error body with another shape fails).

The run is bounded and repeatable: ``EXAMPLES`` per operation, mode and caller set,
``derandomize`` (a fixed seed), no shrinking (a failure is reported with its curl command,
which is reproduction enough), no example database. The API runs in this test session's event
loop, so schemathesis (synchronous, ``requests``) runs in a thread while the loop serves it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.utils.campaigns import campaign_payload, contact, unique
from tests.utils.deals import CFO, OPS, REP, create_deal, wait_for_stage

# Per operation and generation mode: ~30 operations x 2 modes x 25 stays around a minute or
# two on the 2-core CI machine, and still reaches every documented error of every operation.
EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.ignored_auth,
    schemathesis.checks.response_headers_conformance,
]
# The /_sandbox control paths act as the third parties (Slack, DocuSign, CRM, mail) and exist
# only in the sandbox profile; they are not part of the service's contract (API.md, "Sandbox").
EXCLUDED_PATHS = r"^/_sandbox/"
# Operations that start a process (workflows, renders, mail) never get a real draft: they would
# keep this 2-core machine busy long after the test. The live deal's closure already runs, so
# ready-to-close on it is the documented repeat (200), and starts nothing.
STARTS_PROCESSES = {
    ("POST", "/v1/deals/{deal_id}/ready-to-close"),
    ("POST", "/v1/campaigns/{campaign_id}/launch"),
}
STARTS_FROM_DRAFT = {"deal_id", "campaign_id"}  # their first known id is a draft


@dataclass
class Report:
    operations: list[str] = field(default_factory=list)
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)  # failure title -> operations
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(self.statuses.items()))
        return (
            f"schemathesis: {len(self.operations)} operations, {self.calls} requests "
            f"({codes}), {len(self.findings)} operations x modes with findings "
            f"{dict(sorted(self.kinds.items()))}, {self.seconds:.0f} s"
        )


def real_path_parameters(
    method: str, path: str, names: list[str], known: dict[str, list[str]]
) -> list[dict[str, str]]:
    """Every combination of real ids for the path parameters (none when one is unknown).

    A draft (the first deal id) is never given to an operation that starts a process.
    """
    if not names or not set(names) <= set(known):
        return []
    values = {n: known[n] for n in names}
    if (method, path) in STARTS_PROCESSES:
        values = {n: v[1:] if n in STARTS_FROM_DRAFT else v for n, v in values.items()}
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values.values())]


def run_contract(
    api_url: str, callers: list[dict[str, str]], known: dict[str, list[str]]
) -> Report:
    """Run every operation's examples against ``api_url``; collect findings, do not stop."""
    report = Report()
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json").exclude(
        path_regex=EXCLUDED_PATHS
    )
    http = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        report.operations.append(operation.label)
        reals = real_path_parameters(
            operation.method.upper(),
            operation.path,
            [p.name for p in operation.path_parameters],
            known,
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            cases = st.one_of(
                operation.as_strategy(generation_mode=mode),
                *(operation.as_strategy(generation_mode=mode, path_parameters=r) for r in reals),
            )

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=cases, caller=st.sampled_from(callers))
            def probe(case: Any, caller: dict[str, str]) -> None:
                response = case.call_and_validate(
                    base_url=api_url, session=http, headers=caller, checks=CHECKS, timeout=30
                )
                report.calls += 1
                code = response.status_code
                report.statuses[code] = report.statuses.get(code, 0) + 1
                seen = report.by_operation.setdefault(case.operation.label, {})
                seen[code] = seen.get(code, 0) + 1

            try:
                probe()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, or only free-form strings): the
                # operation has no negative examples, which is not a finding.
                report.unsatisfiable.append(f"{operation.label} [{mode.value}]")
            except (Exception, BaseExceptionGroup) as err:  # noqa: BLE001 - collect them all
                # schemathesis raises a FailureGroup (a BaseExceptionGroup) of distinct failures.
                report.findings.append(f"{operation.label} [{mode.value}]: {err}")
                for failure in getattr(err, "exceptions", [err]):
                    title = getattr(failure, "title", type(failure).__name__)
                    report.kinds[title] = report.kinds.get(title, 0) + 1
    report.seconds = time.monotonic() - started
    return report


async def test_openapi_contract(api_url: str, auth) -> None:
    # Real resources, so that reads answer 200 with real bodies and state rules answer 409: a
    # draft deal, a deal whose closure waits for approval (quote and documents rendered), and
    # a draft campaign, all owned by the rep. Nobody among the callers may decide its step
    # (the finance director is not one), so the run does not move the live deal along.
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        draft = await create_deal(client, auth(REP))
        live = await create_deal(client, auth(REP))
        resp = await client.post(f"/v1/deals/{live['id']}/ready-to-close", headers=auth(REP))
        assert resp.status_code == 202, resp.text
        waiting = await wait_for_stage(client, live["id"], auth(REP), "awaiting_approval")
        assert waiting["documents"] and waiting["approvals"], waiting
        email = f"{unique('c')}@contract.example"
        resp = await client.post(
            "/v1/campaigns", json=campaign_payload([contact(email)]), headers=auth(REP)
        )
        assert resp.status_code == 201, resp.text
        campaign_id = resp.json()["id"]
    known = {
        "deal_id": [draft["id"], live["id"]],
        "document_id": [waiting["documents"][0]["id"]],
        "step_id": [waiting["approvals"][0]["step_id"]],
        "campaign_id": [campaign_id],
        "email": [email],
    }
    callers = [{}, auth(REP), auth(CFO), auth(OPS)]

    report = await asyncio.to_thread(run_contract, api_url, callers, known)

    print(report.summary())
    for label, seen in report.by_operation.items():
        print(f"  {label}: {dict(sorted(seen.items()))}")
    print(f"  no negative examples possible: {', '.join(report.unsatisfiable) or 'none'}")
    assert len(report.operations) >= 30, report.operations
    # Every caller and both modes were exercised: refusals and successes alike.
    assert {200, 401, 403, 404, 409, 422} <= set(report.statuses), report.summary()
    assert not report.findings, report.summary() + "\n\n" + "\n\n".join(report.findings)
