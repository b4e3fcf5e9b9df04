"""``bot.types.Conversations`` names every method adapters call: the manager and
the adapters' test fake both have each one, with the same parameters, so an
adapter never needs to ask whether a method is there."""

from __future__ import annotations

import inspect

import pytest

from bot.manager import ConversationManager
from bot.types import Conversations
from tests.adapters.conversations import Echo

SEAM = sorted(
    name
    for name, member in vars(Conversations).items()
    if not name.startswith("_") and inspect.isfunction(member)
)


def _parameters(function: object) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


def test_the_seam_holds_what_adapters_call() -> None:
    assert SEAM == [
        "accept",
        "listens_to",
        "menu",
        "move_conversation",
        "pending_of_tenant",
        "process",
        "set_active",
        "staff_language",
        "take_lease",
    ]


@pytest.mark.parametrize("implementation", [ConversationManager, Echo])
@pytest.mark.parametrize("name", SEAM)
def test_every_method_of_the_seam_is_implemented(implementation: type, name: str) -> None:
    method = getattr(implementation, name, None)
    assert callable(method), f"{implementation.__name__} has no {name}"
    assert _parameters(method) == _parameters(getattr(Conversations, name))
    assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(
        getattr(Conversations, name)
    )
