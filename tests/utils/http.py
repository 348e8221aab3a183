"""HTTP client settings shared by the tests' clients."""

from __future__ import annotations

import httpx

# uvicorn closes a keep-alive connection idle for 5 s; a client reusing one at that moment reads
# a closed socket (httpx.ReadError, or RemoteProtocolError "Server disconnected without sending
# a response"), e.g. after a test spent a while waiting. Ours expire first.
LIMITS = httpx.Limits(keepalive_expiry=2.0)
