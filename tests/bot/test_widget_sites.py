"""Widget sites: what an origin is, the look's settings, the signed user's
hash, and ``deskmate widget add|list|set|remove`` on a real SQLite file."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from bot.cli import main
from bot.widget_sites import SiteError, changed_look, parse_origin, user_hash, user_hash_valid
from storage.widget_repo import SiteLook, WidgetSite


@pytest.mark.parametrize(
    ("raw", "origin"),
    [
        ("https://Shop.Example", "https://shop.example"),
        ("https://shop.example:443/", "https://shop.example"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_origins_are_written_as_browsers_send_them(raw: str, origin: str) -> None:
    assert parse_origin(raw) == origin


@pytest.mark.parametrize(
    "raw",
    ["shop.example", "ftp://shop.example", "https://shop.example/page", "https://a@shop.example",
     "https://shop.example:99999", "https://", "https://shop.example?x=1", "*"],
)  # fmt: skip
def test_what_is_not_an_origin_is_refused_with_an_example(raw: str) -> None:
    with pytest.raises(SiteError, match=r"e\.g\. https://shop\.example"):
        parse_origin(raw)


def test_the_look_is_checked_setting_by_setting() -> None:
    look = changed_look(SiteLook(), title=" Help ", color="#ABC", position="left")
    assert look == SiteLook(title="Help", color="#aabbcc", greeting="", position="left")
    for bad in ({"color": "red"}, {"position": "top"}, {"title": ""}, {"greeting": "x" * 301}):
        with pytest.raises(SiteError):
            changed_look(SiteLook(), **bad)  # type: ignore[arg-type]


def test_the_user_hash_is_hmac_sha256_of_the_id_under_the_site_secret() -> None:
    site = WidgetSite("site_k", "local", (), "s3cret", SiteLook(), None)  # type: ignore[arg-type]
    expected = hmac.new(b"s3cret", b"user-7", hashlib.sha256).hexdigest()
    assert user_hash("s3cret", "user-7") == expected
    assert user_hash_valid(site, "user-7", expected.upper())
    assert not user_hash_valid(site, "user-8", expected)
    assert not user_hash_valid(site, "user-7", "")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'deskmate.db'}")
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path / "data"))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_add_list_set_and_remove_sites(cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("widget", "add", "https://shop.example", "http://127.0.0.1:8000", "--json")
    assert code == 0
    added = json.loads(out)
    assert set(added) == {"site", "origins", "tenant"}
    assert added["origins"] == ["https://shop.example", "http://127.0.0.1:8000"]
    assert added["tenant"] == "local"
    code, out, err = cli("widget", "add", "https://blog.example")
    assert code == 0 and out.strip().startswith("site_") and "data-user-hash" in err
    second = out.strip()

    code, out, _ = cli("widget", "list", "--json")
    assert [json.loads(line) for line in out.splitlines()] == [
        added,
        {"site": second, "origins": ["https://blog.example"], "tenant": "local"},
    ]
    code, _, err = cli(
        "widget", "set", added["site"], "--title", "Acme", "--color", "#0a7d5a",
        "--greeting", "Hello!", "--position", "left",
    )  # fmt: skip
    assert code == 0 and "'Acme'" in err and "#0a7d5a" in err
    assert cli("widget", "remove", second)[0] == 0
    code, out, _ = cli("widget", "list", "--json")
    assert [json.loads(line)["site"] for line in out.splitlines()] == [added["site"]]

    code, out, _ = cli("audit", "export")
    actions = [json.loads(line)["action"] for line in out.splitlines()]
    assert actions == [
        "widget_site.add",
        "widget_site.add",
        "widget_site.set",
        "widget_site.remove",
    ]


def test_mistakes_get_a_clear_message_and_change_nothing(cli) -> None:  # type: ignore[no-untyped-def]
    code, _, err = cli("widget", "add", "shop.example")
    assert code == 2 and "is not an origin" in err
    code, _, err = cli("widget", "add", "https://shop.example", "--tenant", "T0NOTHERE")
    assert code == 2 and "not an installed Slack workspace" in err
    code, _, err = cli("widget", "remove", "site_nosuchsite")
    assert code == 2 and "no widget site" in err
    code, out, _ = cli("widget", "add", "https://shop.example")
    code, _, err = cli("widget", "set", out.strip(), "--color", "blue")
    assert code == 2 and "#rrggbb" in err
    code, out, _ = cli("widget", "list", "--json")
    assert len(out.splitlines()) == 1


def test_a_site_of_a_foreign_workspace_is_served_by_that_workspace_only() -> None:
    from bot.handoff.config import HandoffSettings, parse_spaces

    settings = HandoffSettings(
        spaces=parse_spaces("telegram:-1001,slack:T0FOREIGN/C0DESK"), foreign_slack=True
    )
    own, foreign = settings.spaces
    assert settings.space_for("widget", "local") == own
    assert settings.space_for("widget", "T0FOREIGN") == foreign
    assert not settings.serves(own, "widget", "T0FOREIGN")
    assert settings.space_for("widget", "T0OTHER") is None


def test_the_widget_limits_come_from_the_environment() -> None:
    from bot.errors import ConfigError
    from bot.settings import Settings

    settings = Settings.from_env({"DESKMATE_WIDGET_VISITOR_RATE": "30"})
    assert (settings.widget_visitor_rate, settings.widget_site_rate) == (30, 600)
    with pytest.raises(ConfigError, match="DESKMATE_WIDGET_SITE_RATE"):
        Settings.from_env({"DESKMATE_WIDGET_SITE_RATE": "0"})
