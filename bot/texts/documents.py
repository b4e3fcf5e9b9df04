"""English texts of document answers and citations."""

from __future__ import annotations

DOCUMENTS: dict[str, str] = {
    "knowledge.kind.document": "Document",
    # An extractive answer: the passage's own sentences, quoted, and where they are.
    "documents.quote": "“{text}” [1]\n\n{sources}",
    "documents.source_line": "[{number}] {where}",
    "documents.page": "page {page}",
}
