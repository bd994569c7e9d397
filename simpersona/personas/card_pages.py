"""Persona cards written out: JSON (the data), Markdown and a self-contained HTML page (the
Jinja2 template templates/cards.html.j2), from the cards `simpersona.personas.cards` builds.

    write_cards(cards, out_dir)     # cards.json, cards.md, cards.html
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from simpersona.features.labels import HEADS
from simpersona.features.scalars import SCALAR_NAMES, STRATA
from simpersona.personas.cards import FORMAT_VERSION, PersonaCard


def cards_to_json(cards: Sequence[PersonaCard], meta: dict[str, Any] | None = None) -> str:
    """JSON document: {"format_version", "meta", "cards": [...]}; NaN written as null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    doc = {
        "format_version": FORMAT_VERSION,
        "meta": clean(meta or {}),
        "cards": [clean(c.to_dict()) for c in cards],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def cards_from_json(text: str) -> list[PersonaCard]:
    return [PersonaCard(**c) for c in json.loads(text)["cards"]]


def _md(text: Any) -> str:
    """Text safe inside Markdown (and the HTML a Markdown renderer passes through): HTML
    special characters escaped, table pipes and newlines neutralised."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _fmt(x: float) -> str:
    return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _named(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{i['name']} ({_pct(i['share'])})" for i in items) or "–"


def cards_index_markdown(cards: Sequence[PersonaCard], max_rows: int | None = None) -> str:
    """A Markdown table: token, buyers, share, leading stratum, description."""
    lines = ["| token | buyers | share | stratum | description |", "|---:|---:|---:|---|---|"]
    shown = cards if max_rows is None else cards[:max_rows]
    for c in shown:
        lines.append(
            f"| [{c.token}](#token-{c.token}) | {c.buyers:,} | {_pct(c.share)} | "
            f"{c.dominant_stratum} ({_pct(c.strata[c.dominant_stratum])}) | {_md(c.description)} |"
        )
    if max_rows is not None and len(cards) > max_rows:
        lines.append(f"\n_{len(cards) - max_rows} more cards_")
    return "\n".join(lines) + "\n"


def cards_to_markdown(cards: Sequence[PersonaCard], title: str = "Persona cards") -> str:
    """A browsable page: an index table linking to one section per card."""
    out = [f"# {_md(title)}", "", f"{len(cards)} personas (used tokens), largest first.", ""]
    out.append(cards_index_markdown(cards))
    for c in cards:
        out += [
            f'<a id="token-{c.token}"></a>',
            f"## Token {c.token}: {_md(c.name)}",
            "",
            f"_{_md(c.description)}_",
            "",
            f"{c.buyers:,} buyers ({_pct(c.share)} of all).",
            "",
            "| stratum | " + " | ".join(STRATA) + " |",
            "|---|" + "---:|" * len(STRATA),
            "| share | " + " | ".join(_pct(c.strata[s]) for s in STRATA) + " |",
            "",
            "| head | Low | Medium | High |",
            "|---|---:|---:|---:|",
            *(
                f"| {h} | "
                + " | ".join(_pct(c.bins[h][b]) for b in ("low", "medium", "high"))
                + " |"
                for h in HEADS
            ),
            "",
            "| feature | mean |",
            "|---|---:|",
            *(f"| {n} | {_fmt(c.centroid[n])} |" for n in SCALAR_NAMES),
            "",
            f"**Top categories:** {_md(_named(c.top_categories))}",
            "",
            f"**Top products:** {_md(_named(c.top_titles))}",
            "",
        ]
    return "\n".join(out)


# The page itself is templates/cards.html.j2 (Jinja2, autoescape on); this side computes what it
# shows, every figure formatted.
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


@functools.cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
        auto_reload=False,  # the templates ship with the package
    )


def _card_context(c: PersonaCard) -> dict[str, Any]:
    def named(items: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [{"name": str(i["name"]), "share": _pct(i["share"])} for i in items]

    return {
        "token": c.token,
        "name": c.name,
        "description": c.description,
        "buyers": f"{c.buyers:,}",
        "share": _pct(c.share),
        "dominant_stratum": c.dominant_stratum,
        "strata": [(s, _pct(c.strata[s])) for s in STRATA],
        "bins": [(h, [_pct(c.bins[h][b]) for b in ("low", "medium", "high")]) for h in HEADS],
        "centroid": [(n, _fmt(c.centroid[n])) for n in SCALAR_NAMES],
        "top_categories": named(c.top_categories),
        "top_titles": named(c.top_titles),
    }


def cards_html_context(
    cards: Sequence[PersonaCard], title: str = "Persona cards", warnings: Sequence[str] = ()
) -> dict[str, Any]:
    """What templates/cards.html.j2 shows: the title, the warnings and every card's figures
    as formatted text."""
    return {
        "title": title,
        "warnings": list(warnings),
        "cards": [_card_context(c) for c in cards],
    }


def cards_to_html(
    cards: Sequence[PersonaCard], title: str = "Persona cards", warnings: Sequence[str] = ()
) -> str:
    """One self-contained HTML page (inline CSS, no scripts, no external resources); every
    piece of text is HTML-escaped. `warnings` (docs/own-logs.md) head the page."""
    context = cards_html_context(cards, title, warnings)
    return _templates().get_template("cards.html.j2").render(context)


def write_cards(
    cards: Sequence[PersonaCard],
    out_dir: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
    title: str = "Persona cards",
    warnings: Sequence[str] = (),
) -> dict[str, Path]:
    """cards.json, cards.md and cards.html in `out_dir` (each written atomically);
    `warnings` head the HTML page."""
    from simpersona.lake import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "json": atomic_write_text(cards_to_json(cards, meta), out / "cards.json"),
        "md": atomic_write_text(cards_to_markdown(cards, title), out / "cards.md"),
        "html": atomic_write_text(cards_to_html(cards, title, warnings), out / "cards.html"),
    }
