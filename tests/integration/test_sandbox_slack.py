"""The Slack sandbox, end to end: slack_sdk in, signed interaction payloads out.

The last tests hold the sandbox's declared method table (`sandbox.slack.methods.METHODS`) and its
real answers against Slack's published OpenAPI description, so the stand-in cannot drift
from the API the production code will meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from dealflow.settings import load_sandbox_file
from sandbox.__main__ import parse_args
from sandbox.server import RunningSandbox, run_sandbox
from sandbox.slack.methods import METHODS, MethodSpec

SECRETS = load_sandbox_file()["secrets"]
BOT_TOKEN = SECRETS["slack_bot_token"]
SIGNING_SECRET = SECRETS["slack_signing_secret"]

SARAH = "sarah.okafor@dealflow.example"
SARAH_ID = "U01FIN0001"
TOM = "tom.becker@dealflow.example"
TS_PATTERN = re.compile(r"^\d{10}\.\d{6}$")
DECISIONS = ("approve", "reject", "request_changes")

# slack_sdk's AsyncWebClient is built on aiohttp, which the project does not install yet.
HAVE_AIOHTTP = importlib.util.find_spec("aiohttp") is not None


def _approval_blocks(step_id: str) -> list[dict[str, Any]]:
    """What an approval request looks like: a summary and three decision buttons."""
    return [
        {
            "type": "section",
            "block_id": "summary",
            "text": {"type": "mrkdwn", "text": "*Acme Corp* needs your approval: 25% discount"},
        },
        {
            "type": "actions",
            "block_id": f"decision:{step_id}",
            "elements": [
                {
                    "type": "button",
                    "action_id": decision,
                    "text": {"type": "plain_text", "text": decision.replace("_", " ").title()},
                    "value": f"{step_id}:{decision}",
                    **({"style": "primary"} if decision == "approve" else {}),
                }
                for decision in DECISIONS
            ],
        },
    ]


# --------------------------------------------------------------------------------------
# A stand-in for the service's interactions endpoint.


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    valid: bool
    payload: dict[str, Any] | None


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)


@contextlib.contextmanager
def run_receiver(signing_secret: str) -> Iterator[Receiver]:
    """A tiny HTTP server that verifies Slack signatures as the service must.

    Valid requests get 200 with what it parsed; invalid ones 401. The sandbox waits for the
    answer before answering the click, so a test can read `requests` right after clicking.
    """
    verifier = SignatureVerifier(signing_secret)
    requests: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = dict(self.headers.items())
            valid = verifier.is_valid_request(body, headers)
            payload = json.loads(parse_qs(body.decode())["payload"][0]) if valid else None
            requests.append(Received(headers=headers, body=body, valid=valid, payload=payload))
            if payload is not None:
                status = 200
                answer = {"ok": True, "action_id": payload["actions"][0]["action_id"]}
            else:
                status, answer = 401, {"error": "invalid signature"}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            """Keep test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield Receiver(
            url=f"http://127.0.0.1:{port}/v1/webhooks/slack/interactions", requests=requests
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver(SIGNING_SECRET) as running:
        yield running


@pytest.fixture
async def sandbox(tmp_path: Path, receiver: Receiver) -> AsyncIterator[RunningSandbox]:
    # Token and signing secret are left to their default, config/sandbox.toml.
    async with run_sandbox(
        state_dir=tmp_path / "sandbox", interactions_url=receiver.url
    ) as running:
        yield running


class Slack:
    """One call surface over slack_sdk's sync and async clients, so tests run on both."""

    def __init__(self, client: Any, *, is_async: bool) -> None:
        self._client = client
        self._async = is_async

    async def call(self, name: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(self._client, name)
        if self._async:
            response = await method(**kwargs)
        else:  # urllib underneath: keep it off the event loop the sandbox runs on
            response = await asyncio.to_thread(method, **kwargs)
        return response.data


@pytest.fixture(params=["WebClient", "AsyncWebClient"])
def slack(request: pytest.FixtureRequest, sandbox: RunningSandbox) -> Slack:
    base_url = f"{sandbox.http_url}/slack/api/"
    if request.param == "AsyncWebClient":
        if not HAVE_AIOHTTP:
            pytest.fail("slack_sdk's AsyncWebClient needs aiohttp, which is not installed")
        from slack_sdk.web.async_client import AsyncWebClient

        return Slack(AsyncWebClient(token=BOT_TOKEN, base_url=base_url), is_async=True)
    return Slack(WebClient(token=BOT_TOKEN, base_url=base_url), is_async=False)


async def _messages(http_url: str, **params: Any) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=http_url, trust_env=False) as client:
        response = await client.get("/_sandbox/slack/messages", params=params)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


async def _web_api(
    http_url: str, method: str, *, token: str | None = BOT_TOKEN, **kwargs: Any
) -> dict[str, Any]:
    """A raw Web API call, for what slack_sdk would not send (missing token, form bodies)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(base_url=http_url, trust_env=False) as client:
        response = await client.post(f"/slack/api/{method}", headers=headers, **kwargs)
    assert response.status_code == 200, response.text  # Slack answers errors with 200 too
    return response.json()


async def _click(
    http_url: str, ts: str, action_id: str, user_email: str, **extra: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=http_url, trust_env=False, timeout=30) as client:
        return await client.post(
            f"/_sandbox/slack/messages/{ts}/actions/{action_id}",
            json={"user_email": user_email, **extra},
        )


async def _post_approval(http_url: str, *, to: str = SARAH_ID, step_id: str = "step-1") -> str:
    sent = await _web_api(
        http_url,
        "chat.postMessage",
        json={"channel": to, "text": "Approval needed", "blocks": _approval_blocks(step_id)},
    )
    assert sent["ok"], sent
    return sent["ts"]


# --------------------------------------------------------------------------------------
# The Web API through slack_sdk.


async def test_users_lookup_by_email_finds_org_people_and_not_others(slack: Slack) -> None:
    found = await slack.call("users_lookupByEmail", email="Sarah.Okafor@dealflow.example")
    user = found["user"]
    assert user["id"] == SARAH_ID
    assert user["name"] == "sarah.okafor"
    assert user["real_name"] == "Sarah Okafor"
    assert user["profile"]["email"] == SARAH
    assert user["tz"] == "America/Chicago"

    with pytest.raises(SlackApiError) as failure:
        await slack.call("users_lookupByEmail", email="nobody@dealflow.example")
    assert failure.value.response.data == {"ok": False, "error": "users_not_found"}


async def test_posted_buttons_and_updates_are_listed(slack: Slack, sandbox: RunningSandbox) -> None:
    identity = await slack.call("auth_test")
    assert identity["user_id"] and identity["team_id"]

    posted = await slack.call(
        "chat_postMessage",
        channel=SARAH_ID,
        text="Approval needed: Acme Corp",
        blocks=_approval_blocks("step-1"),
        metadata={"event_type": "approval_requested", "event_payload": {"step_id": "step-1"}},
    )
    assert posted["channel"] == "D" + SARAH_ID  # posting to a user ID opens the DM
    assert TS_PATTERN.match(posted["ts"])
    assert posted["message"]["ts"] == posted["ts"]
    assert posted["message"]["text"] == "Approval needed: Acme Corp"
    buttons = posted["message"]["blocks"][1]["elements"]
    assert [b["action_id"] for b in buttons] == list(DECISIONS)

    other = await slack.call("chat_postMessage", channel="#deal-desk", text="FYI: Acme Corp")
    assert float(other["ts"]) > float(posted["ts"])  # ts values only go up

    decided = [_approval_blocks("step-1")[0]]  # the buttons go once the step is decided
    updated = await slack.call(
        "chat_update",
        channel=posted["channel"],
        ts=posted["ts"],
        text="Approved by Sarah Okafor",
        blocks=decided,
    )
    assert updated["ts"] == posted["ts"] and updated["text"] == "Approved by Sarah Okafor"

    [listed] = await _messages(sandbox.http_url, user_email=SARAH)
    assert listed["ts"] == posted["ts"]
    assert listed["channel"] == "D" + SARAH_ID and listed["user_id"] == SARAH_ID
    assert listed["text"] == "Approved by Sarah Okafor"
    assert listed["blocks"] == decided
    assert listed["metadata"]["event_payload"] == {"step_id": "step-1"}
    [change] = listed["updates"]
    assert change["via"] == "chat.update" and change["text"] == "Approved by Sarah Okafor"
    assert listed["posted_at"].endswith("Z")

    by_channel = await _messages(sandbox.http_url, channel="deal-desk")
    assert [m["text"] for m in by_channel] == ["FYI: Acme Corp"]
    assert len(await _messages(sandbox.http_url)) == 2


async def test_auth_and_argument_errors_answer_like_slack(sandbox: RunningSandbox) -> None:
    url = sandbox.http_url
    missing = await _web_api(url, "auth.test", token=None)
    assert missing == {"ok": False, "error": "not_authed"}
    wrong = await _web_api(url, "auth.test", token="xoxb-not-ours")
    assert wrong == {"ok": False, "error": "invalid_auth"}
    # A token in the form body counts, as with Slack's older clients.
    assert (await _web_api(url, "auth.test", token=None, data={"token": BOT_TOKEN}))["ok"]

    no_text = await _web_api(url, "chat.postMessage", json={"channel": SARAH_ID})
    assert no_text == {"ok": False, "error": "no_text"}
    stranger = await _web_api(url, "chat.postMessage", json={"channel": "U0NOBODY01", "text": "x"})
    assert stranger == {"ok": False, "error": "channel_not_found"}
    bad_blocks = await _web_api(
        url, "chat.postMessage", data={"channel": SARAH_ID, "blocks": "[not json"}
    )
    assert bad_blocks == {"ok": False, "error": "invalid_blocks"}
    unknown = await _web_api(
        url, "chat.update", json={"channel": "D" + SARAH_ID, "ts": "1700000000.000001", "text": "x"}
    )
    assert unknown == {"ok": False, "error": "message_not_found"}

    async with httpx.AsyncClient(base_url=url, trust_env=False) as client:
        calls = (await client.get("/_sandbox/slack/calls")).json()["calls"]
    assert [c["method"] for c in calls][:2] == ["auth.test", "auth.test"]
    assert all("token" not in c["args"] for c in calls)  # tokens are never kept
    assert calls[-1]["response"] == unknown


async def test_form_bodies_carry_blocks_and_metadata_as_json_strings(
    sandbox: RunningSandbox,
) -> None:
    sent = await _web_api(
        sandbox.http_url,
        "chat.postMessage",
        data={
            "channel": SARAH_ID,
            "text": "Approval needed",
            "blocks": json.dumps(_approval_blocks("step-9")),
            "metadata": json.dumps({"event_type": "approval_requested", "event_payload": {}}),
        },
    )
    assert sent["ok"], sent
    [listed] = await _messages(sandbox.http_url)
    assert listed["blocks"] == _approval_blocks("step-9")
    assert listed["metadata"]["event_type"] == "approval_requested"


# --------------------------------------------------------------------------------------
# Clicking: signed block_actions payloads to the service, and response URLs back.


async def test_a_click_posts_a_signed_block_actions_payload(
    sandbox: RunningSandbox, receiver: Receiver
) -> None:
    ts = await _post_approval(sandbox.http_url)

    clicked = await _click(sandbox.http_url, ts, "approve", SARAH)
    assert clicked.status_code == 200, clicked.text
    answer = clicked.json()
    assert answer["delivered"] is True
    assert answer["status_code"] == 200
    assert answer["response"] == {"ok": True, "action_id": "approve"}

    [request] = receiver.requests
    assert request.valid  # slack_sdk's SignatureVerifier accepts it
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["X-Slack-Signature"].startswith("v0=")
    payload = request.payload
    assert payload is not None
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == SARAH_ID
    assert payload["user"]["username"] == payload["user"]["name"] == "sarah.okafor"
    assert payload["user"]["team_id"] == payload["team"]["id"]
    assert payload["api_app_id"] and payload["token"] and payload["trigger_id"]
    assert payload["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": "D" + SARAH_ID,
        "is_ephemeral": False,
    }
    assert payload["team"]["domain"]
    assert payload["enterprise"] is None and payload["is_enterprise_install"] is False
    assert payload["channel"] == {"id": "D" + SARAH_ID, "name": "directmessage"}
    assert payload["message"]["ts"] == ts
    assert payload["message"]["blocks"] == _approval_blocks("step-1")
    assert payload["state"] == {"values": {}}
    assert payload["response_url"].startswith(f"{sandbox.http_url}/slack/response_url/")
    [action] = payload["actions"]
    assert action["action_id"] == "approve"
    assert action["block_id"] == "decision:step-1"
    assert action["text"]["type"] == "plain_text" and action["text"]["text"] == "Approve"
    assert action["value"] == "step-1:approve"
    assert action["type"] == "button"
    assert TS_PATTERN.match(action["action_ts"])

    # The caller may send another value, e.g. to tamper with a step ID.
    await _click(sandbox.http_url, ts, "reject", SARAH, value="step-2:reject")
    assert receiver.requests[1].payload is not None
    assert receiver.requests[1].payload["actions"][0]["value"] == "step-2:reject"

    async with httpx.AsyncClient(base_url=sandbox.http_url, trust_env=False) as client:
        deliveries = (await client.get("/_sandbox/slack/deliveries")).json()["deliveries"]
    assert [(d["action_id"], d["status_code"]) for d in deliveries] == [
        ("approve", 200),
        ("reject", 200),
    ]
    assert deliveries[0]["url"] == receiver.url


async def test_the_response_url_replaces_or_deletes_the_message(
    sandbox: RunningSandbox, receiver: Receiver
) -> None:
    ts = await _post_approval(sandbox.http_url)
    assert (await _click(sandbox.http_url, ts, "approve", SARAH)).status_code == 200
    payload = receiver.requests[0].payload
    assert payload is not None

    decided = [{"type": "section", "text": {"type": "mrkdwn", "text": "Approved"}}]
    async with httpx.AsyncClient(trust_env=False) as client:
        replaced = await client.post(
            payload["response_url"],
            json={"replace_original": True, "text": "Approved", "blocks": decided},
        )
    assert replaced.json() == {"ok": True}
    [listed] = await _messages(sandbox.http_url)
    assert listed["text"] == "Approved"
    assert [b["text"]["text"] for b in listed["blocks"]] == ["Approved"]
    assert [u["via"] for u in listed["updates"]] == ["response_url"]

    async with httpx.AsyncClient(trust_env=False) as client:
        await client.post(payload["response_url"], json={"delete_original": True})
        unknown = await client.post(f"{sandbox.http_url}/slack/response_url/nope", json={})
    assert (await _messages(sandbox.http_url))[0]["deleted"] is True
    assert unknown.status_code == 404


async def test_a_receiver_with_the_wrong_secret_rejects_the_click(tmp_path: Path) -> None:
    with run_receiver("not-the-signing-secret") as wrong:
        async with run_sandbox(
            state_dir=tmp_path / "sandbox", interactions_url=wrong.url
        ) as running:
            ts = await _post_approval(running.http_url)
            clicked = await _click(running.http_url, ts, "approve", SARAH)
    assert clicked.json()["status_code"] == 401
    [request] = wrong.requests
    assert not request.valid
    # The same request verifies with the right secret: the signature itself is sound.
    assert SignatureVerifier(SIGNING_SECRET).is_valid_request(request.body, request.headers)


async def test_click_errors(sandbox: RunningSandbox, tmp_path: Path) -> None:
    ts = await _post_approval(sandbox.http_url)

    unknown_message = await _click(sandbox.http_url, "1700000000.000001", "approve", SARAH)
    assert unknown_message.status_code == 404
    assert unknown_message.json()["error"]["code"] == "message_not_found"
    unknown_button = await _click(sandbox.http_url, ts, "escalate", SARAH)
    assert unknown_button.status_code == 404
    assert unknown_button.json()["error"]["code"] == "action_not_found"
    outsider = await _click(sandbox.http_url, ts, "approve", TOM)  # not in Sarah's DM
    assert outsider.status_code == 403
    stranger = await _click(sandbox.http_url, ts, "approve", "nobody@dealflow.example")
    assert stranger.status_code == 422

    with socket.socket() as probe:  # a port nobody listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with run_sandbox(
        state_dir=tmp_path / "unreachable",
        interactions_url=f"http://127.0.0.1:{closed_port}/v1/webhooks/slack/interactions",
    ) as running:
        ts = await _post_approval(running.http_url)
        unreachable = await _click(running.http_url, ts, "approve", SARAH)
        [delivery] = running.state.slack.deliveries()
    assert unreachable.status_code == 502
    assert unreachable.json()["error"]["code"] == "interactions_unreachable"
    assert delivery.status_code is None and delivery.error


async def test_messages_and_response_urls_survive_a_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    state_dir = tmp_path / "sandbox"
    async with run_sandbox(state_dir=state_dir, interactions_url=receiver.url) as first:
        ts = await _post_approval(first.http_url)
        await _click(first.http_url, ts, "approve", SARAH)

    async with run_sandbox(state_dir=state_dir, interactions_url=receiver.url) as second:
        [kept] = await _messages(second.http_url)
        assert kept["ts"] == ts and kept["blocks"] == _approval_blocks("step-1")
        later = await _post_approval(second.http_url, step_id="step-2")
        assert float(later) > float(ts)
        updated = await _web_api(
            second.http_url, "chat.update", json={"channel": kept["channel"], "ts": ts, "text": "x"}
        )
        assert updated["ok"], updated
        # The response URL handed out before the restart still works, as the service may
        # use it after the sandbox restarted.
        payload = receiver.requests[0].payload
        assert payload is not None
        port = second.http_url.rsplit(":", 1)[1]
        hook_path = payload["response_url"].split("/slack/", 1)[1]
        async with httpx.AsyncClient(trust_env=False) as client:
            replaced = await client.post(
                f"http://127.0.0.1:{port}/slack/{hook_path}",
                json={"replace_original": True, "text": "Approved"},
            )
        assert replaced.json() == {"ok": True}
        assert len(second.state.slack.deliveries()) == 1
        assert [m["text"] for m in await _messages(second.http_url)] == [
            "Approved",
            "Approval needed",
        ]


def test_cli_takes_the_slack_options() -> None:
    args = parse_args(
        [
            "--interactions-url",
            "http://127.0.0.1:8000/v1/webhooks/slack/interactions",
            "--slack-signing-secret",
            "s",
            "--slack-bot-token",
            "t",
            "--org-path",
            "config/org.toml",
        ]
    )
    assert args.interactions_url.endswith("/v1/webhooks/slack/interactions")
    assert (args.slack_signing_secret, args.slack_bot_token) == ("s", "t")
    assert args.org_path == Path("config/org.toml")


# --------------------------------------------------------------------------------------
# Conformance with Slack's published Web API spec.


def _spec_path() -> Path:
    base = os.environ.get("DEALFLOW_SPECS_DIR")
    directory = (
        Path(base) if base else Path(__file__).resolve().parents[3] / "shared" / "data" / "specs"
    )
    return directory / "slack_web_openapi_v2.json"


@pytest.fixture(scope="module")
def slack_spec() -> dict[str, Any]:
    path = _spec_path()
    if not path.exists():
        pytest.fail(f"Slack's OpenAPI spec is not at {path} (set DEALFLOW_SPECS_DIR)")
    return json.loads(path.read_text(encoding="utf-8"))


def _operation(spec: dict[str, Any], method: str, table: MethodSpec) -> dict[str, Any]:
    path = spec["paths"].get(f"/{method}")
    assert path is not None, f"{method} is not in Slack's spec"
    operation = path.get(table.http.lower())
    assert operation is not None, f"Slack's spec has no {table.http} for {method}"
    return operation


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _schema_problems(
    value: Any, schema: dict[str, Any], spec: dict[str, Any], at: str
) -> list[str]:
    """Required properties missing from `value` (recursively), and ID pattern mismatches.

    Slack's spec writes "one of these schemas" as a list under `items`; any one may match.
    """
    schema = _resolve(schema, spec)
    alternatives = schema.get("items")
    if isinstance(alternatives, list):
        tried = [_schema_problems(value, alt, spec, at) for alt in alternatives]
        return [] if any(not problems for problems in tried) else min(tried, key=len)
    problems: list[str] = []
    if isinstance(value, dict):
        problems += [
            f"{at}.{name} missing" for name in schema.get("required", []) if name not in value
        ]
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                problems += _schema_problems(value[name], sub, spec, f"{at}.{name}")
    elif isinstance(value, list) and isinstance(alternatives, dict):
        for index, item in enumerate(value):
            problems += _schema_problems(item, alternatives, spec, f"{at}[{index}]")
    elif isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{at}={value!r} does not match {schema['pattern']}")
    return problems


def test_the_methods_table_matches_slacks_spec(slack_spec: dict[str, Any]) -> None:
    for method, table in METHODS.items():
        operation = _operation(slack_spec, method, table)
        declared = {p["name"]: p for p in operation["parameters"]}
        spec_required = {name for name, p in declared.items() if p.get("required")}
        assert set(table.required) == spec_required, method
        read = set(table.required) | table.optional | table.one_of
        assert read <= set(declared), f"{method} reads {read - set(declared)}, not in the spec"
        assert table.one_of <= table.optional, method
        assert not set(table.extensions) & set(declared), (
            f"{method}: the spec now declares {set(table.extensions) & set(declared)}; "
            "move them from extensions to optional"
        )
        assert table.json_body == ("application/json" in operation.get("consumes", [])), method
        errors = operation["responses"]["default"]["schema"]["properties"]["error"]["enum"]
        for code in [*table.required.values(), *([table.one_of_error] if table.one_of else [])]:
            assert code in errors, f"{method}: {code!r} is not an error the spec lists"


async def _success_args(http_url: str, method: str) -> dict[str, Any]:
    """Arguments that make each declared method succeed; a new method must add its own."""
    if method == "chat.update":
        ts = await _post_approval(http_url, step_id="spec")
        return {"channel": "D" + SARAH_ID, "ts": ts, "text": "Updated"}
    samples: dict[str, dict[str, Any]] = {
        "auth.test": {},
        "chat.postMessage": {"channel": SARAH_ID, "text": "Hello", "blocks": _approval_blocks("s")},
        "users.lookupByEmail": {"email": SARAH},
    }
    return samples[method]


async def _call_as_spec(
    http_url: str, method: str, table: MethodSpec, args: dict[str, Any]
) -> dict[str, Any]:
    """Call as the spec describes: the token in a header, the rest form-encoded."""
    token = args.pop("token", None)
    form = {k: json.dumps(v) if not isinstance(v, str) else v for k, v in args.items()}
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(base_url=http_url, trust_env=False) as client:
        if table.http == "GET":
            response = await client.get(f"/slack/api/{method}", params=form, headers=headers)
        else:
            response = await client.post(f"/slack/api/{method}", data=form, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_required_arguments_are_required_and_successes_match_the_spec(
    slack_spec: dict[str, Any], sandbox: RunningSandbox
) -> None:
    for method, table in METHODS.items():
        operation = _operation(slack_spec, method, table)
        args = {"token": BOT_TOKEN, **await _success_args(sandbox.http_url, method)}

        for name, error in table.required.items():
            without = {k: v for k, v in args.items() if k != name}
            answer = await _call_as_spec(sandbox.http_url, method, table, without)
            assert answer == {"ok": False, "error": error}, (method, name)

        answer = await _call_as_spec(sandbox.http_url, method, table, dict(args))
        assert answer["ok"] is True, (method, answer)
        problems = _schema_problems(
            answer, operation["responses"]["200"]["schema"], slack_spec, method
        )
        assert problems == [], problems
