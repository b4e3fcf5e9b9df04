"""Finding a string anywhere the database keeps words.

The tables and columns come from the schema's metadata, so a table added
later is searched without changing a test; SQLite's keyword index (``faq_fts``,
made by a migration, not by the metadata) is searched as well.
"""

from __future__ import annotations

import json

from sqlalchemy import JSON, Connection, String, select, text

from storage.db import Database
from storage.models import metadata


def word_columns() -> list[tuple[str, str]]:
    """Every (table, column) that holds text or JSON."""
    return [
        (table.name, column.name)
        for table in metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, String | JSON)
    ]


async def where_written(db: Database, marker: str) -> list[str]:
    """The ``table.column`` names of every text or JSON column holding ``marker``."""

    def op(conn: Connection) -> list[str]:
        found: set[str] = set()
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | JSON)]
            if not columns:
                continue
            for row in conn.execute(select(*columns)):
                for column, value in zip(columns, row, strict=True):
                    shown = (
                        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                    )
                    if value is not None and marker in shown:
                        found.add(f"{table.name}.{column.name}")
        if db.dialect == "sqlite":
            for question, answer in conn.execute(text("SELECT question, answer FROM faq_fts")):
                if marker in f"{question}\n{answer}":
                    found.add("faq_fts")
        return sorted(found)

    return await db.run(op, what="search every stored word")
