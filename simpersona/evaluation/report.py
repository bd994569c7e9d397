"""The evaluation report: one self-contained HTML page (inline CSS, plots as data URIs; the
Jinja2 template templates/report.html.j2) and its Markdown twin, with the paper's figures
beside ours; plus the matplotlib plot helpers.

    html, md = render_report(figures, tables, plots, config, out_dir)

`figures`: flat numbers; keys of the paper's figures (`PAPER_FIGURES`) may carry a policy
suffix (`ara_correct_markov`) or none. `tables`: name → frame, shown in order; a name's
prefix (`ara`, `separation`, `funnel`, `instruction`, `outcomes`, `errors`, `ablation`)
gives its caption and puts the paper's table of that kind beside the first one. `plots`:
name → PNG path. `config`: anything JSON-able (configuration, data versions, seeds).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from simpersona.agent.policy import POLICIES
from simpersona.evaluation.paper import PAPER_FIGURES, PAPER_TABLES
from simpersona.lake import atomic_path, atomic_write_text

# The oracle's column says what it is.
COLUMN_LABELS = {"markov_oracle": "markov_oracle (in-sample upper bound)"}

# prefix → (caption, paper table key or None); longest prefix wins.
TABLE_KINDS: dict[str, tuple[str, str | None]] = {
    "ara_cells": ("ARA cells: one row per (shop, token)", None),
    "ara": ("Table 2 · Action Rate Alignment by funnel stratum", "ara"),
    "separation": ("Table 3 · Behavioural separation by auxiliary bin", "separation"),
    "funnel": ("Table 3 · Purchase-bin funnel", "funnel"),
    "instruction": ("Table 4 · Instruction following", "instruction"),
    "outcomes": ("Table 7 · Outcome distribution", "outcomes"),
    "errors": ("Table 8 · Per-shop error-rate distribution", "errors"),
    "ablation": ("Table 9 · Persona-token ablation under neutral intents", "ablation"),
    "population_recovery": ("App. B · Population recovery: stratum-mix JS per store", None),
    "intervals": ("Headline figures with 95 % bootstrap intervals", None),
    "persona_probe": ("Intent and token probe of the persona model (evaluation shops)", None),
    "ablation_intervals": ("Table 9 · with − without token, paired intervals", None),
    "errors_intervals": ("Tables 7–8 · two-stage − single-stage, paired intervals", None),
}


# ---- formatting ------------------------------------------------------------------------------
def fmt_value(v: Any, kind: str = "auto") -> str:
    """A cell: shares (`kind="share"`) as percentages, numbers below 0.001 in scientific
    notation, whole numbers as integers (unless `kind="num"`: three decimals), counts with
    thousands separators, NaN/None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if kind == "share":
            return f"{100 * v:.1f} %"
        if kind == "int" or (v.is_integer() and (kind == "auto" or abs(v) >= 1000)):
            return f"{v:,.0f}"
        if v != 0 and abs(v) < 1e-3:  # p-values and other tiny numbers
            return f"{v:.1e}"
        if abs(v) >= 1000:
            return f"{v:,.1f}"
        return f"{v:.3f}"
    if isinstance(v, list | tuple):
        return ", ".join(fmt_value(x) for x in v)
    return str(v)


def table_kind(name: str) -> tuple[str, str | None]:
    """Caption and paper-table key of a table name (by its longest known prefix)."""
    for prefix in sorted(TABLE_KINDS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "_"):
            caption, paper = TABLE_KINDS[prefix]
            rest = name[len(prefix) + 1 :]
            return (f"{caption} ({rest})" if rest else caption), paper
    return name, None


def not_measured_reason(key: str, figures: Mapping[str, Any]) -> str:
    """Why a paper figure has no value of ours in this report."""
    if key.startswith("instruction_"):
        return "no instruction-following runs among these shops (materialize instruction_following)"
    if key.startswith("ablation_"):
        return "the Table-9 pair llm_neutral / nopersona_neutral was not simulated"
    if key.endswith("_heldout"):
        return str(
            figures.get("recovery_note")
            or "distribution_recovery has not run for the current codebook"
        )
    if key.endswith("_perm_p") or key.endswith("_welch_p") or key.endswith("_kw_p"):
        return "undefined on these agents (an empty or constant bin; see Table 3's reason)"
    return "undefined on these agents (see the tables below)"


