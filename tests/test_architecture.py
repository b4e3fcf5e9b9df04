"""The layering rules of ARCHITECTURE.md, checked on the source.

Every import counts: module level, inside functions and under
``TYPE_CHECKING`` alike, since each of them is a dependency a reader has to
follow and a cycle waiting to bite at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "adapters", "llm", "storage")
# What each layer may not import: data flows adapters -> bot -> {llm, storage}.
FORBIDDEN = {
    "storage": ("bot", "adapters"),
    "llm": ("bot", "adapters"),
    "bot": (),
    "adapters": (),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The project modules ``module`` imports, with line numbers."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield _nearest(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                yield (target if target in known else _nearest(base, known)), node.lineno


def _nearest(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for target, line in _imports(module, path, known):
            if target != module and target in known:
                graph[module].setdefault(target, line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    described = [" / ".join(f"{m} -> {[t for t in graph[m] if t in c]}" for m in c) for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_storage_and_llm_import_nothing_above_them() -> None:
    graph = _graph()
    wrong = [
        f"{module}:{line} imports {target}"
        for module, targets in graph.items()
        for target, line in targets.items()
        if target.split(".")[0] in FORBIDDEN[module.split(".")[0]]
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import storage.db\n"
        "if TYPE_CHECKING:\n    from bot.types import Inbound\n"
        "def f():\n    from . import errors\n    from .db import Database\n"
    )
    path = tmp_path / "repository.py"
    path.write_text(source, encoding="utf-8")
    known = {"bot.types", "storage.db", "storage.errors", "storage.repository", "storage"}
    found = {t for t, _ in _imports("storage.repository", path, known)}
    assert found == {"storage.db", "bot.types", "storage.errors"}
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_adapters_never_import_the_manager() -> None:
    """Adapters see the bot through its seams (``bot.types``, ``bot.services``),
    never the conversation manager itself, whatever the import's form."""
    graph = _graph()
    wrong = [
        f"{module}:{line} imports {target}"
        for module, targets in graph.items()
        if module.split(".")[0] == "adapters"
        for target, line in targets.items()
        if target == "bot.manager" or target.startswith("bot.manager.")
    ]
    assert not wrong, "\n".join(wrong)


# Where repositories may be built: the composition root.
COMPOSITION_ROOT = ("bot.app", "bot.cli")


def _repository_classes() -> set[str]:
    """The classes defined in ``storage/`` whose names end in ``Repository``."""
    found = set()
    for module, path in _modules().items():
        if module.split(".")[0] != "storage":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found |= {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.name.endswith("Repository")
        }
    return found


def _constructions(path: Path, classes: set[str]) -> Iterator[tuple[str, int]]:
    """Calls in ``path`` of one of ``classes``: by name, by a name it was imported
    as, or as a module's attribute (``console_repo.ConsoleRepository(db)``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = {name: name for name in classes}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in classes and alias.asname:
                    names[alias.asname] = alias.name
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in names:
            yield names[func.id], node.lineno
        elif isinstance(func, ast.Attribute) and func.attr in classes:
            yield func.attr, node.lineno


def test_only_the_composition_root_builds_repositories() -> None:
    """Repositories (the ``*Repository`` classes of ``storage/``) are built in
    ``bot/app.py`` and ``bot/cli.py`` only; everything else is handed the ones
    it needs.

    Exempt: ``storage/`` itself, where a repository may be made of others (a
    combined repository building its halves is storage's own business), and
    ``tests/`` and ``bench/``, which stand in for the composition root. Module
    level, class bodies and functions all count, as do aliased imports.
    """
    classes = _repository_classes()
    assert "ConsoleRepository" in classes, "no repository classes found in storage/"
    wrong = [
        f"{module}:{line} builds {name}"
        for module, path in _modules().items()
        if module.split(".")[0] != "storage" and module not in COMPOSITION_ROOT
        for name, line in _constructions(path, classes)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_every_way_to_build_a_repository(tmp_path: Path) -> None:
    source = (
        "import storage.team_repo\n"
        "from storage import console_repo\n"
        "from storage.repository import Repository as Store\n"
        "from storage.knowledge_repo import KnowledgeRepository\n"
        "a = Store(db)\n"
        "class A:\n    repo = console_repo.ConsoleRepository(db)\n"
        "def f():\n    return storage.team_repo.TeamRepository(db)\n"
        "async def g():\n    return KnowledgeRepository(db).entries()\n"
        "def h(repo: KnowledgeRepository) -> Repository:\n    return repo\n"
    )
    path = tmp_path / "module.py"
    path.write_text(source, encoding="utf-8")
    classes = {"Repository", "ConsoleRepository", "TeamRepository", "KnowledgeRepository"}
    found = sorted(_constructions(path, classes))
    assert found == [
        ("ConsoleRepository", 7),
        ("KnowledgeRepository", 11),
        ("Repository", 5),
        ("TeamRepository", 9),
    ]
