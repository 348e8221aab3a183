"""Stripe: the client the closing activities bill through (stripe-mock in the sandbox)."""

from __future__ import annotations

import stripe

from dealflow.settings import Settings


def build_stripe_client(
    settings: Settings, *, http_client: stripe.HTTPClient | None = None
) -> stripe.StripeClient:
    """The Stripe client the worker uses: stripe-mock in the sandbox, api.stripe.com in production.

    httpx underneath, so the activities' ``*_async`` calls do not block the event loop.
    """
    return stripe.StripeClient(
        settings.secret("stripe_api_key"),
        base_addresses={"api": settings.stripe_api_base},
        http_client=http_client or stripe.HTTPXClient(),
    )
