"""The one launcher (dealflow/stack.py): a child serves where it says, and stops when told.

What `make run`, the benchmarks and prod-check start as separate processes: the sandbox (its
ports chosen by the system, learnt from its ready file) and stripe-mock.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from dealflow.stack import port_is_open, start_sandbox, start_stripe_mock


async def test_the_sandbox_child_serves_on_the_addresses_of_its_ready_file_then_stops(
    tmp_path: Path,
):
    child, ready = await start_sandbox(tmp_path, tmp_path / "logs", "http://127.0.0.1:9")
    try:
        addresses = await ready()
        async with httpx.AsyncClient() as http:
            health = await http.get(f"{addresses.http_url}/_sandbox/healthz")
        assert health.status_code == 200
        assert port_is_open(addresses.smtp_port)
        assert await asyncio.to_thread(Path(addresses.ca_cert_path).is_file)
    finally:
        await child.stop()
    assert child.proc.returncode is not None
    assert not port_is_open(addresses.smtp_port)


async def test_stripe_mock_is_ready_when_started_and_gone_when_stopped(tmp_path: Path):
    child, url = await start_stripe_mock(tmp_path)
    try:
        async with httpx.AsyncClient() as http:
            # stripe-mock answers any call with a key; a customer list is the smallest.
            resp = await http.get(f"{url}/v1/customers", auth=("sk_test_123", ""))
        assert resp.status_code == 200
    finally:
        await child.stop()
    assert child.proc.returncode is not None
    assert not port_is_open(int(url.rsplit(":", 1)[1]))
