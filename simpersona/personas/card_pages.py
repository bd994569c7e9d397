"""Persona cards written out: JSON (the data), Markdown and a self-contained HTML page, from
the cards `simpersona.personas.cards` builds.

    write_cards(cards, out_dir)     # cards.json, cards.md, cards.html
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em}
td.n{text-align:right;white-space:nowrap}.card{border:1px solid #bbb;border-radius:6px;padding:1em;margin:1em 0}
.desc{font-style:italic}.grid{display:flex;flex-wrap:wrap;gap:1.5em}
#warnings{background:#fff6e6;border:1px solid #e0b050;border-radius:6px;padding:.2em 1em}
"""


def cards_to_html(
    cards: Sequence[PersonaCard], title: str = "Persona cards", warnings: Sequence[str] = ()
) -> str:
    """One self-contained HTML page (inline CSS, no scripts, no external resources); every
    piece of text is HTML-escaped. `warnings` (docs/own-logs.md) head the page."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if warnings:
        parts.append(
            '<div id="warnings"><h2>Read before trusting these cards</h2><ul>'
            + "".join(f"<li>{e(w)}</li>" for w in warnings)
            + "</ul></div>"
        )
    parts += [
        f"<p>{len(cards)} personas (used tokens), largest first.</p>",
        "<table><tr><th>token</th><th>buyers</th><th>share</th><th>stratum</th>"
        "<th>description</th></tr>",
    ]
    for c in cards:
        parts.append(
            f'<tr><td class="n"><a href="#token-{c.token}">{c.token}</a></td>'
            f'<td class="n">{c.buyers:,}</td><td class="n">{e(_pct(c.share))}</td>'
            f"<td>{e(c.dominant_stratum)}</td><td>{e(c.description)}</td></tr>"
        )
    parts.append("</table>")
    for c in cards:
        strata = "".join(f"<th>{e(s)}</th>" for s in STRATA)
        strata_v = "".join(f'<td class="n">{e(_pct(c.strata[s]))}</td>' for s in STRATA)
        bins = "".join(
            f"<tr><td>{e(h)}</td>"
            + "".join(
                f'<td class="n">{e(_pct(c.bins[h][b]))}</td>' for b in ("low", "medium", "high")
            )
            + "</tr>"
            for h in HEADS
        )
        feats = "".join(
            f'<tr><td>{e(n)}</td><td class="n">{e(_fmt(c.centroid[n]))}</td></tr>'
            for n in SCALAR_NAMES
        )

        def items(lst: list[dict[str, Any]]) -> str:
            if not lst:
                return "<li>–</li>"
            return "".join(f"<li>{e(str(i['name']))} ({e(_pct(i['share']))})</li>" for i in lst)

        parts.append(
            f'<div class="card" id="token-{c.token}"><h2>Token {c.token}: {e(c.name)}</h2>'
            f'<p class="desc">{e(c.description)}</p>'
            f"<p>{c.buyers:,} buyers ({e(_pct(c.share))} of all).</p>"
            f'<div class="grid"><div><table><tr><th>stratum</th>{strata}</tr>'
            f"<tr><td>share</td>{strata_v}</tr></table>"
            "<table><tr><th>head</th><th>Low</th><th>Medium</th><th>High</th></tr>"
            f"{bins}</table></div>"
            f"<div><table><tr><th>feature</th><th>mean</th></tr>{feats}</table></div>"
            f"<div><h3>Top categories</h3><ul>{items(c.top_categories)}</ul>"
            f"<h3>Top products</h3><ul>{items(c.top_titles)}</ul></div></div></div>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


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
