"""PostgreSQL, the system of record: models and data access per process.

Importing any ``db`` module registers every table first (``db/registry.py``), so the app, the
worker and Alembic share one complete ``Base.metadata``.
"""

from db import registry as registry  # noqa: F401 - imported for its side effect: every table
