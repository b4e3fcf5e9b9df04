"""What every table definition shares: the metadata (with the constraint
naming convention migrations rely on) and the id column type."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, MetaData

# Named constraints so migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only makes INTEGER PRIMARY KEY an auto-incrementing rowid alias.
IdType = BigInteger().with_variant(Integer(), "sqlite")
