"""Quotes of a forgotten person's words in what others were told.

Command outputs quote what a customer asked (``/learn``'s proposal, ``/faq
approve``, ``/faq pending``), and an answer in a group may repeat a member's
words; those rows belong to other people and stay, with the quotes taken out.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Connection, not_, or_, select, update

from storage.models import messages

# Shorter texts ("ok", "thanks") carry nothing personal and would match
# ordinary words in others' rows.
MIN_QUOTED = 8
# Commands quote a text cut at this many characters, whitespace collapsed.
QUOTE_LIMIT = 120
REMOVED = "[removed]"


def quoted_forms(text: str) -> set[str]:
    """How ``text`` appears when quoted: as written, whitespace collapsed, cut short."""
    normal = " ".join(text.split())
    if len(normal) < MIN_QUOTED:
        return set()
    forms = {text.strip(), normal}
    if len(normal) > QUOTE_LIMIT:
        forms.add(normal[: QUOTE_LIMIT - 1] + "…")
    return forms


def scrub_quotes(conn: Connection, platform_user: str) -> int:
    """Take ``platform_user``'s words out of others' stored messages: every
    command output, and answers in the conversations they wrote in, since
    their first message. Runs inside the caller's transaction, before their
    own messages go; returns the messages changed."""
    return scrub_quotes_of(conn, messages.c.user_id == platform_user)


def scrub_quotes_of(conn: Connection, who: ColumnElement[bool]) -> int:
    """``scrub_quotes`` for everyone whose messages match ``who`` (a condition
    on ``messages.user_id``), e.g. a workspace's people."""
    said = conn.execute(
        select(messages.c.conversation_id, messages.c.text, messages.c.created_at).where(who)
    ).all()
    forms = {form for row in said for form in quoted_forms(row.text)}
    if not forms:
        return 0
    # Longest first: a cut quote is a prefix of the whole text.
    ordered = sorted(forms, key=len, reverse=True)
    since = min(row.created_at for row in said)
    theirs = select(messages.c.conversation_id).where(who)
    candidates = conn.execute(
        select(messages.c.id, messages.c.text).where(
            messages.c.created_at >= since,
            or_(messages.c.user_id.is_(None), not_(who)),
            messages.c.role == "assistant",
            or_(
                messages.c.kind == "command",
                messages.c.conversation_id.in_(theirs.scalar_subquery()),
            ),
        )
    ).all()
    changed = 0
    for row in candidates:
        text = row.text
        for form in ordered:
            text = text.replace(form, REMOVED)
        if text != row.text:
            conn.execute(update(messages).where(messages.c.id == row.id).values(text=text))
            changed += 1
    return changed