def paper_comparison(figures: Mapping[str, Any]) -> pl.DataFrame:
    """Every paper figure: source, paper value, ours per policy that ran (`markov`, `llm`,
    …) or unsuffixed (`ours`), and a note saying why a row has no value of ours. Cells
    already formatted."""
    cols = [p for p in POLICIES if any(f"{k}_{p}" in figures for k in PAPER_FIGURES)]
    plain = any(k in figures for k in PAPER_FIGURES) or not cols
    rows = []
    for key, pf in PAPER_FIGURES.items():
        vals = {COLUMN_LABELS.get(p, p): figures.get(f"{key}_{p}") for p in cols}
        if plain:
            vals["ours"] = figures.get(key)
        measured = any(
            v is not None and not (isinstance(v, float) and math.isnan(v)) for v in vals.values()
        )
        rows.append(
            {
                "figure": pf.label,
                "source": pf.source,
                "paper": fmt_value(float(pf.value), pf.kind) + (f" ({pf.note})" if pf.note else ""),
                **{c: fmt_value(_num(v), pf.kind) for c, v in vals.items()},
                "note": ""
                if measured
                else "not measured, because " + not_measured_reason(key, figures),
            }
        )
    return pl.DataFrame(rows)


def _num(v: Any) -> Any:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


# ---- HTML ------------------------------------------------------------------------------------
# The page itself is templates/report.html.j2 (Jinja2, autoescape on); this side computes what
# it shows: every cell already formatted (`fmt_value`).
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


@functools.cache
def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
        auto_reload=False,  # the templates ship with the package
    )
    env.filters["strong"] = _strong
    return env


def _table_context(df: pl.DataFrame) -> dict[str, Any]:
    """A frame as the template's table: column names and rows of formatted cells."""
    return {"columns": df.columns, "rows": [[fmt_value(v) for v in row] for row in df.iter_rows()]}


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in s.lower()).strip("-")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _sections(tables: Mapping[str, pl.DataFrame]) -> list[tuple[str, str, pl.DataFrame, str]]:
    """(name, caption, frame, paper key shown beside it or '')."""
    shown: set[str] = set()
    out = []
    for name, df in tables.items():
        caption, paper = table_kind(name)
        beside = ""
        if paper and paper not in shown and paper in PAPER_TABLES:
            beside = paper
            shown.add(paper)
        out.append((name, caption, df, beside))
    return out


def _strong(text: str) -> Markup:
    """HTML-escaped text with Markdown's **bold** as <strong>."""
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text))))


def report_context(
    figures: Mapping[str, Any],
    tables: Mapping[str, pl.DataFrame],
    plots: Mapping[str, Path],
    config: Mapping[str, Any],
    title: str = "SimPersona evaluation report",
    verdict: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """What templates/report.html.j2 shows, computed: the paper-vs-ours table, the plots as
    data URIs, one section per table (with the paper's table beside the first of its kind),
    every figure and the configuration as JSON."""
    fig_df = pl.DataFrame(
        {"figure": list(figures), "value": [fmt_value(_num(v)) for v in figures.values()]}
    )
    return {
        "title": title,
        "stamp": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "verdict": list(verdict),
        "notes": list(notes),
        "comparison": _table_context(paper_comparison(figures)),
        "plots": [{"name": n, "src": _data_uri(Path(p))} for n, p in plots.items()],
        "sections": [
            {
                "name": name,
                "slug": _slug(name),
                "caption": caption,
                "n_rows": df.height,
                "ours": _table_context(df),
                "paper": _table_context(PAPER_TABLES[beside]) if beside else None,
            }
            for name, caption, df, beside in _sections(tables)
        ],
        "figures": _table_context(fig_df),
        "config_json": json.dumps(config, indent=2, sort_keys=True, default=str),
    }


def render_html(
    figures: Mapping[str, Any],
    tables: Mapping[str, pl.DataFrame],
    plots: Mapping[str, Path],
    config: Mapping[str, Any],
    title: str = "SimPersona evaluation report",
    verdict: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """The report page as one HTML string (no external resources): the verdict first, then
    the paper-vs-ours table, plots, tables, every figure and the configuration."""
    context = report_context(figures, tables, plots, config, title, verdict, notes)
    return _templates().get_template("report.html.j2").render(context)


# ---- Markdown --------------------------------------------------------------------------------
def _md_table(df: pl.DataFrame) -> str:
    if df.width == 0:
        return "_empty_"
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in df.columns) + " |", "|" + "---|" * df.width]
    lines += ["| " + " | ".join(esc(fmt_value(v)) for v in row) + " |" for row in df.iter_rows()]
    if df.height == 0:
        lines.append("\n_no rows_")
    return "\n".join(lines)


