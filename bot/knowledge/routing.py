"""How the conversation manager hands a plain message to the knowledge base."""

from __future__ import annotations

import logging

from bot.knowledge import drafting
from bot.knowledge.base import KnowledgeBase
from bot.types import Inbound
from llm.base import Backend, LLMError

log = logging.getLogger(__name__)


async def knowledge_reply(
    kb: KnowledgeBase,
    inbound: Inbound,
    text: str,
    *,
    backend: Backend,
    llm_timeout: float | None,
) -> str | None:
    """The reply text for ``text``, or None to let the manager chat with the model.

    An open draft takes the message as a revision; otherwise the mode decides:
    ``support`` and ``faq`` always answer from the knowledge base (``faq`` never
    calls the model), ``assistant`` only when an entry is relevant. Where the
    knowledge base has no entries for the tenant, every message is plain chat.
    """
    ref = inbound.ref
    raw = await kb.open_draft(ref.key)
    if raw:
        draft = drafting.revise_options(drafting.Draft.loads(raw), text)
        persona = await kb.persona(ref.tenant)
        try:
            new_text = await drafting.write(
                backend, draft, persona=persona, instruction=text, llm_timeout=llm_timeout
            )
        except LLMError as exc:
            log.warning("draft revision failed: %s", exc)
            return "Sorry, I couldn't revise the draft just now. Please try again."
        revised = drafting.Draft(draft.kind, draft.brief, draft.tone, draft.length, new_text)
        await kb.set_draft(ref.key, revised.dumps())
        return drafting.present(revised)
    if not await kb.has_entries(ref.tenant):
        return None  # no knowledge base here: plain chat, as without one
    mode = await kb.mode_for(ref.key, ref.tenant)
    answer = await kb.answer(
        text,
        tenant=ref.tenant,
        mode=mode,
        conversation_key=ref.key,
        user_id=inbound.platform_user,
        system_prompt=await kb.persona(ref.tenant),
    )
    return answer.text if answer is not None else None
