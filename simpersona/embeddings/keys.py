"""The text that is embedded and its cache key: (model id, sha256 of the normalised text)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import NamedTuple

_WS = re.compile(r"\s+")


def normalize_text(text: str | None) -> str:
    """The text that is embedded and hashed: Unicode NFC, whitespace runs collapsed to one
    space, stripped. None -> ""."""
    if text is None:
        return ""
    return _WS.sub(" ", unicodedata.normalize("NFC", str(text))).strip()


def text_hash(text: str | None) -> str:
    """sha256 (hex) of the normalised text."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


class CacheKey(NamedTuple):
    model_id: str
    text_hash: str


def cache_key(model_id: str, text: str) -> CacheKey:
    return CacheKey(model_id, text_hash(text))
