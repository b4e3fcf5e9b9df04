from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.prompting import build_messages
from bot.settings import ENV_VARS, Settings
from bot.text import clean
from storage.repository import HistoryItem


def test_defaults_are_the_embedded_local_setup() -> None:
    s = Settings.from_env({})
    assert s.model == "embedded"
    assert s.effective_database_url == f"sqlite:///{Path('data') / 'deskmate.db'}"
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert not s.telegram_enabled and not s.slack_enabled


def test_env_parsing() -> None:
    s = Settings.from_env(
        {
            "PORT": "9000",
            "DESKMATE_ADMINS": "telegram:1, slack:T1/U2 ,",
            "DESKMATE_TEMPERATURE": "0",
            "DESKMATE_ALLOW_QUANTIZATION_FALLBACK": "yes",
            "DESKMATE_DATA_DIR": "/tmp/x",
        }
    )
    assert s.port == 9000
    assert s.admins == frozenset({"telegram:1", "slack:T1/U2"})
    assert s.temperature == 0.0
    assert s.allow_quantization_fallback is True
    assert s.data_dir == Path("/tmp/x")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be a number"),
        ({"PORT": "70000"}, "PORT must be between"),
        ({"DESKMATE_QUANTIZATION": "2bit"}, "DESKMATE_QUANTIZATION must be one of"),
        ({"DESKMATE_DTYPE": "float8"}, "DESKMATE_DTYPE must be one of auto, float32"),
        ({"DESKMATE_ALLOW_QUANTIZATION_FALLBACK": "maybe"}, "must be true or false"),
        ({"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_WEBHOOK_URL": "https://x"}, "WEBHOOK_SECRET"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_APP_TOKEN"),
        ({"DESKMATE_MAX_BATCH": "lots"}, "DESKMATE_MAX_BATCH must be a number or auto"),
        ({"DESKMATE_MAX_BATCH": "0"}, "DESKMATE_MAX_BATCH must be auto or at least 1"),
        ({"DESKMATE_THREADS": "-2"}, "DESKMATE_THREADS must be auto or at least 1"),
        (
            {"DESKMATE_FAST_DECODE": "fastest"},
            "DESKMATE_FAST_DECODE must be one of auto, off, not 'fastest'",
        ),
        (
            {"DESKMATE_EMBEDDING_MODEL": "/nonexistent/model"},
            "DESKMATE_EMBEDDING_MODEL: /nonexistent/model is not a sentence-transformers",
        ),
    ],
)
def test_bad_settings_explain_the_fix(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_threads_and_batch_size_default_to_auto() -> None:
    defaults = Settings.from_env({})
    assert (defaults.threads, defaults.max_batch_size) == (None, None)
    auto = Settings.from_env({"DESKMATE_THREADS": "AUTO", "DESKMATE_MAX_BATCH": "auto"})
    assert (auto.threads, auto.max_batch_size) == (None, None)
    fixed = Settings.from_env({"DESKMATE_THREADS": "3", "DESKMATE_MAX_BATCH": "12"})
    assert (fixed.threads, fixed.max_batch_size) == (3, 12)


def test_embedding_model_is_a_sentence_transformers_folder(tmp_path: Path) -> None:
    assert Settings.from_env({}).embedding_model is None
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"it has no modules\.json"):
        Settings.from_env({"DESKMATE_EMBEDDING_MODEL": str(tmp_path)})
    (tmp_path / "modules.json").write_text("[]")
    assert Settings.from_env({"DESKMATE_EMBEDDING_MODEL": str(tmp_path)}).embedding_model == (
        tmp_path
    )


def test_every_setting_has_an_env_var_documented() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [var for var in ENV_VARS.values() if f"`{var}`" not in readme]
    assert missing == []


def test_clean_text() -> None:
    assert clean("  hi\x00 there\r\n ", max_chars=100).text == "hi there"
    assert clean("\u202egnp.exe", max_chars=100).text == "gnp.exe"
    assert clean("\ud83d alone", max_chars=100).text == "? alone"
    long = clean("x" * 5000, max_chars=4000)
    assert (len(long.text), long.truncated, long.original_length) == (4000, True, 5000)


def test_prompt_keeps_system_and_newest_question() -> None:
    history = [HistoryItem("user" if i % 2 == 0 else "assistant", f"m{i} " * 20) for i in range(9)]
    msgs = build_messages(
        system_prompt="sys", history=history, budget=100, count_tokens=lambda t: len(t) // 4
    )
    assert msgs[0].content == "sys"
    assert msgs[-1].content == history[-1].text
    assert msgs[1].role == "user", "a trimmed prompt never starts with an orphan answer"
    # A single question larger than the budget is cut, not dropped.
    huge = [HistoryItem("user", "word " * 1000)]
    msgs = build_messages(
        system_prompt="sys", history=huge, budget=50, count_tokens=lambda t: len(t) // 4
    )
    assert len(msgs) == 2 and 0 < len(msgs[1].content) < 200


def test_the_web_chat_is_off_next_to_a_platform_and_guarded_off_loopback() -> None:
    assert Settings.from_env({}).web_chat_enabled
    telegram = {"TELEGRAM_BOT_TOKEN": "123:abc"}
    assert not Settings.from_env(telegram).web_chat_enabled
    assert Settings.from_env({**telegram, "DESKMATE_WEB_CHAT": "on"}).web_chat_enabled
    with pytest.raises(ConfigError, match="DESKMATE_WEB_TOKEN"):
        Settings.from_env({"HOST": "0.0.0.0"})
    assert Settings.from_env({"HOST": "0.0.0.0", "DESKMATE_WEB_TOKEN": "x" * 32}).web_chat_enabled
    assert not Settings.from_env({**telegram, "HOST": "0.0.0.0"}).web_chat_enabled
    assert Settings.from_env({"HOST": "::1"}).web_chat_enabled
    # The website widget alone: it is served whatever DESKMATE_WEB_CHAT says.
    widget_only = Settings.from_env({"DESKMATE_WEB_CHAT": "off", "HOST": "0.0.0.0"})
    assert not (widget_only.web_chat_enabled or widget_only.telegram_enabled)
    with pytest.raises(ConfigError, match="auto, on or off"):
        Settings.from_env({"DESKMATE_WEB_CHAT": "maybe"})


def test_thread_and_batch_settings_reach_the_local_backend(tmp_path: Path) -> None:
    from bot.app import create_backend

    backend = create_backend(
        Settings.from_env(
            {
                "DESKMATE_THREADS": "3",
                "DESKMATE_MAX_BATCH": "auto",
                "DESKMATE_DATA_DIR": str(tmp_path),
            }
        )
    )
    assert backend._threads == 3  # type: ignore[attr-defined]
    assert backend._max_batch is None  # type: ignore[attr-defined]
