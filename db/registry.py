"""Every model module, imported once: ``metadata`` holds every table of the database.

The model modules build on the declarative base in ``db/base.py`` and none imports another to
register it, so there is no import cycle; ``db/__init__.py`` imports this module, so the app,
the worker, the tests and Alembic (``db/migrations/env.py``) all see the same tables, whichever
model they touch first (a relationship or foreign key naming a table of another module resolves
either way).
"""

from __future__ import annotations

from db import base, campaign_models, closing_models, contact_deals, handoff_models, models

MODEL_MODULES = (models, campaign_models, closing_models, contact_deals, handoff_models)
metadata = base.Base.metadata
