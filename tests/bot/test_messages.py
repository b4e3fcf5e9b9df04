"""The text catalog and the code that looks texts up agree, checked on the source.

Every ``say(...)`` in ``bot/`` and ``adapters/`` names a key the English
catalog has and passes exactly the placeholders its template uses; every key
of the catalog is used somewhere. Keys built at run time are listed in
``BUILT`` by the f-string that builds them, so a new one has to be named here.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.messages import CATALOG, DEFAULT_LANGUAGE, keys, say

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("bot", "adapters")
CATALOG_MODULE = ROOT / "bot" / "messages.py"
TEXTS = ROOT / "bot" / "texts"
# Every language Deskmate ships texts in: each must translate every key.
SHIPPED = ("sv", "de", "es", "fr", "zh")
ENGLISH = CATALOG[DEFAULT_LANGUAGE]
AREAS = frozenset(key.partition(".")[0] for key in ENGLISH)
# A string literal of this shape is a key wherever it stands (a variable
# holding one, a table of them), so it must exist and it counts as a use.
KEY_SHAPE = re.compile(rf"^(?:{'|'.join(sorted(AREAS))})\.[a-z0-9_.]+$")
# Literals of that shape that are something else.
NOT_KEYS = frozenset(
    {
        "team.id",  # a field of a Slack payload (adapters/slack/convert.py)
        "knowledge.html",  # a console template (adapters/webconsole/knowledge.py)
    }
)

# Keys built at run time: the f-string's shape ("{}" for each value put in)
# and every key it builds; None where the value is open-ended and every key
# that starts as the shape does counts (a knowledge source's kind).
BUILT: dict[str, frozenset[str] | None] = {
    # bot/handoff/desk.py TRIGGERS: the reason a ticket was opened.
    "handoff.why.{}": frozenset(
        f"handoff.why.{trigger}"
        for trigger in ("request", "escalation", "model_failure", "takeover")
    ),
    # bot/knowledge/commands.py: what /faq add did to the entry.
    "knowledge.faq.{}": frozenset(
        f"knowledge.faq.{said}" for said in ("added", "updated", "unchanged")
    ),
    # bot/knowledge/commands.py: /mode for this conversation or the workspace.
    "knowledge.mode.set_{}": frozenset(
        f"knowledge.mode.set_{where}" for where in ("here", "workspace")
    ),
    # bot/handoff/copilot.py suggestion_text: how a suggestion was drafted.
    "copilot.path.{}": frozenset(f"copilot.path.{path}" for path in ("quoted", "written")),
    # bot/knowledge/passages.py kind_name: how citations name a source's kind.
    "knowledge.kind.{}": None,
    # bot/foreign_answers.py language_name: a language's name in another.
    "language.name_{}": frozenset(
        f"language.name_{code}" for code in ("en", "sv", "de", "es", "fr", "zh")
    ),
    # adapters/webconsole/documents.py: a console job's action and a document's outcome.
    "console.docs.job.{}": None,
    "console.docs.status.{}": None,
    # The console's templates: named("<area>", code) and the navigation's entries.
    "console.nav.{}": None,
    "console.state.{}": None,
    "console.closed.{}": None,
    "console.suggestion.{}": None,
    "console.drafted.{}": None,
    "console.event.{}": None,
    "console.path.{}": None,
    "console.plan.{}": None,
    "console.mode.{}": None,
    "console.reason.{}": None,
    # adapters/webconsole/imports.py: why an import skipped a row or refused a file.
    "console.import.row.{}": None,
    "console.import.file.{}": None,
    # adapters/webconsole/documents.py: why a document could not be read.
    "console.docs.problem.{}": None,
    "console.sites.position.{}": None,
    # adapters/webconsole/sites.py: why a widget site's setting was refused.
    "console.site_error.{}": None,
}

TEMPLATES = ROOT / "adapters" / "webconsole" / "templates"
# A template's lookups: t("key", name=value, ...) and named("area", code),
# and the one key built from a literal ("console.nav." ~ key).
_T_CALL = re.compile(r"""\bt\(\s*["']([a-z0-9_.]+)["']""")
_NAMED = re.compile(r"""\bnamed\(\s*["']([a-z0-9_.]+)["']""")
_BUILT_IN_TEMPLATE = re.compile(r"""\bt\(\s*["']([a-z0-9_.]+\.)["']\s*~""")


@dataclass(frozen=True, slots=True)
class Call:
    where: str
    keys: tuple[str, ...] | None  # None: built at run time
    names: frozenset[str]
    spread: bool  # passes **values, whose names the source does not show


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for package in SCANNED:
        for path in sorted((ROOT / package).rglob("*.py")):
            # The catalog's own keys (and its blocks in bot/texts) are no use of them.
            if "migrations" in path.parts or path == CATALOG_MODULE or path.is_relative_to(TEXTS):
                continue
            yield str(path.relative_to(ROOT)), ast.parse(path.read_text(encoding="utf-8"))


SOURCES = list(_sources())


def _is_say(node: ast.Call) -> bool:
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "say") or (
        isinstance(func, ast.Attribute) and func.attr == "say"
    )


def _literal_keys(node: ast.expr) -> tuple[str, ...] | None:
    """The keys an argument can be when the source spells them out: a literal,
    or a choice between literals (``"a" if x else "b"``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return (node.value,)
    if isinstance(node, ast.IfExp):
        body, orelse = _literal_keys(node.body), _literal_keys(node.orelse)
        if body is not None and orelse is not None:
            return body + orelse
    return None


def _shape(node: ast.JoinedStr) -> str:
    return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)


def _calls() -> list[Call]:
    found = []
    for name, tree in SOURCES:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _is_say(node) and node.args):
                continue
            found.append(
                Call(
                    where=f"{name}:{node.lineno}",
                    keys=_literal_keys(node.args[0]),
                    names=frozenset(k.arg for k in node.keywords if k.arg is not None),
                    spread=any(k.arg is None for k in node.keywords),
                )
            )
    return found


def _arguments(text: str, start: int) -> str:
    """The arguments of the call whose name ends at ``start`` (to its closing parenthesis)."""
    depth, end = 0, start
    for end in range(start, len(text)):
        if text[end] == "(":
            depth += 1
        elif text[end] == ")":
            depth -= 1
            if depth == 0:
                break
    return text[start + 1 : end]


def _template_calls() -> list[Call]:
    found = []
    for path in sorted(TEMPLATES.iterdir()):
        text = path.read_text(encoding="utf-8")
        for match in _T_CALL.finditer(text):
            if match.group(1).endswith("."):
                continue  # a key built from it (_BUILT_IN_TEMPLATE)
            args = _arguments(text, text.index("(", match.start()))
            names = frozenset(re.findall(r"(?:^|[,(\s])([a-z_][a-z0-9_]*)\s*=(?!=)", args))
            line = text.count("\n", 0, match.start()) + 1
            found.append(Call(f"{path.name}:{line}", (match.group(1),), names, spread=False))
    return found


def _template_shapes() -> list[tuple[str, str]]:
    """The keys templates build: named("area", code) is "area.{}"."""
    found = []
    for path in sorted(TEMPLATES.iterdir()):
        text = path.read_text(encoding="utf-8")
        found += [(path.name, f"{m.group(1)}.{{}}") for m in _NAMED.finditer(text)]
        found += [(path.name, f"{m.group(1)}{{}}") for m in _BUILT_IN_TEMPLATE.finditer(text)]
    return found


CALLS = _calls() + _template_calls()


def _key_literals() -> list[tuple[str, str]]:
    """Every whole string literal shaped like a key (not a piece of an
    f-string), with where it stands."""
    found = []
    for name, tree in SOURCES:
        pieces = {
            id(part)
            for node in ast.walk(tree)
            if isinstance(node, ast.JoinedStr)
            for part in node.values
        }
        found += [
            (f"{name}:{node.lineno}", node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and id(node) not in pieces
            and isinstance(node.value, str)
            and KEY_SHAPE.match(node.value)
            and node.value not in NOT_KEYS
        ]
    return found


def _built_shapes() -> list[tuple[str, str]]:
    """Every f-string that builds a key (it starts with an area and a dot)."""
    found = []
    for name, tree in SOURCES:
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                area, dot, _ = _shape(node).partition(".")
                if dot and area in AREAS:
                    found.append((f"{name}:{node.lineno}", _shape(node)))
    return found


def _fields(template: str) -> frozenset[str]:
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            names.add(re.split(r"[.\[]", field, maxsplit=1)[0])
    return frozenset(names)


def test_the_scan_sees_the_lookups() -> None:
    # A scan that found nothing would pass every check below.
    assert len(CALLS) > 100
    assert any(call.keys == ("team.role_usage",) for call in CALLS)
    # The console's templates too, with the names they pass.
    [queue] = [c for c in CALLS if c.keys == ("console.tickets.queue",)]
    assert queue.where.startswith("tickets.html:") and queue.names == {"count"}
    assert ("ticket.html", "console.state.{}") in _template_shapes()


def test_every_key_looked_up_is_in_the_catalog() -> None:
    missing = [
        f"{call.where}: {key}" for call in CALLS for key in call.keys or () if key not in ENGLISH
    ]
    missing += [f"{where}: {key}" for where, key in _key_literals() if key not in ENGLISH]
    assert missing == []


def test_every_key_built_at_run_time_is_listed_and_exists() -> None:
    shapes = _built_shapes() + _template_shapes()
    unlisted = [f"{where}: {shape}" for where, shape in shapes if shape not in BUILT]
    assert unlisted == []
    for shape, built in BUILT.items():
        if built is None:
            prefix = shape.partition("{}")[0]
            assert any(key.startswith(prefix) for key in ENGLISH), shape
        else:
            assert built <= keys(), sorted(built - keys())


def test_every_key_in_the_catalog_is_used() -> None:
    used = {key for call in CALLS for key in call.keys or ()}
    used |= {key for _, key in _key_literals()}
    for shape, built in BUILT.items():
        if built is None:
            prefix = shape.partition("{}")[0]
            used |= {key for key in ENGLISH if key.startswith(prefix)}
        else:
            used |= built
    assert sorted(keys() - used) == []


def test_every_lookup_passes_the_placeholders_of_its_text() -> None:
    wrong = []
    for call in CALLS:
        for key in call.keys or ():
            if key not in ENGLISH:
                continue  # reported by the test of the keys
            fields = _fields(ENGLISH[key])
            if call.names != fields and not (call.spread and call.names <= fields):
                wrong.append(
                    f"{call.where}: {key} takes {sorted(fields)}, given {sorted(call.names)}"
                )
    assert wrong == []


@pytest.mark.parametrize("key", sorted(ENGLISH))
def test_every_text_names_its_placeholders(key: str) -> None:
    # Positional fields ("{}", "{0}") cannot be filled by say(key, **values).
    assert all(field and not field[0].isdigit() for field in _fields(ENGLISH[key]))


def test_every_translation_translates_known_keys_with_the_same_placeholders() -> None:
    for language, texts in CATALOG.items():
        for key, template in texts.items():
            assert key in ENGLISH, (language, key)
            assert _fields(template) == _fields(ENGLISH[key]), (language, key)


@pytest.mark.parametrize("language", SHIPPED)
def test_every_shipped_language_translates_every_key(language: str) -> None:
    texts = CATALOG[language]
    missing = sorted(set(ENGLISH) - set(texts))
    assert missing == [], f"{language} lacks {len(missing)} texts: {missing}"
    # The same format specs too ("{chars:,}", "{kind!r}"), not only the names.
    specs = [key for key in ENGLISH if _specs(texts[key]) != _specs(ENGLISH[key])]
    assert specs == []
    # A translation that is the English text is a text nobody translated
    # (a few are the same in every language: labels, numbers, placeholders).
    untouched = [
        k for k in ENGLISH if texts[k] == ENGLISH[k] and re.search(r"[a-z]{4} [a-z]{3}", ENGLISH[k])
    ]
    assert untouched == [], untouched


def _specs(template: str) -> list[tuple[str, str, str | None]]:
    return sorted(
        (field, spec or "", conversion)
        for _, field, spec, conversion in string.Formatter().parse(template)
        if field is not None
    )


def test_a_text_missing_in_a_language_is_said_in_english(monkeypatch: pytest.MonkeyPatch) -> None:
    assert say("team.rated_good", "sv") == "Tack för återkopplingen!"
    monkeypatch.delitem(CATALOG["sv"], "team.rated_good")  # type: ignore[attr-defined]
    assert say("team.rated_good", "sv") == ENGLISH["team.rated_good"]


def test_say_fills_the_placeholders_and_refuses_an_unknown_key() -> None:
    assert say("team.tenant", tenant="T1") == "tenant T1"
    assert say("team.tenant", "xx", tenant="T1") == "tenant T1"  # falls back to English
    with pytest.raises(KeyError):
        say("team.no_such_text")
