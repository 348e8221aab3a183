"""The campaign's and the sequences' retry backoff, chosen by the API (``SequenceTiming``).

Beside the workflows that use it (``workflows/campaign.py``, ``workflows/sequence.py``); the
attempt budgets themselves are each policy's own, written where the policy is.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from temporalio.common import RetryPolicy

from messages.campaign import SequenceTiming


def retry_budget(policy: RetryPolicy, timing: SequenceTiming) -> RetryPolicy:
    """``policy`` with the campaign's backoff: test mode shortens the intervals, never the
    attempt budget, so a spent budget parks within seconds in the tests."""
    if timing.retry_initial_seconds is None:
        return policy
    return dataclasses.replace(
        policy,
        initial_interval=timedelta(seconds=timing.retry_initial_seconds),
        maximum_interval=timedelta(
            seconds=max(timing.retry_initial_seconds, timing.retry_max_interval_seconds or 0)
        ),
    )
