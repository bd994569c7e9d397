"""The evaluation report (docs/evaluation.md): built from the evaluation functions on a small synthetic
population, written as one self-contained HTML page and a Markdown twin, rendered in headless
Debian Chromium (a screenshot is saved to tests/artifacts/report.png)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from simpersona.evaluation import (
    action_rate_alignment,
    error_distribution,
    outcome_distribution,
    paper_comparison,
    per_shop_rates,
    plot_ara_by_stratum,
    plot_purchase_funnel,
    plot_shop_errors,
    purchase_funnel,
    render_report,
    separation_figures,
    separation_table,
    token_ablation,
    token_bins,
)
from simpersona.evaluation.report import fmt_value
from tests.conftest import require_chromium

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _population(seed: int = 0, n_agents: int = 400):
    """3 shops, 8 tokens with distinct conversion rates; agents copy their token's rates
    with noise (a well-aligned policy)."""
    rng = np.random.default_rng(seed)
    p_atc = np.linspace(0.02, 0.9, 8)
    p_pur = p_atc * 0.6
    strata = np.where(p_pur > 0.3, "A", np.where(p_atc > 0.5, "C", "D"))
    real, agents = [], []
    for s in range(3):
        for t in range(8):
            for i in range(30):
                atc = bool(rng.random() < p_atc[t])
                pur = atc and bool(rng.random() < p_pur[t] / p_atc[t])
                real.append({"shop_id": f"s{s}", "buyer_id": f"b{s}-{t}-{i}", "token": t,
                             "stratum": str(strata[t]), "atc": atc, "checkout": pur,
                             "purchase": pur, "engagement_bin": min(2, t // 3),
                             "exploration_bin": t % 3, "purchase_bin": min(2, t // 3)})  # fmt: skip
    for i in range(n_agents):
        s, t = int(rng.integers(3)), int(rng.integers(8))
        atc = bool(rng.random() < p_atc[t])
        pur = atc and bool(rng.random() < p_pur[t] / p_atc[t])
        outcome = str(rng.choice(["goal_reached"] * 8 + ["steps_limit", "other"]))
        agents.append({"agent_id": f"a{i}", "shop_id": f"s{s}", "policy": "markov", "token": t,
                       "stratum": str(strata[t]), "intent": "buy",
                       "n_actions": int(rng.poisson(3 + t // 3)), "add_to_cart": atc,
                       "checkout_reached": pur, "purchase": pur, "outcome": outcome,
                       "error": None, "steps": 5, "seconds": 1.0, "self_reported_done": True,
                       "n_product_views": int(rng.poisson(2)), "n_searches": 1,
                       "n_collection_views": 0})  # fmt: skip
    return pl.DataFrame(real), pl.DataFrame(agents)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    real, agents = _population()
    cells, ara, figs = action_rate_alignment(real, agents)
    bins = token_bins(real)
    sep, funnel = separation_table(agents, bins), purchase_funnel(agents, bins)
    figs |= separation_figures(sep, funnel)
    figures = {f"{k}_markov": v for k, v in figs.items()}
    figures |= {"report_note": "synthetic", "demo_seconds": 12.5}
    single = agents.with_columns(
        pl.when(pl.col("shop_id") == "s0").then(pl.lit("other")).otherwise(pl.col("outcome"))
        .alias("outcome")
    )  # fmt: skip
    variants = {"two_stage": agents, "single_stage": single}
    tables = {
        "ara_markov": ara,
        "separation_markov": sep,
        "funnel_markov": funnel,
        "outcomes": outcome_distribution(variants),
        "errors": error_distribution(variants),
        "ablation": token_ablation(agents, single),
        "ara_cells_markov": cells,
    }
    plots = {
        "ARA by stratum (markov)": plot_ara_by_stratum(ara, out / "p" / "ara.png"),
        "Purchase-bin funnel (markov)": plot_purchase_funnel(funnel, out / "p" / "funnel.png"),
        "Per-shop error rate": plot_shop_errors(
            {k: per_shop_rates(v) for k, v in variants.items()}, out / "p" / "errors.png"
        ),
    }
    config = {"seed": 0, "data_versions": {"codebook": "abc123", "warehouse": "v7"}}
    html_path, md_path = render_report(figures, tables, plots, config, out / "report")
    return html_path, md_path, figures


def test_report_files_are_self_contained(report):
    html_path, md_path, figures = report
    html = html_path.read_text()
    assert html_path.name == "report.html" and md_path.name == "report.md"
    assert html.count("data:image/png;base64,") == 3
    # No external resources: every src is a data URI, no stylesheet or script links.
    assert all(s.startswith("data:") for s in re.findall(r"src='([^']*)'", html))
    assert "<link" not in html and "<script" not in html and "http://" not in html
    assert "abc123" in html and "v7" in html  # data versions
    md = md_path.read_text()
    assert "## Table 2 · Action Rate Alignment by funnel stratum (markov)" in md
    assert "| stratified ARA, correct | Table 2 | 0.787 |" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (md_path.parent / link).is_file()
    # Paper beside ours: the paper's value and ours for the same figure on one row.
    comp = paper_comparison(figures)
    row = comp.filter(pl.col("figure") == "stratified ARA, correct").row(0, named=True)
    assert row["paper"] == "0.787" and row["markov"] == fmt_value(figures["ara_correct_markov"])
    assert fmt_value(0.914, "share") == "91.4 %" and fmt_value(float("nan")) == "—"
    assert fmt_value(5.5e-22) == "5.5e-22" and fmt_value(42083.0) == "42,083"


def test_report_page_escapes_what_it_is_given():
    """The page is a Jinja2 template with autoescape on: names, cells, the title, the verdict
    (only its **bold** becomes markup) and the configuration are text, never markup."""
    from simpersona.evaluation.report import render_html

    page = render_html(
        {"x<y": 1.5},
        {"ara_<b>": pl.DataFrame({"<th>": ["<td>&", None]})},
        {},
        {"k": "</pre><script>"},
        title="<T> & 'quoted'",
        verdict=["**yes** <i>"],
        notes=["**note** & more"],
    )
    assert "<script>" not in page and "<T>" not in page and "<i>" not in page
    assert "<title>&lt;T&gt; &amp; &#39;quoted&#39;</title>" in page
    assert "<li><strong>yes</strong> &lt;i&gt;</li>" in page
    assert "<p class='note'><strong>note</strong> &amp; more</p>" in page
    assert "<th>&lt;th&gt;</th>" in page and "<td>&lt;td&gt;&amp;</td>" in page
    assert '<td class="na">—</td>' in page and "<td>x&lt;y</td>" in page
    assert '<a href="#ara--b">ara_&lt;b&gt;</a>' in page and "&lt;/pre&gt;&lt;script&gt;" in page
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</main></body></html>")


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report):
    require_chromium()
    from playwright.sync_api import sync_playwright

    from simpersona.agent.browser import CHROMIUM_ARGS

    html_path, _, _ = report
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(html_path.as_uri())
            headings = page.locator("h2").all_inner_texts()
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth])"
            )
            tables = page.locator("table").count()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    for expected in (
        "Paper vs ours",
        "Plots",
        "Table 2 · Action Rate Alignment by funnel stratum (markov)",
        "Table 3 · Behavioural separation by auxiliary bin (markov)",
        "Table 3 · Purchase-bin funnel (markov)",
        "Table 7 · Outcome distribution",
        "Table 8 · Per-shop error-rate distribution",
        "Table 9 · Persona-token ablation under neutral intents",
        "Configuration and data versions",
    ):
        assert expected in headings
    assert len(images) == 3 and all(done and w > 100 for done, w in images)
    assert tables >= 7 + 6 + 2  # ours, the paper's beside them, comparison and all figures
    assert shot.is_file() and shot.stat().st_size > 20_000