def render_markdown(
    figures: Mapping[str, Any],
    tables: Mapping[str, pl.DataFrame],
    plot_links: Mapping[str, str],
    config: Mapping[str, Any],
    title: str = "SimPersona evaluation report",
    verdict: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """The Markdown twin; plots are linked by relative path."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    out = [f"# {title}", "", f"Generated {stamp}.", "", "## Verdict", ""]
    out += [f"{i}. {v}" for i, v in enumerate(verdict, 1)] or ["No verdict: nothing was compared."]
    out += [""] + [f"_{n}_" for n in notes] + ["", "## Paper vs ours", ""]
    out += [_md_table(paper_comparison(figures)), ""]
    if plot_links:
        out += ["## Plots", ""] + [f"![{n}]({p})" for n, p in plot_links.items()] + [""]
    for _name, caption, df, beside in _sections(tables):
        out += [f"## {caption}", "", "Ours:", "", _md_table(df), ""]
        if beside:
            out += ["Paper:", "", _md_table(PAPER_TABLES[beside]), ""]
    out += ["## All figures", "", "| figure | value |", "|---|---|"]
    out += [f"| {k} | {fmt_value(_num(v))} |" for k, v in figures.items()]
    out += ["", "## Configuration and data versions", "", "```json"]
    out += [json.dumps(config, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(out)


def render_report(
    figures: Mapping[str, Any],
    tables: Mapping[str, pl.DataFrame],
    plots: Mapping[str, Path],
    config: Mapping[str, Any],
    out_dir: str | Path,
    title: str = "SimPersona evaluation report",
    verdict: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write `<out_dir>/report.html` (self-contained) and `<out_dir>/report.md` (plots copied
    to `<out_dir>/plots/`), atomically; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    missing = [f"{n}: {p}" for n, p in plots.items() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"plot file(s) not found: {'; '.join(missing)}")
    links: dict[str, str] = {}
    for name, p in plots.items():
        dest = out / "plots" / f"{_slug(name)}.png"
        if Path(p).resolve() != dest.resolve():
            with atomic_path(dest, suffix=".png") as tmp:
                shutil.copyfile(p, tmp)
        links[name] = f"plots/{dest.name}"
    html_path = atomic_write_text(
        render_html(figures, tables, plots, config, title, verdict, notes), out / "report.html"
    )
    md_path = atomic_write_text(
        render_markdown(figures, tables, links, config, title, verdict, notes), out / "report.md"
    )
    return html_path, md_path


# ---- plots -----------------------------------------------------------------------------------
def _figure(width: float = 6.4, height: float = 3.6) -> tuple[Any, Any]:
    """A figure and its axes on the Agg canvas: matplotlib's object API, no pyplot state
    (as personas/distribution.py draws), so plots are safe from any thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Any, path: str | Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def plot_ara_by_stratum(table: pl.DataFrame, path: str | Path, title: str = "") -> Path:
    """Grouped bars of the correct / all-mismatch / 1-random ARA per stratum (an `ara_table`),
    with the paper's correct and all-mismatch values as markers."""
    import numpy as np

    rows = table.filter(pl.col("stratum") != "Pooled")
    labels = rows["stratum"].to_list()
    x = np.arange(len(labels))
    fig, ax = _figure()
    for i, (col, name) in enumerate(
        (("ara_correct", "correct"), ("ara_all", "all-mismatch"), ("ara_rand", "1-random"))
    ):
        vals = rows[col].cast(pl.Float64).fill_null(np.nan).to_numpy()
        ax.bar(x + (i - 1) * 0.26, vals, width=0.26, label=name)
    paper = PAPER_TABLES["ara"]
    pv = dict(zip(paper["stratum"].to_list(), paper["ara_correct"].to_list(), strict=True))
    pm = dict(zip(paper["stratum"].to_list(), paper["ara_all"].to_list(), strict=True))
    px = [i for i, s in enumerate(labels) if s in pv]
    ax.scatter([x[i] - 0.26 for i in px], [pv[labels[i]] for i in px], marker="_", s=260,
               color="black", zorder=3, label="paper correct")  # fmt: skip
    ax.scatter([x[i] for i in px], [pm[labels[i]] for i in px], marker="_", s=260,
               color="grey", zorder=3, label="paper all-mismatch")  # fmt: skip
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("ARA")
    ax.set_title(title or "Action Rate Alignment by funnel stratum")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    return _save(fig, path)


def plot_purchase_funnel(funnel: pl.DataFrame, path: str | Path, title: str = "") -> Path:
    """Bars of add-to-cart / checkout / purchase rates (%) per purchase bin (a
    `purchase_funnel`), with the paper's ATC and checkout rates as markers."""
    import numpy as np

    labels = funnel["purchase_bin"].to_list()
    x = np.arange(len(labels))
    fig, ax = _figure()
    cols = (("atc_rate", "add-to-cart"), ("checkout_rate", "checkout"),
            ("purchase_rate", "purchase"))  # fmt: skip
    for i, (col, name) in enumerate(cols):
        vals = 100 * funnel[col].cast(pl.Float64).fill_null(np.nan).to_numpy()
        ax.bar(x + (i - 1) * 0.26, vals, width=0.26, label=name)
    paper = PAPER_TABLES["funnel"]
    ax.scatter(x - 0.26, 100 * paper["atc_rate"].to_numpy(), marker="_", s=260, color="black",
               zorder=3, label="paper ATC")  # fmt: skip
    ax.scatter(x, 100 * paper["checkout_rate"].to_numpy(), marker="_", s=260, color="grey",
               zorder=3, label="paper checkout")  # fmt: skip
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of agents")
    ax.set_xlabel("purchase bin of the agent's token")
    ax.set_title(title or "Purchase-bin funnel")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return _save(fig, path)


def plot_shop_errors(
    per_shop: Mapping[str, pl.DataFrame], path: str | Path, title: str = ""
) -> Path:
    """Figure 8 analogue: per-shop error rate (%) per variant (`per_shop_rates` frames),
    shops sorted by the first variant's error."""
    import numpy as np

    names: Sequence[str] = list(per_shop)
    first = per_shop[names[0]].sort("error_rate")
    shops = first["shop_id"].to_list()
    x = np.arange(len(shops))
    w = 0.8 / max(len(names), 1)
    fig, ax = _figure(max(6.4, 0.3 * len(shops)))
    for i, n in enumerate(names):
        m = dict(zip(per_shop[n]["shop_id"].to_list(), per_shop[n]["error_rate"].to_list(),
                     strict=True))  # fmt: skip
        ax.bar(x + (i - (len(names) - 1) / 2) * w, [100 * m.get(s, np.nan) for s in shops],
               width=w, label=n)  # fmt: skip
    ax.set_xticks(x, shops, rotation=90, fontsize=6)
    ax.set_ylabel("error rate (%)")
    ax.set_title(title or "Per-shop error rate")
    ax.legend(fontsize=7)
    return _save(fig, path)
