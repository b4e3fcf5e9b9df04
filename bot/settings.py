"""Settings: read once at start from the environment, then passed around frozen.

Only this module reads ``os.environ``; every component takes the values it
needs as keyword arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from bot.errors import ConfigError
from llm.base import DTYPES, QUANTIZATIONS

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
    max_queue: int = 64
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_input_chars: int = 4000
    history_messages: int = 40
    # Knowledge-base answering thresholds (bot.knowledge.policy.Policy; cosine scale).
    faq_verbatim_score: float = 0.65
    faq_verbatim_margin: float = 0.02
    faq_grounded_score: float = 0.45
    # Close calls between knowledge-base entries re-ranked by the local model
    # (bot.knowledge.rerank); only a backend that can score does it.
    faq_rerank: bool = True
    # A sentence-transformers model folder for knowledge-base retrieval; None: the
    # shipped all-MiniLM-L6-v2.
    embedding_model: Path | None = None

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

    admins: frozenset[str] = field(default_factory=frozenset)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'deskmate.db'}"

    @property
    def telegram_enabled(self) -> bool:
        return bool(self.telegram_bot_token)

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token)

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
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"DESKMATE_QUANTIZATION must be one of {', '.join(QUANTIZATIONS)}, "
                f"not {self.quantization!r}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"DESKMATE_DTYPE must be one of {', '.join(DTYPES)}, not {self.dtype!r}"
            )
        if not 0 < self.port < 65536:
            raise ConfigError(f"PORT must be between 1 and 65535, not {self.port}")
        if not 0.0 <= self.faq_grounded_score <= self.faq_verbatim_score <= 1.0:
            raise ConfigError(
                "need 0 <= DESKMATE_FAQ_GROUNDED_SCORE <= DESKMATE_FAQ_VERBATIM_SCORE <= 1, "
                f"not {self.faq_grounded_score} and {self.faq_verbatim_score}"
            )
        if (
            self.embedding_model is not None
            and not (self.embedding_model / "modules.json").is_file()
        ):
            raise ConfigError(
                f"DESKMATE_EMBEDDING_MODEL: {self.embedding_model} is not a sentence-transformers "
                "model folder (it has no modules.json)"
            )
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError("DESKMATE_MAX_BATCH must be auto or at least 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("DESKMATE_THREADS must be auto or at least 1")
        if self.max_new_tokens < 1:
            raise ConfigError("DESKMATE_MAX_NEW_TOKENS must be at least 1")
        if self.telegram_webhook_url and not self.telegram_webhook_secret:
            raise ConfigError(
                "TELEGRAM_WEBHOOK_URL is set but TELEGRAM_WEBHOOK_SECRET is not: "
                "set a random secret so forged webhook calls are refused"
            )
        if self.slack_enabled and not (self.slack_app_token or self.slack_signing_secret):
            raise ConfigError(
                "SLACK_BOT_TOKEN is set but neither SLACK_APP_TOKEN (Socket Mode) nor "
                "SLACK_SIGNING_SECRET (HTTP Events API) is"
            )


# Field name -> environment variable. The README documents each of these.
ENV_VARS: dict[str, str] = {
    "data_dir": "DESKMATE_DATA_DIR",
    "database_url": "DATABASE_URL",
    "host": "HOST",
    "port": "PORT",
    "log_level": "LOG_LEVEL",
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
    "max_queue": "DESKMATE_MAX_QUEUE",
    "system_prompt": "DESKMATE_SYSTEM_PROMPT",
    "max_input_chars": "DESKMATE_MAX_INPUT_CHARS",
    "history_messages": "DESKMATE_HISTORY_MESSAGES",
    "faq_verbatim_score": "DESKMATE_FAQ_VERBATIM_SCORE",
    "faq_verbatim_margin": "DESKMATE_FAQ_VERBATIM_MARGIN",
    "faq_grounded_score": "DESKMATE_FAQ_GROUNDED_SCORE",
    "faq_rerank": "DESKMATE_FAQ_RERANK",
    "embedding_model": "DESKMATE_EMBEDDING_MODEL",
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
    "admins": "DESKMATE_ADMINS",
}

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
        if kind == "float":
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
