"""The Temporal client every process uses, with the pydantic data converter.

The pydantic converter keeps ``Decimal`` money exact on the wire (as strings) and lets workflow
inputs and results be the same typed models the domain and the API use.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from dealflow.settings import Settings

DATA_CONVERTER = pydantic_data_converter


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=DATA_CONVERTER,
    )
