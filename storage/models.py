"""Table definitions. Schema changes go through a new Alembic revision in
``storage/migrations/versions``; these definitions mirror the latest one."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
    true,
)

# Tables kept in a module of their own are named here with the rest.
from storage.faq_vectors import faq_text_vectors  # noqa: F401
from storage.models_documents import document_chunks, documents  # noqa: F401
from storage.schema import IdType, metadata

conversations = Table(
    "conversations",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("platform", String(32), nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("chat", String(128), nullable=False),
    Column("thread", String(128), nullable=False, server_default=""),
    # False once the platform told us the chat is gone (bot blocked, kicked).
    Column("active", Boolean, nullable=False, server_default=true()),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The language last detected in a customer's message (ISO 639-1): short
    # messages are answered in it. NULL: none detected yet.
    Column("language", String(8), nullable=True),
    UniqueConstraint("platform", "tenant", "chat", "thread", name="uq_conversations_ref"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", IdType, primary_key=True),
    Column(
        "conversation_id",
        IdType,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("role", String(16), nullable=False),  # user | assistant
    # chat: part of the model's history; command: a command and its output.
    Column("kind", String(16), nullable=False, server_default="chat"),
    Column("user_id", String(160)),  # platform user id of the author (user rows)
    # For an assistant row: the user message it answers. History is ordered by
    # coalesce(reply_to, id), so an answer sorts right after its question even
    # when later questions were stored before it.
    Column("reply_to", IdType),
    Column("text", Text, nullable=False),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("latency_ms", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # History reads walk this backwards: newest first, answers by their question.
    Index(
        "ix_messages_position",
        "conversation_id",
        text("coalesce(reply_to, id)"),
        "id",
    ),
    Index("ix_messages_user", "user_id"),
)

inbound_events = Table(
    "inbound_events",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("platform", String(32), nullable=False),
    Column("event_id", String(160), nullable=False),
    Column(
        "conversation_id",
        IdType,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("message_id", IdType),
    Column("user_id", String(160), nullable=False),
    Column("user_name", String(160), nullable=False, server_default=""),
    Column("text", Text, nullable=False),
    Column("meta", JSON, nullable=False),
    # queued -> processing -> answered | failed. Queued rows wait for an older
    # event of their conversation; failed rows with a ``retry_at`` and stale
    # claims are claimed again by the background sweep or a redelivery.
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("claimed_at", DateTime(timezone=True)),
    # Which process holds the claim; a claim by a process that is gone is stale.
    Column("claimed_by", String(64)),
    Column("answered_at", DateTime(timezone=True)),
    # When a failed event may be tried again; NULL: settled for good.
    Column("retry_at", DateTime(timezone=True)),
    UniqueConstraint("platform", "event_id", name="uq_inbound_events_platform_event"),
    Index("ix_inbound_events_status", "platform", "status"),
    Index("ix_inbound_events_user_id", "user_id"),
    Index("ix_inbound_events_conversation", "conversation_id", "status", "id"),
)

# Something only one process may do at a time (e.g. Telegram long polling):
# held while ``expires_at`` is renewed, free once it lapses or is deleted.
leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("platform_user", String(160), nullable=False),
    Column("name", String(160), nullable=False, server_default=""),
    # Read by nothing: roles are per tenant, in ``team_roles``. Older releases
    # stored user | agent | admin here.
    Column("role", String(16), nullable=False, server_default="user"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("platform_user", name="uq_users_platform_user"),
)


# -- knowledge base (FAQ) ------------------------------------------------------
# tenant "" is the deployment-wide knowledge base every platform sees; a
# non-empty tenant scopes an entry to that tenant only. Keyword search runs on
# a SQLite FTS5 table ``faq_fts`` (rowid = faq_entries.id) or, on PostgreSQL, on
# a generated ``search_vector`` tsvector column with a GIN index; both are
# created by migration 0002_knowledge, not by this metadata.

faq_entries = Table(
    "faq_entries",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False, server_default=""),
    # The external id when imported with one, else "q:" + the normalised
    # question; re-importing the same key updates the row.
    Column("key", String(300), nullable=False),
    Column("external_id", String(200)),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("alternatives", JSON, nullable=False),  # list[str]
    Column("tags", JSON, nullable=False),  # list[str]
    Column("source", Text, nullable=False, server_default=""),
    # Question + alternative phrasings, the text keyword search sees as "question".
    Column("search_text", Text, nullable=False),
    # float32 little-endian: one row per phrasing (question first), then the
    # question+answer vector, then the answer vector; see bot.knowledge.index.
    Column("embedding", LargeBinary),
    Column("embedding_model", String(200), nullable=False, server_default=""),
    # When the content was last edited (from the import file when it says).
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # When this row last changed here; other processes poll it to refresh.
    Column("changed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "key", name="uq_faq_entries_tenant_key"),
)

# A question a customer asked and then confirmed as meaning this entry (they
# chose it among "did you mean ...?" options). Seen by ``tenant`` only; "" when
# an owner shared it with every tenant. One vector (float32) per row.
faq_phrasings = Table(
    "faq_phrasings",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False, server_default=""),
    Column(
        "entry_id",
        IdType,
        ForeignKey(
            "faq_entries.id", ondelete="CASCADE", name="fk_faq_phrasings_entry_id_faq_entries"
        ),
        nullable=False,
    ),
    Column("text", Text, nullable=False),
    # Who asked it, so that forgetting a person removes their words too.
    Column("user_id", String(160), nullable=False, server_default=""),
    Column("embedding", LargeBinary),
    Column("embedding_model", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "entry_id", "text", name="uq_faq_phrasings_tenant_entry"),
    Index("ix_faq_phrasings_user_id", "user_id"),
)

# An FAQ entry in a further language (``deskmate faq import FILE --language sv``):
# quoted to customers writing that language, and searched as the entry's
# phrasings. Its vectors: one per phrasing (question first), as faq_entries'.
faq_versions = Table(
    "faq_versions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column(
        "entry_id",
        IdType,
        ForeignKey(
            "faq_entries.id", ondelete="CASCADE", name="fk_faq_versions_entry_id_faq_entries"
        ),
        nullable=False,
    ),
    Column("language", String(16), nullable=False),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("alternatives", JSON, nullable=False),  # list[str]
    Column("embedding", LargeBinary),
    Column("embedding_model", String(200), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("entry_id", "language", name="uq_faq_versions_entry_language"),
)

# Every knowledge-base answer: which entries it used and their scores.
faq_answers = Table(
    "faq_answers",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False, server_default=""),
    Column("conversation_key", String(600), nullable=False, server_default=""),
    Column("question", Text, nullable=False),
    Column("path", String(16), nullable=False),  # verbatim | clarify | grounded | escalated
    Column("entries", JSON, nullable=False),  # [{"id", "key", "score"}]
    Column("answer", Text, nullable=False),
    # Platform user id of who asked ("" for answers logged before 0003_forget).
    Column("user_id", String(160), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_faq_answers_created", "created_at"),
    Index("ix_faq_answers_user_id", "user_id"),
)

# Questions the knowledge base could not answer; a handoff picks them up.
escalations = Table(
    "escalations",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False, server_default=""),
    Column("conversation_key", String(600), nullable=False, server_default=""),
    Column("user_id", String(160), nullable=False, server_default=""),
    Column("question", Text, nullable=False),
    Column("reason", String(200), nullable=False),
    Column("answer_id", IdType, ForeignKey("faq_answers.id", ondelete="SET NULL")),
    Column("status", String(16), nullable=False, server_default="open"),  # open | taken | closed
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_escalations_status", "status", "created_at"),
    Index("ix_escalations_user_id", "user_id"),
)

# Per-tenant / per-conversation knobs set by admins: mode, persona.
# scope is "tenant:<tenant>" or "conversation:<conversation key>" (see
# ``storage.addresses.ConversationAddress.key``).
knowledge_settings = Table(
    "knowledge_settings",
    metadata,
    Column("scope", String(700), primary_key=True),
    Column("name", String(32), primary_key=True),  # mode | persona
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# A tenant's default language for customers whose own cannot be told
# (``/language xx`` by its admins); no row: the deployment's DESKMATE_LANGUAGE.
tenant_languages = Table(
    "tenant_languages",
    metadata,
    Column("platform", String(32), primary_key=True),
    Column("tenant", String(128), primary_key=True),
    Column("language", String(8), nullable=False),
    Column("set_by", String(200), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


# -- human handoff -----------------------------------------------------------------
# A ticket hands one conversation to people. At most one ticket of a
# conversation is open (waiting or human) at a time: the open ticket is the
# conversation's handoff state, no open ticket means the bot answers.
tickets = Table(
    "tickets",
    metadata,
    Column("id", IdType, primary_key=True),
    Column(
        "conversation_id",
        IdType,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("state", String(16), nullable=False),  # waiting | human | closed
    # request | escalation | model_failure | takeover
    Column("trigger", String(32), nullable=False),
    Column("customer", String(160), nullable=False, server_default=""),
    Column("customer_name", String(160), nullable=False, server_default=""),
    Column("summary", Text, nullable=False, server_default=""),
    # What the ticket message shows: last turns, knowledge-base candidates.
    Column("details", JSON, nullable=False),
    Column("agent", String(160), nullable=False, server_default=""),
    Column("agent_name", String(160), nullable=False, server_default=""),
    # Where agents work it: the support space ("slack:T1/C1"), the chat, and
    # the topic / thread ts / ticket message once it was posted there.
    Column("space", String(200), nullable=False),
    Column("space_chat", String(128), nullable=False),
    Column("space_thread", String(128), nullable=False, server_default=""),
    Column("space_message", String(128), nullable=False, server_default=""),
    Column("close_reason", String(32), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("claimed_at", DateTime(timezone=True)),
    Column("first_reply_at", DateTime(timezone=True)),
    Column("last_activity_at", DateTime(timezone=True), nullable=False),
    Column("reminded_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Index(
        "uq_tickets_open_conversation",
        "conversation_id",
        unique=True,
        sqlite_where=text("state <> 'closed'"),
        postgresql_where=text("state <> 'closed'"),
    ),
    Index("ix_tickets_space", "space_chat", "space_thread"),
    Index("ix_tickets_state", "state", "last_activity_at"),
)

# What happened on a ticket: relayed messages both ways, notes, state changes.
ticket_events = Table(
    "ticket_events",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("ticket_id", IdType, ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
    # opened | claimed | released | resolved | note | from_customer | to_customer
    Column("kind", String(24), nullable=False),
    Column("author", String(160), nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_ticket_events_ticket", "ticket_id", "id"),
)

# Messages that are not replies (relays, notices, ticket posts, reminders),
# sent exactly once by the outbox worker. ``key`` makes writing one
# idempotent: a replayed event enqueues nothing new.
outbox = Table(
    "outbox",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("key", String(200), nullable=False),
    # relay | notice | ticket | reminder
    Column("kind", String(16), nullable=False),
    Column("ticket_id", IdType, ForeignKey("tickets.id", ondelete="CASCADE")),
    Column("platform", String(32), nullable=False),
    Column("tenant", String(128), nullable=False),
    Column("chat", String(128), nullable=False),
    Column("thread", String(128), nullable=False, server_default=""),
    Column("text", Text, nullable=False),
    # pending -> sent | failed | unconfirmed (may have arrived; resent only on request)
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(64)),
    Column("claimed_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    # The platform's id of the message sent: a reply to a relayed message
    # finds its ticket through it.
    Column("sent_message", String(128), nullable=False, server_default=""),
    UniqueConstraint("key", name="uq_outbox_key"),
    Index("ix_outbox_due", "status", "next_attempt_at"),
    Index("ix_outbox_sent_message", "chat", "sent_message"),
)


# -- operator console ------------------------------------------------------------------
# Only SHA-256 hashes of sign-in links and session cookies are stored: a copy of
# the database does not let anyone into the console.
console_links = Table(
    "console_links",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # Set when the link is used; a link signs in once.
    Column("used_at", DateTime(timezone=True)),
    # Whom the link signs in ("": the owner's fallback, a link printed without --user).
    Column("platform_user", String(160), nullable=False, server_default=""),
    UniqueConstraint("token_hash", name="uq_console_links_token_hash"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("token_hash", String(64), nullable=False),
    # The session's CSRF token: every write must echo it (form field or header).
    Column("csrf", String(64), nullable=False),
    Column("via", String(16), nullable=False),  # token | link | personal
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # Who signed in ("": the owner's fallback, the shared token or an anonymous link).
    Column("platform_user", String(160), nullable=False, server_default=""),
    UniqueConstraint("token_hash", name="uq_console_sessions_token_hash"),
)

# One personal sign-in token per person (``deskmate console token --user``).
console_tokens = Table(
    "console_tokens",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("platform_user", String(160), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("token_hash", name="uq_console_tokens_token_hash"),
    UniqueConstraint("platform_user", name="uq_console_tokens_platform_user"),
)
# -- the support team ----------------------------------------------------------------
# Roles, the audit trail, quotas and model usage, ratings and learned answers.
# A tenant is what ``ConversationRef.tenant`` names (a Slack workspace, a
# Telegram bot); owners (``DESKMATE_ADMINS``) are settings, never rows.

# Who is an admin or an agent of which tenant; everyone else is a customer.
team_roles = Table(
    "team_roles",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("platform_user", String(160), primary_key=True),
    Column("role", String(16), nullable=False),  # admin | agent
    Column("granted_by", String(160), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Every staff action: who did what, when, in which tenant.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False, server_default=""),
    Column("actor", String(160), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(300), nullable=False, server_default=""),
    Column("details", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_audit_log_tenant", "tenant", "id"),
)

# Daily token limits. subject "" is the whole tenant, "*" each of its users
# unless one has a row of their own, else a platform user id.
quotas = Table(
    "quotas",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("subject", String(160), primary_key=True),
    Column("daily_tokens", BigInteger, nullable=False),
    Column("set_by", String(160), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# What each model answer cost: tokens and seconds of model time.
model_usage = Table(
    "model_usage",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("user_id", String(160), nullable=False, server_default=""),
    Column("inbound_id", IdType),
    Column("plan", String(16), nullable=False),  # chat | grounded | draft
    Column("prompt_tokens", Integer, nullable=False, server_default="0"),
    Column("completion_tokens", Integer, nullable=False, server_default="0"),
    Column("model_seconds", Float, nullable=False, server_default="0"),
    # backend: the backend reported its own model time; wall: measured around the stream.
    Column("seconds_source", String(8), nullable=False, server_default="wall"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_model_usage_tenant", "tenant", "created_at"),
    Index("ix_model_usage_user", "user_id", "created_at"),
)

# Who was told their quota is used up, once a day.
quota_notices = Table(
    "quota_notices",
    metadata,
    Column("tenant", String(128), primary_key=True),
    Column("user_id", String(160), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# An invitation to rate an answer (score NULL) and, once given, the rating.
# The rated answer is the inbound event it answered, or a resolved ticket.
ratings = Table(
    "ratings",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("conversation_id", IdType, nullable=False),
    Column("inbound_id", IdType),
    Column("ticket_id", IdType),
    Column("user_id", String(160), nullable=False, server_default=""),
    Column("question", Text, nullable=False, server_default=""),
    Column("score", Integer),  # 1 | -1
    Column("comment", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rated_at", DateTime(timezone=True)),
    Index("ix_ratings_conversation", "conversation_id", "id"),
    Index("ix_ratings_tenant", "tenant", "rated_at"),
    Index("ix_ratings_user_id", "user_id"),
)

# Agents' answers proposed as FAQ entries (or as another phrasing of one).
faq_proposals = Table(
    "faq_proposals",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),
    # The entry this is another phrasing of ("": a new entry) and its tenant.
    Column("target_ref", String(200), nullable=False, server_default=""),
    Column("target_tenant", String(128), nullable=False, server_default=""),
    Column("ticket_id", IdType),
    Column("proposed_by", String(160), nullable=False),
    Column("status", String(16), nullable=False),  # pending | approved | rejected
    Column("decided_by", String(160), nullable=False, server_default=""),
    Column("entry_ref", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Index("ix_faq_proposals_status", "status", "tenant"),
)

# Buttons adapters may show under an outbox notice: [[label, command], ...].
outbox.append_column(Column("buttons", JSON))
# -- Slack installations (OAuth) -------------------------------------------------------
# One row per installation: a workspace (team_id), or a whole Enterprise Grid org
# (enterprise_id with is_enterprise_install, team_id ""), per installing user. ""
# stands for an absent id so the unique key holds on every backend. Tokens live
# only in ``secrets``, encrypted (storage.slack_repo.TokenCipher); ``details`` keeps
# the rest of what Slack returned.
slack_installations = Table(
    "slack_installations",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("enterprise_id", String(32), nullable=False, server_default=""),
    Column("team_id", String(32), nullable=False, server_default=""),
    Column("user_id", String(32), nullable=False, server_default=""),
    Column("is_enterprise_install", Boolean, nullable=False, server_default=text("false")),
    Column("bot_user_id", String(32), nullable=False, server_default=""),
    Column("bot_id", String(32), nullable=False, server_default=""),
    Column("details", JSON, nullable=False),
    Column("secrets", Text, nullable=False),
    Column("installed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "enterprise_id", "team_id", "user_id", name="uq_slack_installations_installation"
    ),
    Index("ix_slack_installations_latest", "enterprise_id", "team_id", "installed_at"),
)

# The workspaces Deskmate has served (tenant = team id): which org each belongs to
# (an org-wide install reaches its workspaces through it) and, once the app was
# uninstalled or its bot token revoked, since when; the purge removes the
# workspace's data ``DESKMATE_SLACK_RETENTION_DAYS`` later.
slack_workspaces = Table(
    "slack_workspaces",
    metadata,
    Column("team_id", String(32), primary_key=True),
    Column("enterprise_id", String(32), nullable=False, server_default=""),
    Column("uninstalled_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_slack_workspaces_uninstalled", "uninstalled_at"),
)

# OAuth ``state`` values handed out by /slack/install: each one is good once.
slack_oauth_states = Table(
    "slack_oauth_states",
    metadata,
    Column("state", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# -- support spaces chosen by tenants ------------------------------------------------
# A tenant's own support space, set by its admin with /desk: it takes the place of
# DESKMATE_HANDOFF_CHAT for that tenant. ``chat`` "" is "no desk": the tenant's
# customers are told nobody can be reached, whatever the environment lists.
tenant_desks = Table(
    "tenant_desks",
    metadata,
    Column("platform", String(32), primary_key=True),
    Column("tenant", String(128), primary_key=True),
    Column("chat", String(128), nullable=False, server_default=""),
    Column("set_by", String(160), nullable=False, server_default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# -- the web chat ----------------------------------------------------------------------
# Messages waiting for a web visitor outside a reply (an agent's relay, a
# notice): written by whichever process sends them, taken by whichever process
# the visitor's page polls, each once.
web_messages = Table(
    "web_messages",
    metadata,
    Column("id", IdType, primary_key=True),
    # The signed visitor identity's id: only its holder takes these.
    Column("visitor", String(64), nullable=False),
    # The visitor's conversation it belongs to (``conversations.chat``).
    Column("chat", String(128), nullable=False),
    Column("text", Text, nullable=False),
    Column("buttons", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_web_messages_visitor", "visitor", "id"),
    Index("ix_web_messages_created", "created_at"),
)

# Keys the server generated for itself once and every worker shares (the web
# chat's visitor signatures when DESKMATE_SECRET_KEY is not set).
server_keys = Table(
    "server_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Websites that embed the chat widget: the site key the snippet names, the
# tenant its visitors belong to, the origins allowed to use it, the secret
# that signs a signed-in user's id, and how the widget looks.
widget_sites = Table(
    "widget_sites",
    metadata,
    Column("key", String(40), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("origins", JSON, nullable=False),
    Column("secret", String(100), nullable=False),
    Column("title", String(80), nullable=False),
    Column("color", String(7), nullable=False),
    Column("greeting", Text, nullable=False),
    Column("position", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# -- the agents' copilot -----------------------------------------------------------------
# A reply drafted for the agents of a ticket from the knowledge sources, and
# what they did with it: ``pending`` until sent as it is (``sent``), sent
# changed (``edited``, with the share of characters changed), ``discarded``,
# or ``ignored`` (the agent answered in their own words, or the ticket closed
# first). ``unsupported``: the knowledge could not support a reply (nothing to
# send). ``cause`` keys it, so a replayed message drafts nothing twice.
suggestions = Table(
    "suggestions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("ticket_id", IdType, ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
    Column(
        "conversation_id",
        IdType,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The customer's tenant: outcomes are that tenant's figures.
    Column("tenant", String(128), nullable=False),
    Column("cause", String(200), nullable=False, unique=True),
    # The customer's message it answers (None when asked for with /suggest).
    Column("inbound_id", IdType),
    Column("question", Text, nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    # quoted | written | unsupported
    Column("path", String(16), nullable=False),
    Column("language", String(16), nullable=False, server_default=""),
    # What it is about, for the gap report: the best source's title.
    Column("topic", String(300), nullable=False, server_default=""),
    Column("sources", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("agent", String(160), nullable=False, server_default=""),
    Column("agent_name", String(160), nullable=False, server_default=""),
    Column("sent_text", Text, nullable=False, server_default=""),
    Column("changed", Float),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("decided_at", DateTime(timezone=True)),
    Index("ix_suggestions_ticket", "ticket_id", "state"),
    Index("ix_suggestions_tenant", "tenant", "created_at"),
)
