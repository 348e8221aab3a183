"""The declarative base every model module builds on, and the column types they share.

Its own module so the model modules depend on it and not on each other: ``db/registry.py``
imports each model module once, and none imports another to register it.
"""

from __future__ import annotations

from sqlalchemy import MetaData, Numeric
from sqlalchemy.orm import DeclarativeBase

# Constraint and index names Alembic autogenerate and the migrations agree on.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Money columns: 18 digits, 4 after the point (rounding to the currency happens in domain/money).
Money = Numeric(18, 4)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
