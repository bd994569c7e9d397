"""The whole evaluation in one call: every table of the report for every policy, flat
headline figures (`ara_correct_llm`, `purchase_cohens_d_markov`, …) and the plots.

    ev = evaluate(real, assignments, agents, instruction_runs, tasks, plots_dir)
    render_report(ev.figures, ev.tables, ev.plots, config, out_dir)

`agents`: the population-simulation rows of every policy (column `policy`); no-persona
agents are paired with the buyers they stand for through their counterpart's token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.evaluation.ablation import (
    error_distribution,
    outcome_distribution,
    token_ablation,
    token_ablation_figures,
)
from simpersona.evaluation.ara import action_rate_alignment
from simpersona.evaluation.instruction import (
    InstructionTask,
    instruction_figures,
    instruction_table,
)
from simpersona.evaluation.report import plot_ara_by_stratum, plot_purchase_funnel
from simpersona.evaluation.separation import purchase_funnel, separation_figures, separation_table
from simpersona.evaluation.tables import token_bins, with_sampled_tokens

# Figures copied into summary.json per policy (issue #8), as `<name>_<policy>`.
HEADLINE = (
    "ara_correct",
    "ara_all_mismatch",
    "ara_random_mismatch",
    "purchase_cohens_d",
    "engagement_cohens_d",
    "exploration_cohens_d",
    "instruction_cart_success",
    "instruction_checkout_success",
)


@dataclass
class Evaluation:
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)

    def headline(self, policies: Sequence[str]) -> dict[str, float | None]:
        """The summary.json keys of issue #8 (None for a figure that could not be computed,
        so JSON stays valid)."""
        out: dict[str, float | None] = {}
        for p in policies:
            for name in HEADLINE:
                v = self.figures.get(f"{name}_{p}")
                out[f"{name}_{p}"] = (
                    None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 4)
                )
        return out


def _valid_action_rate(agents: pl.DataFrame) -> float:
    """Share of the agents' steps whose reply was a valid, executable action."""
    steps = float(agents["steps"].sum()) if agents.height else 0.0
    bad = float(agents["invalid_actions"].sum()) if "invalid_actions" in agents.columns else 0.0
    return 1.0 - bad / steps if steps else math.nan


def _valid_json_rate(agents: pl.DataFrame) -> float:
    """Share of the agents' replies that parsed as a schema-valid JSON action (executable on
    the page or not)."""
    steps = float(agents["steps"].sum()) if agents.height else 0.0
    col = "malformed_replies"
    bad = float(agents[col].fill_null(0).sum()) if col in agents.columns else 0.0
    return 1.0 - bad / steps if steps else math.nan


def evaluate(
    real: pl.DataFrame,
    assignments: pl.DataFrame,
    agents: pl.DataFrame,
    instruction_runs: pl.DataFrame | None = None,
    tasks: Sequence[InstructionTask] = (),
    plots_dir: str | Path | None = None,
) -> Evaluation:
    """Tables 2-4 and 7-9 for every policy in `agents` (and in `instruction_runs`, already
    scored with `score_runs`)."""
    ev = Evaluation()
    bins = token_bins(assignments)
    policies = sorted(agents["policy"].unique().to_list()) if agents.height else []
    by_policy: dict[str, pl.DataFrame] = {}
    for p in policies:
        a = agents.filter(pl.col("policy") == p)
        if a["token"].null_count() == a.height:  # no persona: the buyers it stands for
            a = with_sampled_tokens(a, assignments)
        by_policy[p] = a
        _, ara, ara_figs = action_rate_alignment(real, a)
        sep = separation_table(a, bins)
        funnel = purchase_funnel(a, bins)
        ev.tables[f"ara_{p}"] = ara
        ev.tables[f"separation_{p}"] = sep
        ev.tables[f"funnel_{p}"] = funnel
        figs = {**ara_figs, **separation_figures(sep, funnel)}
        figs["valid_action_rate"] = _valid_action_rate(a)
        figs["valid_json_rate"] = _valid_json_rate(a)
        figs["agents"] = float(a.height)
        figs["purchase_rate"] = float(a["purchase"].mean()) if a.height else math.nan
        figs["atc_rate"] = float(a["add_to_cart"].mean()) if a.height else math.nan
        ev.figures.update({f"{k}_{p}": v for k, v in figs.items()})
        if plots_dir is not None:
            d = Path(plots_dir)
            ev.plots[f"ARA by stratum ({p})"] = plot_ara_by_stratum(
                ara, d / f"ara_{p}.png", title=f"ARA by stratum — {p}"
            )
            ev.plots[f"Purchase-bin funnel ({p})"] = plot_purchase_funnel(
                funnel, d / f"funnel_{p}.png", title=f"Purchase-bin funnel — {p}"
            )
    main = {p: by_policy[p] for p in policies if not p.endswith("_neutral")}
    if main:
        ev.tables["outcomes"] = outcome_distribution(main)
        ev.tables["errors"] = error_distribution(main)
    if "llm_neutral" in by_policy and "nopersona_neutral" in by_policy:
        abl = token_ablation(by_policy["llm_neutral"], by_policy["nopersona_neutral"])
        ev.tables["ablation"] = abl
        ev.figures.update(token_ablation_figures(abl))
    if instruction_runs is not None and instruction_runs.height:
        for p in sorted(instruction_runs["policy"].unique().to_list()):
            scored = instruction_runs.filter(pl.col("policy") == p)
            ev.tables[f"instruction_{p}"] = instruction_table(scored)
            ev.figures.update({f"{k}_{p}": v for k, v in instruction_figures(scored).items()})
        if tasks:
            ev.figures["instruction_tasks"] = float(len(tasks))
    return ev
