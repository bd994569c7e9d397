"""Deterministic product search: BM25 over titles (counted twice) and descriptions.

Tokens are lower-cased, accent-folded words with apostrophes dropped and a light plural
stemmer (`sandals` -> `sandal`, `womens` -> `women`), applied to documents and queries
alike. A query word missing from the vocabulary is matched, at a discount, to vocabulary
words one edit away (a deleted, inserted, substituted or swapped letter), so typed queries
with a typo still find products. An exact title match always ranks first, then titles
that contain the query as a phrase; ties keep catalog order.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

_WORD_RE = re.compile(r"[0-9a-z]+")
K1 = 1.2
B = 0.75
TITLE_WEIGHT = 2
TYPO_WEIGHT = 0.7
EXACT_TITLE_BONUS = 1000.0
TITLE_PHRASE_BONUS = 10.0


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.replace("'", "").replace("\u2019", "")


def stem(word: str) -> str:
    """A light English plural stemmer; deterministic and the same for queries and docs."""
    if len(word) <= 3 or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def tokenize(text: str | None) -> list[str]:
    if not text:
        return []
    return [stem(w) for w in _WORD_RE.findall(_fold(text))]


def normalize_phrase(text: str | None) -> str:
    """Tokens joined by single spaces: 'Men's Boot – Rust' == "mens boot rust"."""
    return " ".join(tokenize(text))


def _edits1(word: str) -> set[str]:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in letters}
    inserts = {a + c + b for a, b in splits for c in letters}
    return deletes | swaps | replaces | inserts


class SearchIndex:
    """An inverted index over `(title, description)` documents, addressed by position."""

    def __init__(self, docs: Sequence[tuple[str, str | None]]) -> None:
        self.n_docs = len(docs)
        self._postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self._lengths: list[int] = []
        self._titles: list[str] = []
        for i, (title, description) in enumerate(docs):
            tf: dict[str, int] = defaultdict(int)
            t_tokens = tokenize(title)
            for tok in t_tokens:
                tf[tok] += TITLE_WEIGHT
            for tok in tokenize(description):
                tf[tok] += 1
            for tok, n in tf.items():
                self._postings[tok].append((i, n))
            self._lengths.append(sum(tf.values()))
            self._titles.append(" ".join(t_tokens))
        self._avg_len = (sum(self._lengths) / self.n_docs) if self.n_docs else 0.0
        self._idf = {
            tok: math.log(1.0 + (self.n_docs - len(p) + 0.5) / (len(p) + 0.5))
            for tok, p in self._postings.items()
        }
        self._expand = lru_cache(maxsize=4096)(self._expand_uncached)

    @property
    def vocabulary(self) -> set[str]:
        return set(self._postings)

    def _expand_uncached(self, token: str) -> tuple[tuple[str, float], ...]:
        """(vocabulary token, weight) pairs a query token matches."""
        if token in self._postings:
            return ((token, 1.0),)
        if len(token) < 4:
            return ()
        near = sorted(t for t in _edits1(token) if t in self._postings)
        return tuple((t, TYPO_WEIGHT) for t in near)

    def search(self, query: str) -> list[tuple[int, float]]:
        """(document position, score) of every matching document, best first."""
        q_tokens = list(dict.fromkeys(tokenize(query)))
        if not q_tokens or not self.n_docs:
            return []
        scores: dict[int, float] = defaultdict(float)
        for q in q_tokens:
            for tok, weight in self._expand(q):
                idf = self._idf[tok]
                for doc, tf in self._postings[tok]:
                    norm = K1 * (1.0 - B + B * self._lengths[doc] / self._avg_len)
                    scores[doc] += weight * idf * tf * (K1 + 1.0) / (tf + norm)
        phrase = " ".join(tokenize(query))
        for doc in scores:
            title = self._titles[doc]
            if title == phrase:
                scores[doc] += EXACT_TITLE_BONUS
            elif phrase and f" {phrase} " in f" {title} ":
                scores[doc] += TITLE_PHRASE_BONUS
        return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
