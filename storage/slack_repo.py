"""Slack installations, the workspaces they serve, OAuth states, and the purge.

An installation is a workspace (``team_id``) or a whole Enterprise Grid org
(``enterprise_id`` with ``is_enterprise_install``) that added the app through
the OAuth flow. Its tokens are stored only encrypted (``TokenCipher``, Fernet:
AES-128-CBC with an HMAC-SHA256 tag), so a copy of the database or a backup does
not hand out working tokens without ``DESKMATE_SECRET_KEY``.

When a workspace uninstalls the app (or its bot token is revoked) the tokens go
at once and the workspace is marked; ``purge_workspace`` later deletes what
Deskmate kept for that tenant: its conversations (messages, inbound events,
tickets), queued messages, knowledge-base entries, customers' wordings of
entries, answer log, escalations, settings, its people's profiles and
installations, and the support team's records (roles, quotas, model usage,
ratings, proposed entries, the audit trail). What its people wrote into other
tenants' records goes too: learned questions approved into shared entries,
their relays and notes in tickets a support space of theirs worked, and audit
entries about them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Connection, and_, delete, func, or_, select, text, update

from storage.db import Database, as_utc, utcnow
from storage.documents_repo import forget_documents
from storage.errors import StorageError
from storage.forget_quotes import scrub_quotes_of
from storage.handoff_forget import forget_relays
from storage.knowledge_forget import LearnedWording, forget_unused_text_vectors, forget_wordings
from storage.models import (
    audit_log,
    conversations,
    escalations,
    faq_answers,
    faq_entries,
    faq_phrasings,
    faq_proposals,
    inbound_events,
    knowledge_settings,
    messages,
    model_usage,
    outbox,
    quota_notices,
    quotas,
    ratings,
    slack_installations,
    slack_oauth_states,
    slack_workspaces,
    team_roles,
    tenant_desks,
    tenant_languages,
    ticket_events,
    users,
)
from storage.sql import Store
from storage.widget_repo import WIDGET, purge_widget_tenant

PLATFORM = "slack"
# Fields of an installation that grant access; everything else is stored readable.
SECRET_FIELDS = (
    "bot_token",
    "bot_refresh_token",
    "user_token",
    "user_refresh_token",
    "incoming_webhook_url",
)


class SecretKeyError(StorageError):
    """Stored tokens cannot be decrypted with the configured key(s)."""


class TokenCipher:
    """Encrypts secrets with the Fernet key(s) of ``DESKMATE_SECRET_KEY``.

    Several comma-separated keys rotate: the first encrypts, each one decrypts.
    Raises ``ValueError`` saying what is wrong with the value.
    """

    def __init__(self, keys: str) -> None:
        parts = [part.strip() for part in keys.split(",") if part.strip()]
        if not parts:
            raise ValueError("is not set")
        fernets = []
        for part in parts:
            try:
                fernets.append(Fernet(part.encode("ascii")))
            except (ValueError, UnicodeEncodeError):
                raise ValueError(
                    "is not a Fernet key (32 random bytes in URL-safe base64, 44 characters)"
                ) from None
        self._fernet = MultiFernet(fernets)

    def encrypt(self, secrets: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(secrets, sort_keys=True).encode()).decode("ascii")

    def decrypt(self, stored: str) -> dict[str, str]:
        try:
            return dict(json.loads(self._fernet.decrypt(stored.encode("ascii"))))
        except (InvalidToken, ValueError):
            raise SecretKeyError(
                "could not decrypt stored Slack tokens: DESKMATE_SECRET_KEY is not the key they "
                "were saved with (keep the old key after the new one while rotating)"
            ) from None


@dataclass(frozen=True, slots=True)
class SlackInstallation:
    """One installation as stored; ``secrets`` holds its tokens in plain text."""

    enterprise_id: str
    team_id: str
    user_id: str
    is_enterprise_install: bool
    bot_user_id: str
    bot_id: str
    installed_at: datetime
    details: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def bot_token(self) -> str:
        return self.secrets.get("bot_token", "")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    team_id: str
    conversations: int
    faq_entries: int
    documents: int = 0


def _people(team_id: str) -> str:
    """A LIKE pattern for the platform user ids of a workspace's people."""
    return f"{PLATFORM}:{_like(team_id)}/%"


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SlackRepository(Store):
    """Installations (tokens encrypted), workspaces, OAuth states, and the purge
    of a workspace that uninstalled the app."""

    def __init__(self, db: Database, cipher: TokenCipher) -> None:
        super().__init__(db)
        self._cipher = cipher

    # -- installations -----------------------------------------------------------------

    async def save_installation(self, installation: SlackInstallation) -> None:
        """Store (or replace) an installation; a workspace that had uninstalled is
        served again and its pending purge is called off."""
        team = "" if installation.is_enterprise_install else installation.team_id
        values = {
            "enterprise_id": installation.enterprise_id,
            "team_id": team,
            "user_id": installation.user_id,
            "is_enterprise_install": installation.is_enterprise_install,
            "bot_user_id": installation.bot_user_id,
            "bot_id": installation.bot_id,
            "details": installation.details,
            "secrets": self._cipher.encrypt({k: v for k, v in installation.secrets.items() if v}),
            "installed_at": installation.installed_at,
        }
        now = utcnow()

        def op(conn: Connection) -> None:
            statement = self._insert(slack_installations).values(**values)
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["enterprise_id", "team_id", "user_id"],
                    set_={k: statement.excluded[k] for k in values if k not in _KEY},
                )
            )
            if team:
                self._upsert_workspace(conn, team, installation.enterprise_id, now, revive=True)
            else:
                conn.execute(
                    update(slack_workspaces)
                    .where(slack_workspaces.c.enterprise_id == installation.enterprise_id)
                    .values(uninstalled_at=None, updated_at=now)
                )

        await self._run("save a Slack installation", op)

    async def find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool = False,
    ) -> SlackInstallation | None:
        """The latest installation for the workspace or org (by ``user_id`` when given)."""
        where = self._where(enterprise_id, team_id, is_enterprise_install)
        if user_id is not None:
            where = and_(where, slack_installations.c.user_id == user_id)

        def op(conn: Connection) -> Any:
            return conn.execute(
                select(slack_installations).where(where).order_by(*_LATEST).limit(1)
            ).first()

        row = await self._run("read a Slack installation", op)
        return self._record(row) if row is not None else None

    async def find_bot(
        self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool = False
    ) -> SlackInstallation | None:
        """The latest installation of the workspace or org that still has a bot."""
        where = and_(
            self._where(enterprise_id, team_id, is_enterprise_install),
            slack_installations.c.bot_user_id != "",
        )

        def op(conn: Connection) -> Any:
            return conn.execute(
                select(slack_installations).where(where).order_by(*_LATEST).limit(1)
            ).first()

        row = await self._run("read a Slack installation", op)
        return self._record(row) if row is not None else None

    async def bot_for_team(self, team_id: str) -> SlackInstallation | None:
        """The bot that serves workspace ``team_id``: its own installation, or the
        org-wide one of the Enterprise Grid org it belongs to."""

        def op(conn: Connection) -> Any:
            own = conn.execute(
                select(slack_installations)
                .where(
                    slack_installations.c.team_id == team_id,
                    slack_installations.c.bot_user_id != "",
                )
                .order_by(*_LATEST)
                .limit(1)
            ).first()
            if own is not None:
                return own
            org = select(slack_workspaces.c.enterprise_id).where(
                slack_workspaces.c.team_id == team_id, slack_workspaces.c.enterprise_id != ""
            )
            return conn.execute(
                select(slack_installations)
                .where(
                    slack_installations.c.is_enterprise_install.is_(True),
                    slack_installations.c.enterprise_id.in_(org.scalar_subquery()),
                    slack_installations.c.bot_user_id != "",
                )
                .order_by(*_LATEST)
                .limit(1)
            ).first()

        row = await self._run("read a Slack installation", op)
        return self._record(row) if row is not None else None

    async def link_team(self, team_id: str, enterprise_id: str) -> None:
        """Record that workspace ``team_id`` belongs to org ``enterprise_id`` (how an
        org-wide installation reaches the workspace's conversations)."""
        now = utcnow()
        await self._run(
            "record a Slack workspace",
            lambda conn: self._upsert_workspace(conn, team_id, enterprise_id, now, revive=False),
        )

    async def delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> list[str]:
        """Remove the bot tokens of a workspace or org; returns the workspaces left
        without a bot (marked uninstalled)."""
        return await self._delete(enterprise_id, team_id, None, bot_only=True)

    async def delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> list[str]:
        """Remove the installation(s) of a workspace or org (of one user when given);
        returns the workspaces left without a bot (marked uninstalled)."""
        return await self._delete(enterprise_id, team_id, user_id, bot_only=False)

    async def _delete(
        self, enterprise_id: str | None, team_id: str | None, user_id: str | None, *, bot_only: bool
    ) -> list[str]:
        enterprise = enterprise_id or ""
        team = team_id or ""
        where = and_(
            slack_installations.c.enterprise_id == enterprise,
            slack_installations.c.team_id == team,
        )
        if user_id is not None:
            where = and_(where, slack_installations.c.user_id == user_id)
        now = utcnow()

        def op(conn: Connection) -> list[str]:
            if bot_only:
                for row in conn.execute(select(slack_installations).where(where)).all():
                    left = {
                        k: v
                        for k, v in self._cipher.decrypt(row.secrets).items()
                        if k not in ("bot_token", "bot_refresh_token")
                    }
                    if left:
                        conn.execute(
                            update(slack_installations)
                            .where(slack_installations.c.id == row.id)
                            .values(bot_user_id="", bot_id="", secrets=self._cipher.encrypt(left))
                        )
                    else:
                        conn.execute(
                            delete(slack_installations).where(slack_installations.c.id == row.id)
                        )
            else:
                conn.execute(delete(slack_installations).where(where))
            still = conn.execute(
                select(func.count())
                .select_from(slack_installations)
                .where(
                    slack_installations.c.enterprise_id == enterprise,
                    slack_installations.c.team_id == team,
                    slack_installations.c.bot_user_id != "",
                )
            ).scalar()
            if still:
                return []
            if not team and not enterprise:
                return []
            served = (
                slack_workspaces.c.team_id == team
                if team
                else slack_workspaces.c.enterprise_id == enterprise
            )
            known = conn.execute(
                select(slack_workspaces.c.team_id, slack_workspaces.c.uninstalled_at).where(served)
            ).all()
            if team and not known:
                # Not recorded yet (nothing was ever saved for it here): mark it all the same.
                self._upsert_workspace(conn, team, enterprise, now, revive=False)
                known = [(team, None)]
            gone = [row[0] for row in known if row[1] is None]
            conn.execute(
                update(slack_workspaces)
                .where(slack_workspaces.c.team_id.in_(gone))
                .values(uninstalled_at=now, updated_at=now)
            )
            return gone

        return await self._run("remove a Slack installation", op)

    # -- OAuth states ------------------------------------------------------------------

    async def issue_state(self, state: str, expires_at: datetime) -> None:
        """Remember a state handed to an installer's browser (and drop lapsed ones)."""

        def op(conn: Connection) -> None:
            conn.execute(
                delete(slack_oauth_states).where(slack_oauth_states.c.expires_at < utcnow())
            )
            conn.execute(slack_oauth_states.insert().values(state=state, expires_at=expires_at))

        await self._run("store an OAuth state", op)

    async def consume_state(self, state: str) -> bool:
        """True once for a state issued and not yet expired; False ever after."""

        def op(conn: Connection) -> bool:
            # One DELETE decides: of two callbacks racing with one state, one wins.
            result = conn.execute(
                delete(slack_oauth_states).where(
                    slack_oauth_states.c.state == state,
                    slack_oauth_states.c.expires_at > utcnow(),
                )
            )
            return bool(result.rowcount)

        return await self._run("check an OAuth state", op)

    # -- purge -------------------------------------------------------------------------

    async def uninstalled_before(self, cutoff: datetime) -> list[str]:
        """Workspaces uninstalled at or before ``cutoff`` whose data is still kept."""

        def op(conn: Connection) -> list[str]:
            return list(
                conn.execute(
                    select(slack_workspaces.c.team_id)
                    .where(slack_workspaces.c.uninstalled_at <= cutoff)
                    .order_by(slack_workspaces.c.uninstalled_at)
                ).scalars()
            )

        return await self._run("list uninstalled Slack workspaces", op)

    async def purge_workspace(self, team_id: str, cutoff: datetime) -> PurgeResult | None:
        """Delete everything kept for workspace ``team_id`` if it is still uninstalled
        since ``cutoff`` or earlier (a reinstall in between keeps it); one transaction."""

        def op(conn: Connection) -> PurgeResult | None:
            due = conn.execute(
                select(slack_workspaces.c.team_id).where(
                    slack_workspaces.c.team_id == team_id,
                    slack_workspaces.c.uninstalled_at <= cutoff,
                )
            ).first()
            if due is None:
                return None
            # The workspace's website-widget visitors are its customers too.
            ours = and_(
                conversations.c.platform.in_((PLATFORM, WIDGET)),
                conversations.c.tenant == team_id,
            )
            purge_widget_tenant(conn, team_id)
            # Read before their conversations go: what the workspace's people
            # said in other tenants' tickets is found through their events.
            self._purge_elsewhere(conn, team_id, ours)
            # Messages, inbound events and tickets (with their events and
            # relays) go with their conversation (ON DELETE CASCADE).
            n_conversations = conn.execute(delete(conversations).where(ours)).rowcount
            conn.execute(
                delete(outbox).where(
                    outbox.c.platform.in_((PLATFORM, WIDGET)), outbox.c.tenant == team_id
                )
            )
            n_entries = self._purge_knowledge(conn, team_id)
            n_documents = forget_documents(conn, team_id, sqlite=self.db.dialect == "sqlite")
            conn.execute(
                delete(users).where(users.c.platform_user.like(_people(team_id), escape="\\"))
            )
            # What the support team kept for this workspace: roles, quotas, usage
            # and ratings. The audit trail goes too: its details name the
            # workspace's people.
            for table in (team_roles, quotas, model_usage, quota_notices, ratings):
                conn.execute(delete(table).where(table.c.tenant == team_id))
            # Its own choice of support space goes with it: a reinstall starts
            # from the deployment's settings.
            conn.execute(
                delete(tenant_desks).where(
                    tenant_desks.c.platform == PLATFORM, tenant_desks.c.tenant == team_id
                )
            )
            conn.execute(
                delete(tenant_languages).where(
                    tenant_languages.c.platform == PLATFORM, tenant_languages.c.tenant == team_id
                )
            )
            conn.execute(delete(audit_log).where(audit_log.c.tenant == team_id))
            conn.execute(
                delete(slack_installations).where(slack_installations.c.team_id == team_id)
            )
            conn.execute(delete(slack_workspaces).where(slack_workspaces.c.team_id == team_id))
            return PurgeResult(team_id, int(n_conversations or 0), n_entries, n_documents)

        return await self._run("purge an uninstalled Slack workspace", op)

    def _purge_knowledge(self, conn: Connection, team_id: str) -> int:
        """The workspace's entries, the wordings its people gave (their own and
        those shared with every tenant, and learned questions approved into
        shared entries), its answer log, escalations, drafts and settings.
        Returns the entries removed."""
        sqlite = self.db.dialect == "sqlite"
        people = _people(team_id)
        approved = conn.execute(
            select(faq_proposals).where(
                faq_proposals.c.tenant == team_id,
                faq_proposals.c.status == "approved",
                faq_proposals.c.target_ref != "",
                faq_proposals.c.target_tenant != team_id,
            )
        ).all()
        forget_wordings(
            conn,
            [LearnedWording(p.target_tenant, p.entry_ref, p.question, False) for p in approved],
            sqlite=sqlite,
        )
        conn.execute(delete(faq_proposals).where(faq_proposals.c.tenant == team_id))
        conn.execute(
            delete(faq_phrasings).where(
                or_(
                    faq_phrasings.c.tenant == team_id,
                    faq_phrasings.c.user_id.like(people, escape="\\"),
                )
            )
        )
        entry_ids = list(
            conn.execute(select(faq_entries.c.id).where(faq_entries.c.tenant == team_id)).scalars()
        )
        if sqlite:
            for entry_id in entry_ids:
                conn.execute(text("DELETE FROM faq_fts WHERE rowid = :id"), {"id": entry_id})
        conn.execute(delete(faq_entries).where(faq_entries.c.tenant == team_id))
        forget_unused_text_vectors(conn)
        for table in (escalations, faq_answers):
            conn.execute(
                delete(table).where(
                    or_(table.c.tenant == team_id, table.c.user_id.like(people, escape="\\"))
                )
            )
        conn.execute(
            delete(knowledge_settings).where(
                or_(
                    knowledge_settings.c.scope == f"tenant:{team_id}",
                    knowledge_settings.c.scope.like(
                        f"conversation:{PLATFORM}:{_like(team_id)}:%", escape="\\"
                    ),
                )
            )
        )
        return len(entry_ids)

    @staticmethod
    def _purge_elsewhere(conn: Connection, team_id: str, ours: Any) -> None:
        """What the workspace's people wrote into other tenants' records: their
        relays and notes in tickets a support space of theirs worked (a central
        desk), quotes of their words in others' command outputs, and audit
        entries about them."""
        people = _people(team_id)
        said = conn.execute(
            select(inbound_events.c.id)
            .join(conversations, conversations.c.id == inbound_events.c.conversation_id)
            .where(ours)
        ).scalars()
        forget_relays(conn, [f"relay:{inbound_id}" for inbound_id in said])
        # Command outputs elsewhere quote them (an owner's list of learned answers).
        scrub_quotes_of(conn, messages.c.user_id.like(people, escape="\\"))
        conn.execute(delete(ticket_events).where(ticket_events.c.author.like(people, escape="\\")))
        conn.execute(
            delete(audit_log).where(
                or_(
                    audit_log.c.actor.like(people, escape="\\"),
                    audit_log.c.target.like(people, escape="\\"),
                )
            )
        )

    # -- helpers -----------------------------------------------------------------------

    def _upsert_workspace(
        self, conn: Connection, team: str, enterprise: str, now: datetime, *, revive: bool
    ) -> None:
        statement = self._insert(slack_workspaces).values(
            team_id=team, enterprise_id=enterprise, uninstalled_at=None, updated_at=now
        )
        changes: dict[str, Any] = {"enterprise_id": enterprise, "updated_at": now}
        if revive:
            changes["uninstalled_at"] = None
        conn.execute(statement.on_conflict_do_update(index_elements=["team_id"], set_=changes))

    @staticmethod
    def _where(enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool) -> Any:
        # An org-wide installation is one for every workspace of the org.
        team = "" if is_enterprise_install else team_id or ""
        return and_(
            slack_installations.c.enterprise_id == (enterprise_id or ""),
            slack_installations.c.team_id == team,
        )

    def _record(self, row: Any) -> SlackInstallation:
        return SlackInstallation(
            enterprise_id=row.enterprise_id,
            team_id=row.team_id,
            user_id=row.user_id,
            is_enterprise_install=bool(row.is_enterprise_install),
            bot_user_id=row.bot_user_id,
            bot_id=row.bot_id,
            installed_at=as_utc(row.installed_at),
            details=dict(row.details or {}),
            secrets=self._cipher.decrypt(row.secrets),
        )


_KEY: Sequence[str] = ("enterprise_id", "team_id", "user_id")
_LATEST = (slack_installations.c.installed_at.desc(), slack_installations.c.id.desc())

__all__ = [
    "SECRET_FIELDS",
    "PurgeResult",
    "SecretKeyError",
    "SlackInstallation",
    "SlackRepository",
    "TokenCipher",
]
