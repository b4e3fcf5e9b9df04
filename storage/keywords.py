"""Keyword terms: what the databases' full-text indexes store for a text, and
what a question searches for.

Both SQLite FTS5 and PostgreSQL split text into words at spaces and
punctuation. Chinese and Japanese put no spaces between words, so a run of CJK
characters is indexed and searched as its overlapping character pairs (the
usual keyword unit for those scripts); Swedish and German join words into
compounds, so long words are also indexed and searched as overlapping pieces.
Both are written into the indexed text as separate words, so the databases'
own tokenizers (and PostgreSQL's generated tsvector) need no change.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import TextClause, text

# Words that carry no topic; dropping them keeps the OR query from matching everything.
_STOPWORD_TEXT = (
    "a an the is are was were be been being do does did doing i my me mine we our us you your "
    "it its of to in on for at by with from and or nor what how can could should must will would "
    "shall may might which who whom whose when where why this that these those there here their "
    "they them have has had having about as if so than then not no yes any all some get got "
    "need needs want please tell know just also into out up down over under"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split(" "))
_WORD = re.compile(r"\w+")


# Scripts written without spaces between words: Han, kana, Hangul.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
# Words at least this long are also indexed as overlapping pieces of ``_PIECE``
# letters, so that a part of a compound ("bygglov") finds the whole
# ("bygglovsansökan", "Baugenehmigungsverfahren").
_COMPOUND = 7
_PIECE = 5


def _words(text: str) -> Iterator[str]:
    """Lower-cased words; a run of CJK characters (no spaces to split on) becomes
    its overlapping character pairs, the usual keyword unit for those scripts."""
    for word in _WORD.findall(text.lower()):
        start = 0
        for run in _CJK.finditer(word):
            if run.start() > start:
                yield word[start : run.start()]
            chars = run.group()
            yield from (
                [chars] if len(chars) == 1 else (chars[i : i + 2] for i in range(len(chars) - 1))
            )
            start = run.end()
        if start < len(word):
            yield word[start:]


def keyword_terms(question: str, *, limit: int = 24) -> list[str]:
    """Content words of a question, de-duplicated, in order (CJK: character pairs)."""
    seen: dict[str, None] = {}
    for word in _words(question):
        if word not in _STOPWORDS and (len(word) > 1 or _CJK.match(word)):
            seen.setdefault(word, None)
    return list(seen)[:limit]


def pieces(word: str) -> list[str]:
    """The overlapping ``_PIECE``-letter parts of a long word (none for a short one)."""
    if len(word) < _COMPOUND or _CJK.search(word):
        return []
    return [word[i : i + _PIECE] for i in range(len(word) - _PIECE + 1)]


def index_text(text: str) -> str:
    """What the keyword index stores for ``text``: the text itself, then the
    character pairs of its CJK runs and the pieces of its long words, written as
    separate words so that both databases' word tokenizers index them."""
    extra: list[str] = []
    for word in _words(text):
        if _CJK.match(word):
            extra.append(word)
        else:
            extra.extend(pieces(word))
    return f"{text}\n{' '.join(extra)}" if extra else text


def search_terms(question: str, *, limit: int = 24) -> list[str]:
    """The keyword query of a question: its content words and their pieces."""
    terms = keyword_terms(question, limit=limit)
    extra = [p for word in terms for p in pieces(word)]
    return list(dict.fromkeys([*terms, *extra]))[: limit * 4]


def ranked_match_query(
    *, sqlite: bool, fts: str, table: str, terms: Sequence[str], tenant: str, limit: int
) -> tuple[TextClause, dict[str, Any]]:
    """The keyword search over ``table`` (its SQLite FTS5 twin ``fts``, or its
    PostgreSQL ``search_vector``) for rows ``tenant`` sees: (row id, score),
    best first; the first indexed column weighs twice the second."""
    if sqlite:
        sql = text(
            f"SELECT f.rowid, -bm25({fts}, 2.0, 1.0) AS score "
            f"FROM {fts} f JOIN {table} t ON t.id = f.rowid "
            f"WHERE {fts} MATCH :match AND t.tenant IN ('', :tenant) "
            f"ORDER BY bm25({fts}, 2.0, 1.0) LIMIT :limit"
        )
        match = " OR ".join(f'"{t}"' for t in terms)
        return sql, {"match": match, "tenant": tenant, "limit": limit}
    sql = text(
        "SELECT id, ts_rank_cd(search_vector, q, 1) AS score "
        f"FROM {table}, websearch_to_tsquery('english', :query) q "
        "WHERE tenant IN ('', :tenant) AND search_vector @@ q "
        "ORDER BY score DESC LIMIT :limit"
    )
    return sql, {"query": " or ".join(terms), "tenant": tenant, "limit": limit}
