"""Who a web visitor is: an identity the server issues and signs, never an id
the browser makes up.

A visitor token is ``<id>.<signature>``: 32 hex digits the server chose at
random, and an HMAC-SHA256 of them under the deployment's key. Whoever holds
the token is that visitor; nobody can name another visitor without their
token. The local chat page keeps it in an HttpOnly cookie; a client that
keeps no cookies (the website widget) sends it in the ``X-Deskmate-Visitor``
header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

HEADER = "X-Deskmate-Visitor"
COOKIE = "deskmate_visitor"
_ID = re.compile(r"^[0-9a-f]{32}$")
_PURPOSE = b"deskmate web visitor"


@dataclass(frozen=True, slots=True)
class Visitor:
    """One visitor: ``id`` names them in conversations, ``token`` proves it;
    ``fresh`` when it was issued for this request."""

    id: str
    token: str
    fresh: bool = False


class VisitorKeys:
    """Issues visitor tokens and checks them.

    ``keys``: the first signs, every one is accepted, so a key can be replaced
    without turning every visitor into a stranger at once.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("visitor identities need at least one key")
        self._keys = tuple(keys)

    @classmethod
    def of(cls, *, configured: str, stored: str, purpose: bytes = _PURPOSE) -> VisitorKeys:
        """The keys of ``DESKMATE_SECRET_KEY`` (comma-separated, first signs)
        when it is set, else the one the server generated and ``stored`` (a
        copy of the database then does not let anyone sign). Each is derived
        for this purpose alone, so a signature says nothing about the key's
        other uses (encrypting Slack tokens); a ``purpose`` of its own (one per
        widget site) makes identities that no other purpose accepts."""
        raw = [part.strip() for part in configured.split(",") if part.strip()] or [stored]
        return cls([hmac.new(k.encode(), purpose, hashlib.sha256).digest() for k in raw])

    def issue(self) -> Visitor:
        """A new visitor, never seen before."""
        visitor = secrets.token_hex(16)
        return Visitor(visitor, f"{visitor}.{self._sign(self._keys[0], visitor)}", fresh=True)

    def check(self, token: str) -> Visitor | None:
        """The visitor ``token`` proves, or None when it is not one this
        deployment signed."""
        visitor, _, signature = token.strip().partition(".")
        if not _ID.match(visitor) or not signature:
            return None
        for key in self._keys:
            if hmac.compare_digest(signature.encode(), self._sign(key, visitor).encode()):
                return Visitor(visitor, token.strip())
        return None

    @staticmethod
    def _sign(key: bytes, visitor: str) -> str:
        digest = hmac.new(key, visitor.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
