"""Settings: read once at start from the environment, then passed around frozen.

Only this module reads ``os.environ``; every component takes the values it
needs as keyword arguments.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from bot.errors import ConfigError
from bot.handoff.config import BusinessHours, HandoffConfigError, HandoffSettings, parse_spaces
from bot.knowledge.policy import scale_of
from bot.language import SUPPORTED_LANGUAGES
from llm.base import DTYPES, FAST_DECODE_MODES, QUANTIZATIONS
from llm.embeddings import EMBEDDING_MODELS, MULTILINGUAL_MODEL_NAME
from storage.slack_repo import TokenCipher

DEFAULT_SYSTEM_PROMPT = (
    "You are Deskmate, a friendly and concise customer-support assistant. "
    "Answer the customer's question clearly in a few sentences. If you do not "
    "know something, say so and offer to bring in a human agent; never invent "
    "policies, prices or promises."
)


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("data")
    database_url: str = ""  # empty: SQLite file inside data_dir
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    # At DEBUG, also the platform SDKs' debug lines (they carry messages and names).
    log_sdk_debug: bool = False

    # Model
    model: str = "embedded"  # "embedded", a model directory, or a .gguf file
    quantization: str = "none"
    allow_quantization_fallback: bool = False
    dtype: str = "auto"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    llm_url: str = ""  # OpenAI-compatible server; overrides ``model``
    llm_api_key: str = ""
    llm_model_name: str = ""  # model name to send to the OpenAI-compatible server
    max_new_tokens: int = 200
    temperature: float = 0.3
    top_p: float = 0.9
    repetition_penalty: float = 1.15
    llm_timeout: float = 120.0
    # None (``auto``): sized at load from the model's KV cache and the free memory
    # (llm.transformers.sizing); a number overrides it.
    max_batch_size: int | None = None
    # Torch CPU threads; None (``auto``): every core of the affinity mask up to 2,
    # one fewer beyond that (llm.transformers.sizing).
    threads: int | None = None
    # "auto": a packed int4 decode step for one or a few conversations, built in
    # the background after load (llm.transformers.fast_step); "off": eager only.
    fast_decode: str = "auto"
    max_queue: int = 64
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_input_chars: int = 4000
    history_messages: int = 40
    # Messages a minute one person may send before being asked to wait; 0: no limit.
    user_rate: int = 20
    # Knowledge-base answering thresholds (bot.knowledge.policy.Policy; cosine scale).
    # None: the values measured for the embedding model (bot.knowledge.policy.SCALES).
    faq_verbatim_score: float | None = None
    faq_verbatim_margin: float = 0.02
    faq_grounded_score: float | None = None
    # The share of verbatim answers that must be right; `deskmate faq eval`
    # recommends the verbatim threshold that reaches it on the operator's questions.
    faq_precision: float = 0.97
    # Close calls between knowledge-base entries re-ranked by the local model
    # (bot.knowledge.rerank); only a backend that can score does it.
    faq_rerank: bool = True
    # The knowledge base's embedding model: a sentence-transformers model folder, or
    # the name of a packaged model (EMBEDDING_MODELS); None: the shipped all-MiniLM-L6-v2.
    embedding_model: Path | None = None
    # In support mode, a question about the company's own facts (hours, prices,
    # refunds, accounts, ...) that no knowledge source answers: "refuse" says so
    # and offers a person, "answer" lets the model answer it.
    company_facts: str = "refuse"
    # The customers' language when a message is too short to tell and neither
    # the conversation nor the tenant (`/language`) has one (bot.language).
    language: str = "en"
    # A verbatim answer with no version in the customer's language: translate,
    # quote, or auto (chosen per model: bot.foreign_answers).
    foreign_answers: str = "auto"
    # Documents (bot.knowledge.documents): where local files are published (their
    # citations link there), the largest file or page read, a page's time limit,
    # and how a document answers: "extractive" (its sentences, quoted) or "model".
    docs_base_url: str = ""
    docs_max_bytes: int = 50 * 1024 * 1024
    docs_timeout: float = 20.0
    docs_answers: str = "extractive"

    # Platforms
    telegram_bot_token: str = ""
    telegram_api_url: str = ""
    telegram_webhook_url: str = ""
    telegram_webhook_secret: str = ""
    telegram_edit_interval: float = 1.5
    slack_bot_token: str = ""
    slack_app_token: str = ""
    slack_signing_secret: str = ""
    slack_api_url: str = ""
    slack_edit_interval: float = 1.2
    # OAuth: installs into many workspaces through /slack/install (instead of one bot token).
    slack_client_id: str = ""
    slack_client_secret: str = ""
    slack_redirect_uri: str = ""
    # Days an uninstalled workspace's conversations and knowledge base are kept; 0: none.
    slack_retention_days: float = 30.0
    # Fernet key(s) for tokens at rest: the first encrypts, every one decrypts.
    secret_key: str = ""

    admins: frozenset[str] = field(default_factory=frozenset)

    # The web chat at "/": auto = only when no platform is configured.
    web_chat: str = "auto"
    web_token: str = ""
    # The website widget: messages a minute per visitor and per site.
    widget_visitor_rate: int = 10
    widget_site_rate: int = 600
    # The operator console at /console: the owner's fallback sign-in (every
    # tenant); people sign in with their own `deskmate console link|token --user`.
    console_token: str = ""
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed:
    # comma-separated addresses or CIDR ranges ("" : none, the peer is the client).
    trusted_proxies: str = ""
    # The bearer token /metrics needs; "" serves it to loopback clients only.
    metrics_token: str = ""

    # Human handoff (bot.handoff): where tickets go, how the team signs, and its clocks.
    handoff_chat: str = ""
    handoff_signature: str = "Support team"
    handoff_idle: float = 24 * 60.0  # minutes
    handoff_remind: float = 10.0  # minutes
    business_hours: str = ""

    # The support team (bot.team): when customers are asked to rate, and the
    # default daily token limits (0: none unless an admin sets one with /quota).
    ask_rating: str = "handoff"  # off | handoff | all
    daily_user_tokens: int = 0
    daily_tenant_tokens: int = 0

    @property
    def handoff(self) -> HandoffSettings:
        """The handoff settings, parsed (``validate`` has checked they parse)."""
        return HandoffSettings(
            spaces=parse_spaces(self.handoff_chat),
            signature=self.handoff_signature.strip() or "Support team",
            idle=timedelta(minutes=self.handoff_idle),
            remind=timedelta(minutes=self.handoff_remind),
            hours=BusinessHours.parse(self.business_hours) if self.business_hours else None,
            foreign_slack=self.slack_oauth_enabled,
        )

    @property
    def proxy_networks(self) -> tuple[IPNetwork, ...]:
        """``trusted_proxies``, parsed (``validate`` has checked they parse)."""
        return parse_networks(self.trusted_proxies)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'deskmate.db'}"

    @property
    def web_chat_enabled(self) -> bool:
        if self.web_chat == "auto":
            return not (self.telegram_enabled or self.slack_enabled)
        return self.web_chat == "on"

    @property
    def telegram_enabled(self) -> bool:
        return bool(self.telegram_bot_token)

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token) or self.slack_oauth_enabled

    @property
    def slack_oauth_enabled(self) -> bool:
        return bool(self.slack_client_id and self.slack_client_secret)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from environment variables (names in ``ENV_VARS``)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            values[name] = _parse(var, types[name], raw.strip())
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first setting, in this order, that is out
        of range or contradicts another."""
        self._validate_model()
        if not 0 < self.port < 65536:
            raise ConfigError(f"PORT must be between 1 and 65535, not {self.port}")
        self._validate_knowledge()
        self._validate_generation()
        if self.telegram_webhook_url and not self.telegram_webhook_secret:
            raise ConfigError(
                "TELEGRAM_WEBHOOK_URL is set but TELEGRAM_WEBHOOK_SECRET is not: "
                "set a random secret so forged webhook calls are refused"
            )
        self._validate_limits()
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"LOG_FORMAT must be text or json, not {self.log_format!r}")
        self._validate_web()
        self._validate_handoff()
        self._validate_slack_oauth()
        if self.slack_enabled and not (self.slack_app_token or self.slack_signing_secret):
            raise ConfigError(
                f"{'SLACK_CLIENT_ID' if self.slack_oauth_enabled else 'SLACK_BOT_TOKEN'} is set "
                "but neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET "
                "(HTTP Events API) is"
            )

    def _validate_model(self) -> None:
        """The model's number formats."""
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"DESKMATE_QUANTIZATION must be one of {', '.join(QUANTIZATIONS)}, "
                f"not {self.quantization!r}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"DESKMATE_DTYPE must be one of {', '.join(DTYPES)}, not {self.dtype!r}"
            )

    def _validate_knowledge(self) -> None:
        """The knowledge base's thresholds and embedding model."""
        if not 0.5 <= self.faq_precision <= 1.0:
            raise ConfigError(
                f"DESKMATE_FAQ_PRECISION must be between 0.5 and 1, not {self.faq_precision}"
            )
        # The scope score DESKMATE_FAQ_GROUNDED_SCORE applies to can be negative.
        # An unset threshold is the embedding model's own.
        scale = scale_of(MULTILINGUAL_MODEL_NAME if self.multilingual else "")
        grounded = self.faq_grounded_score
        grounded = scale.grounded_score if grounded is None else grounded
        verbatim = self.faq_verbatim_score
        verbatim = scale.verbatim_score if verbatim is None else verbatim
        if not -1.0 <= grounded <= verbatim <= 1.0:
            raise ConfigError(
                "need -1 <= DESKMATE_FAQ_GROUNDED_SCORE <= DESKMATE_FAQ_VERBATIM_SCORE <= 1, "
                f"not {self.faq_grounded_score} and {self.faq_verbatim_score}"
            )
        if (
            self.embedding_model is not None
            and str(self.embedding_model) not in EMBEDDING_MODELS
            and not (self.embedding_model / "modules.json").is_file()
        ):
            raise ConfigError(
                f"DESKMATE_EMBEDDING_MODEL: {self.embedding_model} is not a sentence-transformers "
                f"model folder (it has no modules.json) nor one of {', '.join(EMBEDDING_MODELS)}"
            )

    @property
    def multilingual(self) -> bool:
        """Whether DESKMATE_EMBEDDING_MODEL names the multilingual model."""
        return str(self.embedding_model) in (MULTILINGUAL_MODEL_NAME, "multilingual")

    @property
    def configured_secrets(self) -> tuple[str, ...]:
        """Every token, key and password set here: no answer may contain one."""
        keys = tuple(k.strip() for k in self.secret_key.split(","))
        try:
            password = urlsplit(self.database_url).password or ""
        except ValueError:
            password = ""
        return tuple(
            s
            for s in (
                self.llm_api_key,
                self.telegram_bot_token,
                self.telegram_webhook_secret,
                self.slack_bot_token,
                self.slack_app_token,
                self.slack_signing_secret,
                self.slack_client_secret,
                self.web_token,
                self.console_token,
                self.metrics_token,
                password,
                *keys,
            )
            if s
        )

    def _validate_generation(self) -> None:
        """Batching, threads and answer length."""
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError("DESKMATE_MAX_BATCH must be auto or at least 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("DESKMATE_THREADS must be auto or at least 1")
        if self.fast_decode not in FAST_DECODE_MODES:
            raise ConfigError(
                f"DESKMATE_FAST_DECODE must be one of {', '.join(FAST_DECODE_MODES)}, "
                f"not {self.fast_decode!r}"
            )
        if self.max_new_tokens < 1:
            raise ConfigError("DESKMATE_MAX_NEW_TOKENS must be at least 1")
        if self.language not in SUPPORTED_LANGUAGES:
            raise ConfigError(
                f"DESKMATE_LANGUAGE must be one of {', '.join(SUPPORTED_LANGUAGES)}, "
                f"not {self.language!r}"
            )
        if self.foreign_answers not in ("auto", "translate", "quote"):
            raise ConfigError(
                "DESKMATE_FOREIGN_ANSWERS must be auto, translate or quote, "
                f"not {self.foreign_answers!r}"
            )
        if self.docs_answers not in ("extractive", "model"):
            raise ConfigError(
                f"DESKMATE_DOCS_ANSWERS must be extractive or model, not {self.docs_answers!r}"
            )
        if self.company_facts not in ("refuse", "answer"):
            raise ConfigError(
                f"DESKMATE_COMPANY_FACTS must be refuse or answer, not {self.company_facts!r}"
            )

    def _validate_limits(self) -> None:
        """Per-person rate, rating invitations and token quotas."""
        if self.user_rate < 0:
            raise ConfigError("DESKMATE_USER_RATE is messages a minute: 0 (no limit) or more")
        if self.widget_visitor_rate < 1 or self.widget_site_rate < 1:
            raise ConfigError(
                "DESKMATE_WIDGET_VISITOR_RATE and DESKMATE_WIDGET_SITE_RATE are messages a "
                "minute: 1 or more"
            )
        if self.ask_rating not in ("off", "handoff", "all"):
            raise ConfigError(
                f"DESKMATE_ASK_RATING must be off, handoff or all, not {self.ask_rating!r}"
            )
        if self.daily_user_tokens < 0 or self.daily_tenant_tokens < 0:
            raise ConfigError(
                "DESKMATE_DAILY_USER_TOKENS and DESKMATE_DAILY_TENANT_TOKENS are tokens a day: "
                "0 (no limit) or more"
            )

    def _validate_web(self) -> None:
        """That the web chat and console are not open to anyone. (With the web chat
        off and no platform, the website widget still answers: ``deskmate run``
        says so when it starts.)"""
        if self.web_chat not in ("auto", "on", "off"):
            raise ConfigError(f"DESKMATE_WEB_CHAT must be auto, on or off, not {self.web_chat!r}")
        if self.console_token and len(self.console_token) < 16:
            raise ConfigError(
                "DESKMATE_CONSOLE_TOKEN is too short to guess safely: use at least 16 random "
                "characters, or leave it unset and sign in with `deskmate console link --user ID`"
            )
        if self.web_token and len(self.web_token) < 16:
            raise ConfigError(
                "DESKMATE_WEB_TOKEN is too short to guess safely: use at least 16 random "
                "characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        if self.metrics_token and len(self.metrics_token) < 16:
            raise ConfigError(
                "DESKMATE_METRICS_TOKEN is too short to guess safely: use at least 16 random "
                "characters, or leave it unset to serve /metrics to this machine only"
            )
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"DESKMATE_TRUSTED_PROXIES: {exc}") from None
        if self.web_chat_enabled and not self.web_token and not _loopback(self.host):
            raise ConfigError(
                f"the web chat would be open to anyone on HOST={self.host}: set "
                "DESKMATE_WEB_TOKEN to a long random string (its link is /?token=...), "
                "or DESKMATE_WEB_CHAT=off"
            )

    def _validate_handoff(self) -> None:
        """The support spaces (each on a platform that is configured) and the ticket clocks."""
        try:
            handoff = self.handoff
        except HandoffConfigError as exc:
            raise ConfigError(str(exc)) from None
        if self.handoff_idle <= 0 or self.handoff_remind <= 0:
            raise ConfigError(
                "DESKMATE_HANDOFF_IDLE and DESKMATE_HANDOFF_REMIND are minutes above 0"
            )
        for space in handoff.spaces:
            if space.platform == "telegram" and not self.telegram_enabled:
                raise ConfigError(
                    f"DESKMATE_HANDOFF_CHAT names {space.key}, but TELEGRAM_BOT_TOKEN is not set"
                )
            if space.platform == "slack" and not self.slack_enabled:
                raise ConfigError(
                    f"DESKMATE_HANDOFF_CHAT names {space.key}, but SLACK_BOT_TOKEN is not set"
                )

    def _validate_slack_oauth(self) -> None:
        if bool(self.slack_client_id) != bool(self.slack_client_secret):
            raise ConfigError(
                "Slack OAuth needs both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET "
                "(Basic Information -> App Credentials)"
            )
        if not self.slack_oauth_enabled:
            return
        if self.slack_bot_token:
            # One token for one workspace, or installations for many: mixing them
            # would answer some workspaces with the wrong identity.
            raise ConfigError(
                "set either SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
                "SLACK_CLIENT_SECRET (installs through /slack/install), not both; to move to "
                "OAuth, unset SLACK_BOT_TOKEN and install the app again from /slack/install"
            )
        try:
            TokenCipher(self.secret_key)
        except ValueError as exc:
            raise ConfigError(
                f"DESKMATE_SECRET_KEY {exc}; Slack OAuth stores tokens encrypted with it. Make "
                "one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from None
        if self.slack_retention_days < 0:
            raise ConfigError("DESKMATE_SLACK_RETENTION_DAYS is days: 0 (purge at once) or more")
        if self.slack_redirect_uri and not self.slack_redirect_uri.startswith(
            ("https://", "http://")
        ):
            raise ConfigError(
                "SLACK_REDIRECT_URI is the full URL of /slack/oauth_redirect, "
                "e.g. https://your.host/slack/oauth_redirect"
            )


# Field name -> environment variable. The README documents each of these.
ENV_VARS: dict[str, str] = {
    "data_dir": "DESKMATE_DATA_DIR",
    "database_url": "DATABASE_URL",
    "host": "HOST",
    "port": "PORT",
    "log_level": "LOG_LEVEL",
    "log_format": "LOG_FORMAT",
    "log_sdk_debug": "LOG_SDK_DEBUG",
    "model": "DESKMATE_MODEL",
    "quantization": "DESKMATE_QUANTIZATION",
    "allow_quantization_fallback": "DESKMATE_ALLOW_QUANTIZATION_FALLBACK",
    "dtype": "DESKMATE_DTYPE",
    "device": "DESKMATE_DEVICE",
    "llm_url": "DESKMATE_LLM_URL",
    "llm_api_key": "DESKMATE_LLM_API_KEY",
    "llm_model_name": "DESKMATE_LLM_MODEL",
    "max_new_tokens": "DESKMATE_MAX_NEW_TOKENS",
    "temperature": "DESKMATE_TEMPERATURE",
    "top_p": "DESKMATE_TOP_P",
    "repetition_penalty": "DESKMATE_REPETITION_PENALTY",
    "llm_timeout": "DESKMATE_LLM_TIMEOUT",
    "max_batch_size": "DESKMATE_MAX_BATCH",
    "threads": "DESKMATE_THREADS",
    "fast_decode": "DESKMATE_FAST_DECODE",
    "max_queue": "DESKMATE_MAX_QUEUE",
    "system_prompt": "DESKMATE_SYSTEM_PROMPT",
    "max_input_chars": "DESKMATE_MAX_INPUT_CHARS",
    "history_messages": "DESKMATE_HISTORY_MESSAGES",
    "user_rate": "DESKMATE_USER_RATE",
    "faq_verbatim_score": "DESKMATE_FAQ_VERBATIM_SCORE",
    "faq_verbatim_margin": "DESKMATE_FAQ_VERBATIM_MARGIN",
    "faq_precision": "DESKMATE_FAQ_PRECISION",
    "faq_grounded_score": "DESKMATE_FAQ_GROUNDED_SCORE",
    "faq_rerank": "DESKMATE_FAQ_RERANK",
    "embedding_model": "DESKMATE_EMBEDDING_MODEL",
    "company_facts": "DESKMATE_COMPANY_FACTS",
    "language": "DESKMATE_LANGUAGE",
    "foreign_answers": "DESKMATE_FOREIGN_ANSWERS",
    "docs_base_url": "DESKMATE_DOCS_BASE_URL",
    "docs_max_bytes": "DESKMATE_DOCS_MAX_BYTES",
    "docs_timeout": "DESKMATE_DOCS_TIMEOUT",
    "docs_answers": "DESKMATE_DOCS_ANSWERS",
    "telegram_bot_token": "TELEGRAM_BOT_TOKEN",
    "telegram_api_url": "TELEGRAM_API_URL",
    "telegram_webhook_url": "TELEGRAM_WEBHOOK_URL",
    "telegram_webhook_secret": "TELEGRAM_WEBHOOK_SECRET",
    "telegram_edit_interval": "TELEGRAM_EDIT_INTERVAL",
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_app_token": "SLACK_APP_TOKEN",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_api_url": "SLACK_API_URL",
    "slack_edit_interval": "SLACK_EDIT_INTERVAL",
    "slack_client_id": "SLACK_CLIENT_ID",
    "slack_client_secret": "SLACK_CLIENT_SECRET",
    "slack_redirect_uri": "SLACK_REDIRECT_URI",
    "slack_retention_days": "DESKMATE_SLACK_RETENTION_DAYS",
    "secret_key": "DESKMATE_SECRET_KEY",
    "admins": "DESKMATE_ADMINS",
    "web_chat": "DESKMATE_WEB_CHAT",
    "web_token": "DESKMATE_WEB_TOKEN",
    "widget_visitor_rate": "DESKMATE_WIDGET_VISITOR_RATE",
    "widget_site_rate": "DESKMATE_WIDGET_SITE_RATE",
    "console_token": "DESKMATE_CONSOLE_TOKEN",
    "trusted_proxies": "DESKMATE_TRUSTED_PROXIES",
    "metrics_token": "DESKMATE_METRICS_TOKEN",
    "handoff_chat": "DESKMATE_HANDOFF_CHAT",
    "handoff_signature": "DESKMATE_HANDOFF_SIGNATURE",
    "handoff_idle": "DESKMATE_HANDOFF_IDLE",
    "handoff_remind": "DESKMATE_HANDOFF_REMIND",
    "business_hours": "DESKMATE_BUSINESS_HOURS",
    "ask_rating": "DESKMATE_ASK_RATING",
    "daily_user_tokens": "DESKMATE_DAILY_USER_TOKENS",
    "daily_tenant_tokens": "DESKMATE_DAILY_TENANT_TOKENS",
}


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR ranges; ``ValueError`` names the bad one."""
    found: list[IPNetwork] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            found.append(ipaddress.ip_network(part))
        except ValueError:
            try:
                loose = ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(
                    f"{part!r} is not an IP address or CIDR range "
                    "(write e.g. 10.0.0.5, 10.0.0.0/8 or fd00::/8)"
                ) from None
            raise ValueError(f"{part!r} has bits set beyond its prefix: write {loose}") from None
    return tuple(found)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_AUTO_VARS = {"DESKMATE_MAX_BATCH", "DESKMATE_THREADS"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(var: str, kind: object, raw: str) -> object:
    kind = str(kind)
    if kind == "int | None":
        # Optional numbers: "auto" leaves the choice to the component.
        if raw.lower() == "auto":
            return None
        kind = "int"
    try:
        if kind == "int":
            return int(raw)
        if kind in ("float", "float | None"):
            return float(raw)
    except ValueError:
        hint = " or auto" if var in _AUTO_VARS else ""
        raise ConfigError(f"{var} must be a number{hint}, not {raw!r}") from None
    if kind == "bool":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(f"{var} must be true or false, not {raw!r}")
    if kind in ("Path", "Path | None"):
        return Path(raw).expanduser()
    if kind == "frozenset[str]":
        return frozenset(part.strip() for part in raw.split(",") if part.strip())
    return raw
