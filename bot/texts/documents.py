"""English texts of document answers and citations."""

from __future__ import annotations

DOCUMENTS: dict[str, str] = {
    "knowledge.kind.document": "Document",
    # An extractive answer: the passage's own sentences, quoted, and where they are.
    "knowledge.doc.quote": "“{text}” [1]\n\n{sources}",
    "knowledge.doc.source_line": "[{number}] {where}",
    "knowledge.doc.page": "page {page}",
    "knowledge.doc.see_also": "See also:",
    "knowledge.doc.see_also_line": "- {where}",
}
