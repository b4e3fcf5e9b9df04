"""Making untrusted message text safe to store, prompt with, and echo back."""

from __future__ import annotations

import re
from dataclasses import dataclass

# C0/C1 controls except tab and newline; NUL breaks PostgreSQL text columns.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidi embedding/override/isolate controls can make a stored or echoed message
# read differently from what it contains ("RTL override" spoofing).
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True, slots=True)
class CleanText:
    text: str
    truncated: bool
    original_length: int


def clean(text: str, *, max_chars: int) -> CleanText:
    """Normalise text for storage: valid UTF-8, no control characters, capped length."""
    # Lone surrogates cannot be encoded as UTF-8; replace rather than fail.
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _BIDI.sub("", _CONTROLS.sub("", text)).strip()
    original = len(text)
    truncated = original > max_chars
    if truncated:
        text = text[:max_chars].rstrip()
    return CleanText(text, truncated, original)
