"""The email sandbox, end to end: real SMTP in, real HTTP out, state kept across restarts."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import socket
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.server import RunningSandbox, run_sandbox

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[RunningSandbox]:
    async with run_sandbox(state_dir=tmp_path / "sandbox") as running:
        yield running


def _message(
    *,
    to: str,
    message_id: str,
    subject: str = "Your contract for Acme",
    html: bool = True,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Dealflow <deals@dealflow.test>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.fromisoformat("2025-03-04T10:15:00+01:00"))
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = "<https://dealflow.test/v1/unsubscribe/tok123>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content("Hello Ada,\nthe contract is attached.\n")
    if html:
        message.add_alternative("<p>Hello Ada,<br>the contract is attached.</p>", subtype="html")
    return message


async def _send(
    host: str, port: int, message: EmailMessage, *, to_addrs: list[str] | None = None
) -> None:
    """Send over real SMTP; smtplib blocks, so it runs off the event loop."""

    def send() -> None:
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.send_message(message, to_addrs=to_addrs)

    await asyncio.to_thread(send)


async def _messages(http_url: str, **params: Any) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=http_url, trust_env=False) as client:
        response = await client.get("/_sandbox/mail/messages", params=params)
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def _free_port() -> int:
    # The CLI binds its own ports, so the test can only pick one and hand it over;
    # the short window until the sandbox binds it is acceptable in a test.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_sent_message_is_served_over_http_with_headers_and_both_parts(
    sandbox: RunningSandbox,
) -> None:
    message = _message(to="ada@acme.test", message_id="<contract-1@dealflow.test>")
    await _send(
        sandbox.smtp_host,
        sandbox.smtp_port,
        message,
        to_addrs=["ada@acme.test", "archive@dealflow.test"],
    )

    async with httpx.AsyncClient(base_url=sandbox.http_url, trust_env=False) as client:
        health = await client.get("/_sandbox/healthz")
        listed = await client.get("/_sandbox/mail/messages")
    assert health.json() == {"ok": True}
    [captured] = listed.json()["messages"]

    assert captured["message_id"] == "<contract-1@dealflow.test>"
    assert captured["from"] == "Dealflow <deals@dealflow.test>"
    assert captured["to"] == ["ada@acme.test", "archive@dealflow.test"]  # envelope, Bcc too
    assert captured["subject"] == "Your contract for Acme"
    assert captured["date"] == "2025-03-04T09:15:00Z"
    headers = dict(captured["headers"])
    assert headers["List-Unsubscribe"] == "<https://dealflow.test/v1/unsubscribe/tok123>"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert captured["text"].strip() == "Hello Ada,\nthe contract is attached."
    assert captured["html"].strip() == "<p>Hello Ada,<br>the contract is attached.</p>"
    # The raw size is what went over the wire: smtplib sends the message with CRLF endings.
    assert captured["size"] == len(message.as_bytes(policy=message.policy.clone(linesep="\r\n")))
    received_at = datetime.fromisoformat(captured["received_at"])
    assert received_at.utcoffset() is not None and received_at.utcoffset().total_seconds() == 0


async def test_messages_survive_a_restart_with_the_same_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    async with run_sandbox(state_dir=state_dir) as first:
        await _send(
            first.smtp_host,
            first.smtp_port,
            _message(to="ada@acme.test", message_id="<kept@dealflow.test>"),
        )

    async with run_sandbox(state_dir=state_dir) as second:
        [captured] = await _messages(second.http_url)
        assert captured["message_id"] == "<kept@dealflow.test>"
        assert captured["text"].strip() == "Hello Ada,\nthe contract is attached."
        # New mail lands after the kept mail, with the next index.
        await _send(
            second.smtp_host,
            second.smtp_port,
            _message(to="bob@acme.test", message_id="<new@dealflow.test>", html=False),
        )
        messages = await _messages(second.http_url)
    assert [m["message_id"] for m in messages] == ["<kept@dealflow.test>", "<new@dealflow.test>"]
    assert [m["index"] for m in messages] == [0, 1]
    assert messages[1]["html"] is None


async def test_messages_filter_by_recipient_message_id_and_index(
    sandbox: RunningSandbox,
) -> None:
    for to, message_id in [
        ("ada@acme.test", "<a1@dealflow.test>"),
        ("bob@globex.test", "<b1@dealflow.test>"),
        ("ada@acme.test", "<a2@dealflow.test>"),
    ]:
        await _send(sandbox.smtp_host, sandbox.smtp_port, _message(to=to, message_id=message_id))

    to_ada = await _messages(sandbox.http_url, to="Ada@Acme.test")
    assert [m["message_id"] for m in to_ada] == ["<a1@dealflow.test>", "<a2@dealflow.test>"]
    by_id = await _messages(sandbox.http_url, message_id="b1@dealflow.test")
    assert [m["to"] for m in by_id] == [["bob@globex.test"]]
    newer = await _messages(sandbox.http_url, since=1)
    assert [m["index"] for m in newer] == [1, 2]
    assert await _messages(sandbox.http_url, to="nobody@acme.test") == []


async def test_delete_clears_captured_mail_for_good(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    async with run_sandbox(state_dir=state_dir) as running:
        await _send(
            running.smtp_host,
            running.smtp_port,
            _message(to="ada@acme.test", message_id="<gone@dealflow.test>"),
        )
        async with httpx.AsyncClient(base_url=running.http_url, trust_env=False) as client:
            deleted = await client.delete("/_sandbox/mail/messages")
        assert deleted.json() == {"deleted": 1}
        assert await _messages(running.http_url) == []

    async with run_sandbox(state_dir=state_dir) as restarted:
        assert await _messages(restarted.http_url) == []


async def test_cli_captures_logs_metadata_only_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    http_port, smtp_port = _free_port(), _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox",
        "--http-port",
        str(http_port),
        "--smtp-port",
        str(smtp_port),
        "--state-dir",
        str(tmp_path / "cli-state"),
        cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    http_url = f"http://127.0.0.1:{http_port}"
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
            while True:
                assert process.returncode is None, "the sandbox CLI exited during start-up"
                try:
                    if (await client.get(f"{http_url}/_sandbox/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert loop.time() < deadline, "the sandbox CLI did not become ready"
                await asyncio.sleep(0.05)  # poll interval; the deadline bounds the wait

        await _send("127.0.0.1", smtp_port, _message(to="ada@acme.test", message_id="<cli@t>"))
        [captured] = await _messages(http_url, message_id="<cli@t>")
        assert captured["to"] == ["ada@acme.test"]

        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert "message_id=<cli@t>" in log and "to=ada@acme.test" in log
    assert "Your contract for Acme" in log
    assert "the contract is attached" not in log  # never bodies
    assert (tmp_path / "cli-state" / "mail.jsonl").exists()
