"""The Temporal client every process uses, with the pydantic data converter.

The pydantic converter keeps ``Decimal`` money exact on the wire (as strings) and lets workflow
inputs and results be the same typed models the domain and the API use.

The API's client gives up quickly when the server cannot be reached (``API_RETRY``): a person or
a webhook is waiting on the other end, and a prompt 503 with Retry-After (api/unavailable.py)
tells them to come back, where the SDK's default (retries for up to 10 s per call, several calls
per request) kept them waiting 30 s and more. The worker keeps the SDK's patient defaults: it
has nobody waiting and should ride out a server restart.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import KeepAliveConfig, RetryConfig

from dealflow.settings import Settings

DATA_CONVERTER = pydantic_data_converter

# Why these numbers: a call that fails with UNAVAILABLE is retried after 0.1, 0.2, 0.4 s (about
# 0.7 s in all, enough to ride out a dropped connection or a leader change), and never past 2 s;
# a request that makes two or three calls still answers within a few seconds.
API_RETRY = RetryConfig(
    initial_interval_millis=100,
    randomization_factor=0.2,
    multiplier=2.0,
    max_interval_millis=500,
    max_elapsed_time_millis=2_000,
    max_retries=3,
)
# Opening the connection (the API connects lazily, on its first call): a local or in-cluster
# server answers in milliseconds; past this it is down.
API_CONNECT_TIMEOUT = timedelta(seconds=2)
# A connection whose server vanished without closing it (a partition, a dead host) is noticed
# by its pings within interval + timeout = 7 s, instead of the SDK's 45 s.
API_KEEP_ALIVE = KeepAliveConfig(interval_millis=5_000, timeout_millis=2_000)
# What the API tells a client to wait before trying again while Temporal is unreachable.
RETRY_AFTER_SECONDS = 5


async def connect(settings: Settings) -> Client:
    """The worker's client: the SDK's retry defaults."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=DATA_CONVERTER,
    )


async def connect_for_api(settings: Settings, *, lazy: bool = True) -> Client:
    """The API's client: lazy (the API starts while Temporal is down) and quick to give up."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=DATA_CONVERTER,
        retry_config=API_RETRY,
        connect_timeout=API_CONNECT_TIMEOUT,
        keep_alive_config=API_KEEP_ALIVE,
        lazy=lazy,
    )
