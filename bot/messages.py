"""Every fixed text Deskmate sends, looked up by key and language.

A text is a key here, never a literal at the place that sends it, so a
translation, a change of tone or a test of wording touches this module only.
Placeholders use ``str.format`` names: ``say("handoff.opened", hours="9-17")``.
Languages other than English fall back to English text by text, so a
catalog may be translated piece by piece.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.texts.console import CONSOLE
from bot.texts.console.de import CONSOLE_DE
from bot.texts.console.es import CONSOLE_ES
from bot.texts.console.fr import CONSOLE_FR
from bot.texts.console.sv import CONSOLE_SV
from bot.texts.console.zh import CONSOLE_ZH
from bot.texts.copilot import COPILOT
from bot.texts.de import DE
from bot.texts.documents import DOCUMENTS
from bot.texts.es import ES
from bot.texts.fr import FR
from bot.texts.languages import LANGUAGES
from bot.texts.sv import SV
from bot.texts.widget import WIDGET
from bot.texts.zh import ZH

DEFAULT_LANGUAGE = "en"

# Each area of the bot keeps its texts in its own block; keys are
# "<area>.<name>" so a key says where the text is used.

# -- conversations: answers, failures, limits ----------------------------------
_CONVERSATION: dict[str, str] = {
    "conversation.empty": "I can only read text. Please type your question and I'll help.",
    "conversation.failed": "Sorry, I couldn't answer that just now. Please try again in a moment.",
    "conversation.timeout": (
        "Sorry, that took too long and I had to stop. Please try again in a moment."
    ),
    "conversation.stopped": "(stopped)",
    "conversation.busy": (
        "I'm helping a lot of people right now. Please send your message again in a minute."
    ),
    "conversation.busy_in_line": (
        "I'm helping a lot of people right now. You'd be number {position} in line. "
        "Please send your message again in a minute."
    ),
    "conversation.too_fast": (
        "You're sending messages faster than I can answer them. Please wait "
        "about {seconds} seconds, then send your question again."
    ),
    "conversation.truncated": (
        "(Your message was very long, so I read only its first {chars:,} characters.)\n\n"
    ),
    "conversation.error": "Sorry, something went wrong on my side. Please try again in a moment.",
    "conversation.records_unreachable": (
        "Sorry, I can't reach my records just now. Please try again in a moment."
    ),
    # The message stays stored and is answered once the records are back, so
    # the customer is not asked to send it again (that would earn them two answers).
    "conversation.records_delayed": (
        "Sorry, I can't reach my records just now. I'll answer this as soon as they're back."
    ),
    # The output guard withheld the model's answer; why is for the operator's log only.
    "conversation.withheld": (
        "Sorry, I can't send that answer. Please ask in other words, or send /human "
        "to reach a person."
    ),
}

# -- the help desk: tickets, agents, notices -----------------------------------
_HANDOFF: dict[str, str] = {
    # The customer's side.
    "handoff.no_team": (
        "There's no support team connected to me yet, so I can't put you through to a "
        "person right now. I've noted your request for the team."
    ),
    "handoff.no_desk": (
        "No person from a support team can be reached here, so I can't put you through "
        "to one. I've noted your request for the team that runs this bot."
    ),
    "handoff.already_open": (
        "You're already in line for a person from the support team; they'll reply here. "
        "Anything you write now goes straight to them."
    ),
    "handoff.opened": (
        "I've asked a person from our support team to join this conversation. "
        "They'll reply right here; anything you write now goes straight to them."
    ),
    "handoff.opened_after_hours": (
        " Our team is in {hours}, so the answer may come when they are back."
    ),
    "handoff.joined": ("A person from the support team ({signature}) has joined the conversation."),
    "handoff.agent_said": "{signature}: {text}",
    "handoff.resolved_notice": (
        "The support team marked this conversation as resolved, and I'm back to help. "
        "Send /human whenever you'd like a person again."
    ),
    "handoff.idle_notice": (
        "This conversation with the support team has been quiet for a while, so I'm "
        "back to help. Send /human whenever you'd like a person again."
    ),
    "handoff.abandoned": (
        "Sorry, I couldn't reach the support team just now, so I'm back to help. "
        "Please try /human again in a little while."
    ),
    # Relayed into the ticket.
    "handoff.customer_said": "{name}: {text}",
    "handoff.customer_sent": (
        "{name} sent {what}, which I can't relay here. Ask them to describe it."
    ),
    "handoff.customer_default_name": "Customer",
    "handoff.no_text": "a message without text",
    "handoff.idle_space": (
        "Ticket #{id} closed after a quiet spell; the bot answers this customer again."
    ),
    # The topic or thread a ticket opens in (at most 120 characters are kept).
    "handoff.ticket_title": "#{id} {customer} ({platform})",
    "handoff.undelivered": "Your message could not be delivered to the customer ({error}):\n{text}",
    "handoff.remind": (
        "Ticket #{id} ({customer}) has waited {minutes} min for a person. Reply here, or /claim it."
    ),
    # The ticket as the support space sees it.
    "handoff.ticket_head": "Ticket #{id} · {platform} · {customer} · conversation {conversation}",
    "handoff.ticket_why": "Why: {reason}",
    "handoff.ticket_taken": "Taken over by {agent}",
    "handoff.ticket_summary": "Summary: {summary}",
    "handoff.ticket_turns": "Last messages:",
    "handoff.ticket_turn": "  {who}: {text}",
    "handoff.ticket_customer": "customer",
    "handoff.ticket_bot": "bot",
    "handoff.ticket_candidates": "Knowledge base considered:",
    "handoff.ticket_candidate": "  {ref} ({score:.2f}) {question}",
    "handoff.ticket_foot": (
        "Reply here to answer the customer. /claim · /resolve · /release · /note TEXT"
    ),
    "handoff.why.request": "the customer asked for a person",
    "handoff.why.escalation": "the knowledge base had no reliable answer",
    "handoff.why.model_failure": "the model failed to answer twice in a row",
    "handoff.why.takeover": "an agent took the conversation over",
    # Agents in the support space.
    "handoff.space_help": (
        "In the support space: reply in a ticket's topic or thread (or to the ticket "
        "message) to answer its customer; {commands}."
    ),
    "handoff.inside_ticket": (
        "/{name} works inside a ticket: in its topic or thread, or as a reply to the "
        "ticket message. /tickets lists the open ones."
    ),
    "handoff.human_in_space": "This is the support space: /human is for customers.",
    "handoff.closed_in_space": (
        "Ticket #{id} is closed and the bot answers this customer again. "
        "/takeover {conversation} takes the conversation back."
    ),
    "handoff.text_only": "I can only relay text to the customer; {what} was not sent.",
    "handoff.that_message": "that message",
    "handoff.note_usage": (
        "Write the note after the command: /note TEXT (never sent to the customer)."
    ),
    "handoff.noted": "Noted on ticket #{id}; the customer does not see notes.",
    "handoff.already_closed": "Ticket #{id} is already closed.",
    "handoff.already_yours": "You already have ticket #{id}.",
    "handoff.with_agent": "Ticket #{id} is with {agent}.",
    "handoff.claimed": "Ticket #{id} is yours; replies here go to the customer.",
    "handoff.not_claimed": "Ticket #{id} is not claimed.",
    "handoff.released": "Ticket #{id} is waiting again for someone to claim it.",
    "handoff.learn_unavailable": (
        "Learning answers needs the knowledge base, which is not set up here."
    ),
    "handoff.resolved": "Resolved ticket #{id}; the bot answers this customer again.",
    "handoff.tickets_none": "No open tickets.",
    "handoff.tickets_open": "Open tickets:",
    "handoff.tickets_line": (
        "#{id} {state}{who} · {minutes} min · {platform} · {customer} · conversation {conversation}"
    ),
    "handoff.tickets_with": ", with {agent}",
    "handoff.tickets_recent": "Recent conversations (/takeover N):",
    "handoff.tickets_recent_line": "{number} · {platform} · {name} · {minutes} min ago",
    "handoff.takeover_usage": (
        "Which conversation? /takeover <conversation number> (from /tickets)."
    ),
    "handoff.no_conversation": "There is no conversation {conversation}.",
    "handoff.space_conversation": "That is a support-space conversation, not a customer's.",
    "handoff.takeover_exists": ("Conversation {conversation} already has ticket #{id} ({state})."),
    "handoff.takeover_done": (
        "You have conversation {conversation} as ticket #{id}; it opens in its own thread."
    ),
    "handoff.not_served": (
        "Conversation {conversation} belongs to a workspace this support space does not serve."
    ),
    "handoff.ticket_not_served": (
        "Ticket #{id} belongs to a workspace this support space does not serve; nothing was done."
    ),
    # A tenant's own support space (/desk).
    "handoff.desk_usage": (
        "/desk here: this chat becomes the support space for this workspace's customers; "
        "/desk off: no person is offered to them; /desk default: back to what the "
        "deployment's settings say. /desk alone shows the current choice."
    ),
    "handoff.desk_off_deployment": (
        "The help desk is not switched on in this deployment (DESKMATE_HANDOFF_CHAT is "
        "not set), so a support space cannot be chosen here yet. Ask the operator."
    ),
    "handoff.desk_not_here": (
        "A support space must be a group chat or a channel of this workspace where I "
        "can post (a Telegram group or a Slack channel), not a direct message."
    ),
    "handoff.desk_deployment_space": (
        "This chat is already one of the deployment's support spaces ({space})."
    ),
    "handoff.desk_set": (
        "This chat is now the support space for this workspace's customers: their tickets "
        "come here, and agents answer them in each ticket's thread."
    ),
    "handoff.desk_turned_off": (
        "No support space for this workspace now: customers who ask for a person are "
        "told that nobody can be reached here."
    ),
    "handoff.desk_default": (
        "This workspace's own choice is removed; the deployment's settings decide again. {now}"
    ),
    "handoff.desk_shows_own": "This workspace's tickets go to {space} (set by {by}).",
    "handoff.desk_shows_off": "This workspace's admins turned the help desk off (by {by}).",
    "handoff.desk_shows_env": "This workspace's tickets go to {space} (the deployment's settings).",
    "handoff.desk_shows_none": (
        "No support space serves this workspace: customers who ask for a person are told "
        "that nobody can be reached here."
    ),
    # The operator console.
    "handoff.no_ticket": "There is no ticket #{id}.",
    "handoff.console_claimed": "Ticket #{id} is yours; replies from here go to the customer.",
    "handoff.console_meanwhile": "Ticket #{id} was claimed or closed meanwhile.",
    "handoff.console_closed": "Ticket #{id} is closed; the bot answers this customer again.",
    "handoff.console_reply_first": "Write the reply first.",
    "handoff.console_reply_again": "That reply to ticket #{id} was already sent.",
    "handoff.console_reply_queued": "Reply queued for the customer of ticket #{id}.",
    "handoff.console_note_first": "Write the note first.",
    "handoff.console_note_again": "That note on ticket #{id} was already added.",
    "handoff.console_space_claimed": "Ticket #{id} claimed by {agent} (console).",
    "handoff.console_space_replied": "{agent} (console) replied: {text}",
    "handoff.console_space_note": "Note from {agent} (console): {text}",
    "handoff.console_space_resolved": (
        "Ticket #{id} resolved by {agent} (console); the bot answers this customer again."
    ),
    # A send to the customer that failed after it may have arrived: resending
    # blindly could show it twice, so the agents decide.
    "handoff.unconfirmed": (
        "Delivery to the customer of ticket #{id} could not be confirmed: the send failed "
        "after the message went out, so it may have arrived (in whole or in part) or not. "
        "It is not sent again by itself, so the customer never gets it twice. If they did "
        "not get it, press Send again or write /resend {row}:\n{text}"
    ),
    "handoff.resend_button": "Send again",
    "handoff.resend_usage": (
        "Write /resend N, N being the number in a warning that a delivery could not be confirmed."
    ),
    "handoff.resend_queued": "Sending message {row} to the customer again.",
    "handoff.resend_unknown": "No message {row} of a ticket in this support space.",
    "handoff.resend_settled": (
        "Message {row} is not waiting for a decision: it was sent again already, or delivered."
    ),
    "handoff.resend_erased": (
        "Message {row} was erased at the customer's request; it cannot be sent again."
    ),
}

# -- knowledge: escalation, "did you mean", citations -------------------------
_KNOWLEDGE: dict[str, str] = {
    "knowledge.no_reliable_answer": (
        "I don't have a reliable answer to that in our knowledge base, so I won't guess."
    ),
    # Without a support team connected nobody follows up in the chat, so the
    # customer is promised nothing beyond the question being kept for the team.
    "knowledge.escalation": (
        "I don't have a reliable answer to that in our knowledge base, so I won't guess. "
        "I've noted your question so a human colleague can look into it."
    ),
    # How a passage is named in citations: "{name} {id}", the name by its kind.
    "knowledge.kind.faq": "FAQ",
    "knowledge.label": "{name} {id}",
    "knowledge.verbatim": "{text}\n\nSource: {source} ({label})",
    "knowledge.sources": "Sources:",
    "knowledge.source_line": "[{number}] {title} ({label})",
    "knowledge.source_line_with_origin": "[{number}] {title} ({label}, {origin})",
    "knowledge.suggestions": "I couldn't find an exact answer. The closest FAQ entries are:",
    "knowledge.suggestion_line": "- {title} ({label})",
    "knowledge.clarify": "I'm not sure which of these you mean:",
    "knowledge.clarify_line": "{number}. {title}",
    "knowledge.clarify_how": "Reply {numbers} to get that answer, or {human} to ask a person.",
    "knowledge.clarify_or": " or ",
    "knowledge.none_of_these": "None of these — ask a person",
    "knowledge.draft.label": "DRAFT — review before sending; nothing has been sent.",
    "knowledge.draft.heading": "{label}\n({kind}, {tone}, {length})\n\n",
    "knowledge.draft.empty": (
        "The model returned an empty draft; please try again with more detail."
    ),
    "knowledge.draft.usage": (
        "Usage: /draft <kind> <what it should say> [--tone T] [--length short|medium|long]\n"
        "kinds: {kinds}; tones: {tones}.\n"
        "Then reply with changes (e.g. 'shorter', 'more formal'); /draft done when finished."
    ),
    "knowledge.draft.unknown_kind": "unknown kind {kind!r}.\n{usage}",
    "knowledge.draft.no_brief": "say what the {kind} should be about.\n{usage}",
    "knowledge.draft.unknown_tone": "unknown tone {tone!r}; use one of {tones}",
    "knowledge.draft.unknown_length": "unknown length {length!r}; use short, medium or long",
    "knowledge.draft.someone_elses": (
        "Someone else's draft is open in this conversation; only they can revise "
        "or close it (it expires a day after its last change, and their /reset removes it)."
    ),
    "knowledge.draft.closed": "Draft closed. Nothing was sent.",
    # The knowledge commands: what /help says of them, and their replies.
    "knowledge.command.faq": (
        "manage the FAQ: add, list, remove, search, pending, approve, reject, gaps"
    ),
    "knowledge.command.answer": "the answer to an FAQ entry I suggested: /answer <id>",
    "knowledge.command.mode": (
        "answering mode: support, faq or assistant (--tenant: the whole workspace)"
    ),
    "knowledge.command.persona": "set the assistant's persona for this workspace",
    "knowledge.command.draft": "draft a reply, announcement, social post, email or release note",
    "knowledge.faq.usage": (
        "Usage:\n"
        "/faq add <question> | <answer> [| <source>]\n"
        "/faq list [page]\n"
        "/faq remove <id>\n"
        "/faq search <question>\n"
        "/faq pending · /faq approve <id> [| <edited answer>] · /faq reject <id>\n"
        "/faq gaps (questions the FAQ did not answer well)\n"
        "/faq share <phrasing id> (owners: a workspace's learned phrasing for everyone)\n"
        "Admins edit this workspace's own entries; owners edit the shared FAQ, or this "
        "workspace's with --here."
    ),
    "knowledge.faq.add_how": "Write it as: /faq add <question> | <answer> [| <source>]",
    "knowledge.faq.added": "Added FAQ entry {ref}{only}: {question}{adapting}",
    "knowledge.faq.updated": "Updated FAQ entry {ref}{only}: {question}{adapting}",
    "knowledge.faq.unchanged": "Unchanged: FAQ entry {ref}{only}: {question}{adapting}",
    "knowledge.faq.this_workspace_only": " (this workspace only)",
    "knowledge.faq.adapting": (
        "\nThe search model adapts to the new entries in the background in a "
        "few minutes; answers use the current one meanwhile."
    ),
    "knowledge.faq.none_yet": "No FAQ entries here yet.",
    "knowledge.faq.page_empty": "Page {page} is empty.",
    "knowledge.faq.page": "FAQ entries (page {page}):",
    "knowledge.faq.page_line": "{ref}: {question}",
    "knowledge.faq.more": "More: /faq list {page}",
    "knowledge.faq.remove_which": "Which one? /faq remove <id> (ids are shown by /faq list)",
    "knowledge.faq.shared_is_owners": (
        "FAQ entry {ref} is in the shared FAQ, which only owners edit."
    ),
    "knowledge.faq.no_entry": "There is no FAQ entry {ref} here.",
    "knowledge.faq.removed": "Removed FAQ entry {ref}: {question}",
    "knowledge.faq.search_what": "Search for what? /faq search <question>",
    "knowledge.faq.empty": "The FAQ is empty.",
    "knowledge.faq.matches": "Best matches (I would answer: {path}):",
    "knowledge.faq.match_line": "{ref} ({score:.2f}): {title}",
    "knowledge.faq.answer_which": "Which one? /faq answer <id>",
    "knowledge.faq.gaps_own": "Admins see their own workspace's gaps: /faq gaps.",
    "knowledge.faq.decide_which": "Which one? /faq {sub} ID (ids are shown by /faq pending).",
    "knowledge.faq.no_proposal": "There is no learned answer #{id} for you to decide.",
    "knowledge.faq.already_decided": "Learned answer #{id} was already {status}.",
    "knowledge.faq.decided_meanwhile": "Learned answer #{id} was decided meanwhile.",
    "knowledge.faq.rejected": "Rejected learned answer #{id}.",
    "knowledge.faq.no_phrasings": "No learned phrasings in this workspace.",
    "knowledge.faq.phrasings": "Learned phrasings here (share one with /faq share <id>):",
    "knowledge.faq.phrasing_line": "{id}: {text} (entry {entry})",
    "knowledge.faq.no_phrasing": "There is no learned phrasing {id}.",
    "knowledge.faq.shared": "Phrasing {id} is now used for every workspace.",
    "knowledge.mode.current": (
        "Mode here: {mode}. Set it with /mode support|faq|assistant "
        "(add --tenant for the whole workspace; /mode default to clear)."
    ),
    "knowledge.mode.unknown": "Unknown mode {choice!r}. Modes: {modes}.",
    "knowledge.mode.cleared_here": "Mode cleared; the workspace default applies.",
    "knowledge.mode.cleared_workspace": "Mode cleared; support applies.",
    "knowledge.mode.set_here": "Mode set to {mode} in this conversation.",
    "knowledge.mode.set_workspace": "Mode set to {mode} for this workspace.",
    "knowledge.persona.current": "Current persona:\n{persona}",
    "knowledge.persona.none": "No persona set.",
    "knowledge.persona.how": "\nSet one with /persona <text>, remove it with /persona clear.",
    "knowledge.persona.removed": "Persona removed.",
    "knowledge.persona.too_long": "That persona is {length} characters; keep it under 2000.",
    "knowledge.persona.saved": (
        "Persona saved. Drafts and grounded answers in this workspace will use it."
    ),
}

# -- team: roles, quotas, ratings, learning -----------------------------------
_TEAM: dict[str, str] = {
    "team.invitation": (
        "How did I do? Reply 👍 or 👎 (or /rate good, or /rate bad and what was missing)."
    ),
    "team.ticket_invitation": (
        "How did our team do? Reply 👍 or 👎 (or /rate good, or /rate bad and what was missing)."
    ),
    "team.quota_notice": (
        "You've reached today's limit of answers I can write for you. I'll still answer "
        "from our FAQ where it has the answer, commands keep working, and /human reaches a "
        "person. The limit resets at midnight UTC."
    ),
    "team.nothing_to_rate": "There's nothing to rate here right now.",
    "team.rating_not_yours": "Only the person who was answered can rate this answer.",
    "team.rated_good": "Thanks for the feedback!",
    "team.rated_bad_with_comment": "Thanks for telling us; the team will look at it.",
    "team.rated_bad": (
        "Thanks for telling us. If you like, say what was missing: /rate bad WHAT WAS MISSING."
    ),
    # Who a command is for, as refusals and /help name them.
    "team.who.everyone": "everyone",
    "team.who.agents": "agents and admins",
    "team.who.admins": "admins",
    "team.who.owners": "owners",
    # Naming a person in /role and /quota.
    "team.user_id_help": (
        "Name the person by their platform id, which never changes: a Telegram user id "
        "(digits), a Slack member id (U…) or an @-mention in Slack. Display names and "
        "usernames can change, so they are not accepted."
    ),
    "team.not_a_member": "{raw} is not a member of this workspace. {help}",
    "team.not_a_slack_id": "{raw!r} is not a Slack member id. {help}",
    "team.not_a_telegram_id": "{raw!r} is not a Telegram user id. {help}",
    "team.not_a_user_id": "{raw!r} is not a user id. {help}",
    # The team commands: what /help says of them, and their replies.
    "team.command.role": "give someone a role here: /role USER admin|agent|customer",
    "team.command.roles": "list the admins and agents here",
    "team.command.audit": "the last staff actions here: /audit [N]",
    "team.command.quota": "today's model usage and limits",
    "team.command.rate": "rate my last answer: /rate good, or /rate bad COMMENT",
    "team.owners_only_elsewhere": "Only owners act on another tenant; leave out --tenant.",
    "team.which_tenant": "Which tenant? --tenant TENANT",
    "team.shared_faq": "the shared FAQ",
    "team.tenant": "tenant {tenant}",
    "team.every_tenant": "every tenant",
    "team.in_tenant": " [{tenant}]",
    "team.shared": "shared",
    "team.role_usage": (
        "Usage: /role USER admin|agent|customer (customer removes the role). USER is the "
        "person's platform id: a Telegram user id, a Slack member id (U…) or an @-mention."
    ),
    "team.role_of_owner": "{user} is an owner (DESKMATE_ADMINS); /role does not change owners.",
    "team.role_own": "You can't change your own role; ask another admin or an owner.",
    "team.role_set": "{user} is now {role} in {where} (was {before}).",
    "team.roles_head": "Roles in {where}:",
    "team.roles_line": "{user}: {role} (by {by})",
    "team.roles_none": "nobody yet; everyone is a customer (owners aside).",
    "team.roles_owners": "Owners (DESKMATE_ADMINS) act everywhere.",
    "team.audit_own_only": "Admins see their own workspace's audit trail: /audit [N].",
    "team.audit_none": "No staff actions recorded here yet.",
    "team.audit_head": "Last {count} staff actions in {where}:",
    "team.audit_line": "{when}{where} {actor} {action}{target}{details}",
    "team.audit_details": " ({details})",
    "team.quota_usage": (
        "Usage: /quota (today's usage and limits); admins: /quota user USER N|off "
        "(USER * for everyone without a limit of their own), /quota tenant N|off. "
        "N is tokens a day."
    ),
    "team.quota_admins_only": "Only admins change quotas; /quota shows yours.",
    "team.quota_whole_tenant": "the whole tenant",
    "team.quota_each_user": "each user",
    "team.quota_no_limit": "no limit",
    "team.quota_per_day": "{limit} tokens a day",
    "team.quota_set": "Quota for {who} in {where}: {amount}.",
    "team.quota_head": "Model usage today (UTC):",
    "team.quota_you": "you",
    "team.quota_line": "{who}: {usage}",
    "team.quota_used_of": "{used} tokens of {limit}",
    "team.quota_used_unlimited": "{used} tokens (no limit)",
    "team.quota_defaults": "defaults from the settings: {user} per user, {tenant} per tenant",
    "team.quota_none": "none",
    "team.rate_how": "Rate with /rate good, or /rate bad and what was missing.",
    # Learned answers: /learn in a ticket, /faq approve, /faq pending, /faq gaps.
    # Stored as the source of an entry learned from a ticket (and cited as such).
    "team.learned_source": "support team",
    "team.learn_nothing_yet": (
        "Nothing to learn from ticket #{id} yet: answer the customer here first, then /learn."
    ),
    "team.learn_no_question": "I can't find the customer's question in ticket #{id}.",
    "team.learn_no_entry": (
        "There is no FAQ entry {ref} this customer's questions are answered from."
    ),
    "team.learn_new_entry": "a new FAQ entry",
    "team.learn_phrasing": "another phrasing of FAQ entry {ref}",
    "team.learn_proposed": (
        "Proposed {what} (#{id}) for an admin to approve:\n"
        "Q: {question}\nA: {answer}\n"
        "Admins: /faq approve {id} [| edited answer] or /faq reject {id}."
    ),
    "team.approve_gone": "FAQ entry {ref} is gone; /faq reject {id} it.",
    "team.approve_meanwhile": (
        "Proposal #{id} was decided meanwhile; FAQ entry {ref} is up to date."
    ),
    "team.approved_phrasing": "Approved: FAQ entry {ref} now also answers “{question}”.",
    "team.approved": "Approved: FAQ entry {ref} answers “{question}”.",
    "team.pending_none": "No learned answers are waiting for approval.",
    "team.pending_head": "Learned answers waiting for approval:",
    "team.pending_line": "#{id}{where}{what} Q: {question}",
    "team.pending_phrasing": " (phrasing of {ref})",
    "team.pending_answer": "    A: {answer}",
    "team.pending_foot": "/faq approve ID [| edited answer] · /faq reject ID",
    "team.gaps_none": "No gaps found: nothing was escalated or rated bad.",
    "team.gaps_head": "Knowledge gaps ({questions} questions in {groups} groups):",
    "team.gaps_line": "{count}× “{question}” ({why})",
    "team.gaps_escalated": "{count} escalated",
    "team.gaps_rated_bad": "{count} rated bad",
    "team.gaps_also": "    also: “{question}”",
    "team.gaps_more": "… and {count} smaller groups.",
}

# -- commands: help, refusals, housekeeping ------------------------------------
_COMMANDS: dict[str, str] = {
    "commands.unknown": "I don't know the command /{name}. Send /help to see what I can do.",
    "commands.refusal": "Sorry, /{name} is only for this bot's {who}.",
    "commands.help_head": "Here is what I can do:",
    "commands.help_line": "/{name} — {description}{who}",
    "commands.help_who": " ({who})",
    "commands.help_foot": "Anything else you write, I answer as a support question.",
    "commands.describe.start": "introduce Deskmate",
    "commands.describe.help": "list commands",
    "commands.describe.reset": "forget this conversation's history",
    "commands.describe.forget": "delete everything I stored about you",
    "commands.describe.human": "talk to a person from the support team",
    "commands.describe.stats": "usage, model cost and ratings here (owners: /stats TENANT|all)",
    "commands.start": (
        "Hi! I'm Deskmate, this team's support assistant. Ask me anything about "
        "our product or service and I'll do my best to help; if I can't, I'll say so. "
        "Send /help to see what else I can do."
    ),
    "commands.reset_done": (
        "Done — I've forgotten this conversation ({removed} messages). Let's start fresh."
    ),
    "commands.reset_own_done": (
        "Done — I've forgotten your part of this group's conversation ({removed} messages: "
        "yours and my answers to them). What the others said stays; this bot's admins "
        "can clear all of it with /reset."
    ),
    "commands.forget_done": (
        "Done — I deleted {messages} stored messages from and to you, "
        "and your profile.{also} New messages you send will be stored again."
    ),
    "commands.forget_also": " I also removed {what}.",
    "commands.forget_faq_answers": "{count} logged FAQ answers",
    "commands.forget_escalations": "{count} escalations",
    "commands.forget_drafts": "{count} drafts",
    "commands.learn_elsewhere": (
        "/learn works inside a ticket in the support space: after answering the customer, "
        "/learn proposes your answer as an FAQ entry (/learn FAQ-ID: as another phrasing of "
        "that entry)."
    ),
    "commands.stats_own_only": "Admins see their own workspace's figures: /stats without a name.",
    "commands.stats_none": "—",
    "commands.stats_seconds": "{value:.2f} s",
    "commands.stats_every_tenant": "every tenant",
    "commands.stats_tenant": "tenant {tenant}",
    "commands.stats_shared": "(shared)",
    "commands.stats_per_answer": (
        "per model answer: {tokens:.0f} tokens, {seconds:.2f} s of model time"
    ),
    "commands.stats_per_answer_none": "per model answer: —",
    "commands.stats_timed_by_model": "model time as reported by the model",
    "commands.stats_timed_by_wall": "model time measured as wall time of each generation",
    "commands.stats_ratings": ("ratings: {good} 👍, {bad} 👎 ({percent:.0f}% good)"),
    "commands.stats_no_ratings": "ratings: none yet",
    "commands.stats_head": "Deskmate usage, {where}:",
    "commands.stats_conversations": "conversations: {count}",
    "commands.stats_messages": "messages: {messages} ({answers} answers, {failed} failed)",
    "commands.stats_latency": "answer latency: p50 {p50}, p95 {p95}",
    "commands.stats_model": (
        "model answers: {answers}; tokens: {prompt} prompt + {completion} completion; "
        "model time: {seconds:.1f} s"
    ),
    "commands.stats_per_answer_line": "{per_answer} ({timing})",
}

# -- the local web chat's HTTP API: refusals and errors ------------------------
_WEB: dict[str, str] = {
    "web.starting": "Deskmate is starting, try again",
    "web.local_only": (
        "This chat answers this machine only; it was reached through a proxy or from another "
        "address. The operator can set DESKMATE_WEB_TOKEN and share its link (/?token=...)."
    ),
    "web.token_needed": "This chat needs its access link (/?token=...).",
    "web.wrong_token": "wrong token",
    "web.too_many_tokens": "too many wrong tokens from your address; wait a minute",
    "web.who_are_you": (
        "no visitor identity: open the chat page first, or send the one Deskmate gave you "
        "(X-Deskmate-Visitor)"
    ),
    "web.too_fast": "too many messages; wait a moment",
    "web.not_stored": "could not store your message",
    "web.storage_down": "could not read your messages; try again in a moment",
    "web.send_json": "send JSON (application/json)",
    "web.body_not_json": "body must be JSON",
    "web.body_not_object": "body must be a JSON object",
    "web.bad_session": "session must be 8-64 letters/digits",
    "web.bad_message_id": "message_id must be 8-64 letters/digits",
    "web.bad_text": "text must be a string",
}

CATALOG: Mapping[str, Mapping[str, str]] = {
    "en": {
        **_CONVERSATION,
        **_HANDOFF,
        **_KNOWLEDGE,
        **_TEAM,
        **_COMMANDS,
        **_WEB,
        **WIDGET,
        **LANGUAGES,
        **DOCUMENTS,
        **COPILOT,
        **CONSOLE,
    },
    # Each shipped language in its own module of bot/texts (the console's in
    # bot/texts/console); a key one lacks is said in English
    # (tests/bot/test_messages.py lists any).
    "sv": {**SV, **CONSOLE_SV},
    "de": {**DE, **CONSOLE_DE},
    "es": {**ES, **CONSOLE_ES},
    "fr": {**FR, **CONSOLE_FR},
    "zh": {**ZH, **CONSOLE_ZH},
}


def say(key: str, language: str = DEFAULT_LANGUAGE, /, **values: object) -> str:
    """The text ``key`` in ``language`` (English where it has no translation).

    Raises ``KeyError`` for a key no language has: a typo must fail in tests,
    not reach a customer as an empty message.
    """
    texts = CATALOG.get(language) or CATALOG[DEFAULT_LANGUAGE]
    template = texts.get(key)
    if template is None:
        template = CATALOG[DEFAULT_LANGUAGE][key]
    return template.format(**values) if values else template


def keys() -> frozenset[str]:
    """Every key of the English catalog (the reference language)."""
    return frozenset(CATALOG[DEFAULT_LANGUAGE])
