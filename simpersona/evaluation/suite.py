"""The whole evaluation in one call: every table of the report for every policy, flat
figures with their bootstrap intervals (`ara_correct_llm`, `ara_diff_markov_ci_low`, …), the
paired comparisons of policies run on the same agents, the verdict, and the plots.

    ev = evaluate(real, assignments, agents, instruction_runs, tasks, plots_dir, bins=bins)
    render_report(ev.figures, ev.tables, ev.plots, config, out_dir, verdict=ev.verdict())

`agents`: the population-simulation rows of every policy (column `policy`); token-less
agents are paired with the buyers they stand for through their counterpart's token.
`bins`: token → auxiliary bins, from the *training* shops' buyers (the evaluation shops'
buyers must not label what is scored on them); the evaluation shops' own bins are used,
and said so, only when none are given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.evaluation.ablation import (
    error_distribution,
    error_distribution_stats,
    outcome_distribution,
    paired_error_test,
    token_ablation,
    token_ablation_figures,
)
from simpersona.evaluation.ara import action_rate_alignment
from simpersona.evaluation.bootstrap import BootstrapConfig, Interval
from simpersona.evaluation.instruction import InstructionTask
from simpersona.evaluation.instruction_check import instruction_figures, instruction_table
from simpersona.evaluation.intervals import (
    ARA_SMALLEST_EFFECT,
    ara_intervals,
    flat_figures,
    paired_intervals,
    rate_intervals,
    separation_intervals,
)
from simpersona.evaluation.report import plot_ara_by_stratum, plot_purchase_funnel
from simpersona.evaluation.separation import purchase_funnel, separation_figures, separation_table
from simpersona.evaluation.tables import OUTCOMES, token_bins, with_sampled_tokens
from simpersona.polars_scalars import as_float

# Figures copied into summary.json per policy, as `<name>_<policy>`; those in WITH_CI also
# as `<name>_<policy>_ci_low` / `_ci_high` (their 95 % bootstrap interval).
HEADLINE = (
    "ara_correct",
    "ara_all_mismatch",
    "ara_random_mismatch",
    "ara_diff",
    "purchase_cohens_d",
    "engagement_cohens_d",
    "exploration_cohens_d",
    "instruction_cart_success",
    "instruction_checkout_success",
    "agents",
)
WITH_CI = frozenset(
    {"ara_correct", "ara_all_mismatch", "ara_diff", "purchase_cohens_d",
     "instruction_cart_success", "instruction_checkout_success"}
)  # fmt: skip
# Policies run on the same agents and compared paired: (with, without) the persona token,
# and the two-stage model against the single-stage ablation (App. F).
TOKEN_PAIRS: tuple[tuple[str, str], ...] = (("markov", "markov_notoken"), ("llm", "nopersona"))
NEUTRAL_PAIR = ("llm_neutral", "nopersona_neutral")
STAGE_PAIR = ("llm", "llm_single")
# Figures of a paired comparison copied into summary.json.
PAIR_HEADLINE = ("ara_correct_gap", "purchase_d_gap")


@dataclass
class Evaluation:
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # caveats the report states

    def headline(self, policies: Sequence[str]) -> dict[str, float | str | None]:
        """The summary.json keys: per policy the HEADLINE figures, per compared pair the
        gaps with their intervals, the verdicts (None for a figure that could not be
        computed, so JSON stays valid)."""
        out: dict[str, float | str | None] = {}
        for p in policies:
            for name in HEADLINE:
                for suffix in ("", "_ci_low", "_ci_high") if name in WITH_CI else ("",):
                    key = f"{name}_{p}{suffix}"
                    out[key] = _clean(self.figures.get(key))
        for a, b in (*TOKEN_PAIRS, NEUTRAL_PAIR, STAGE_PAIR):
            for name in PAIR_HEADLINE:
                key = f"{name}_{a}_{b}"
                if key in self.figures:
                    for suffix in ("", "_ci_low", "_ci_high", "_mdd"):
                        out[key + suffix] = _clean(self.figures.get(key + suffix))
        for k, v in self.figures.items():
            if k.startswith("verdict_"):
                out[k] = v
        return out

    def verdict(self, recovery: Mapping[str, Any] | None = None) -> list[str]:
        """Three plain sentences, each with its figure, interval and sample size: do persona
        tokens change behaviour, do agents match their real counterparts better than
        mismatched ones, does the simulated population recover each store's mix."""
        return verdict_sentences(self.figures, self.intervals, recovery or {})


def _clean(v: Any) -> float | str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(v, 4) if isinstance(v, float) else v


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


def _outcome_figures(a: pl.DataFrame) -> dict[str, float]:
    """Tables 7–8 as flat figures: outcome shares and the per-shop error statistics."""
    n = max(a.height, 1)
    out = {f"{o}_share": float((a["outcome"] == o).sum()) / n for o in OUTCOMES}
    out |= {k: v for k, v in error_distribution_stats(a).items() if k != "other_share"}
    return out


def _with_outcome_flags(a: pl.DataFrame) -> pl.DataFrame:
    return a.with_columns(
        (pl.col("outcome") == "crash").alias("is_crash"),
        (pl.col("outcome") == "goal_reached").alias("is_goal"),
        (pl.col("outcome") != "goal_reached").alias("is_error"),
        (pl.col("outcome") == "other").alias("is_other"),
        pl.col("n_add_to_cart").fill_null(0).alias("atc_events")
        if "n_add_to_cart" in a.columns
        else pl.col("add_to_cart").cast(pl.Int64).alias("atc_events"),
    )


def evaluate(
    real: pl.DataFrame,
    assignments: pl.DataFrame,
    agents: pl.DataFrame,
    instruction_runs: pl.DataFrame | None = None,
    tasks: Sequence[InstructionTask] = (),
    plots_dir: str | Path | None = None,
    *,
    bins: pl.DataFrame | None = None,
    boot: BootstrapConfig | None = None,
) -> Evaluation:
    """Tables 2-4 and 7-9 for every policy in `agents` (and in `instruction_runs`, already
    scored with `score_runs`), each headline figure with its bootstrap interval, and the
    paired comparisons of the policy pairs that ran."""
    boot = boot or BootstrapConfig()
    ev = Evaluation()
    if bins is None:
        bins = token_bins(assignments)
        ev.notes.append(
            "Token bins were read from the evaluation shops' own buyers (no training-shop "
            "bins were given): the separation figures are in-sample."
        )
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
        figs = {**ara_figs, **separation_figures(sep, funnel), **_outcome_figures(a)}
        figs["valid_action_rate"] = _valid_action_rate(a)
        figs["valid_json_rate"] = _valid_json_rate(a)
        figs["agents"] = float(a.height)
        figs["purchase_rate"] = as_float(a["purchase"].mean()) if a.height else math.nan
        figs["atc_rate"] = as_float(a["add_to_cart"].mean()) if a.height else math.nan
        ev.figures.update({f"{k}_{p}": v for k, v in figs.items()})
        ivs = ara_intervals(real, {p: a}, boot=boot) | separation_intervals({p: a}, bins, boot)
        ev.intervals |= ivs
        ev.figures |= flat_figures(ivs)
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
    _compare_pairs(ev, real, by_policy, bins, boot)
    if instruction_runs is not None and instruction_runs.height:
        _instruction(ev, instruction_runs, boot)
        if tasks:
            ev.figures["instruction_tasks"] = float(len(tasks))
    return ev


def _compare_pairs(
    ev: Evaluation,
    real: pl.DataFrame,
    by_policy: Mapping[str, pl.DataFrame],
    bins: pl.DataFrame,
    boot: BootstrapConfig,
) -> None:
    """Token effect per family, Table 9 under neutral goals, two- vs single-stage."""
    for a, b in TOKEN_PAIRS:
        if a in by_policy and b in by_policy:
            ivs = paired_intervals(real, by_policy[a], by_policy[b], bins, (a, b), boot=boot)
            ev.intervals |= ivs
            ev.figures |= flat_figures(ivs)
            gap = ivs.get(f"ara_correct_gap_{a}_{b}")
            family = "markov" if a == "markov" else "llm"
            if gap is not None:
                ev.figures[f"verdict_token_effect_{family}"] = gap.verdict(ARA_SMALLEST_EFFECT)
    # The product is the LLM agent: its verdict is the headline one when it ran.
    for family in ("llm", "markov"):
        if f"verdict_token_effect_{family}" in ev.figures:
            ev.figures["verdict_token_effect"] = ev.figures[f"verdict_token_effect_{family}"]
            ev.figures["verdict_token_effect_policy"] = family
            break
    wt, wo = NEUTRAL_PAIR
    if wt in by_policy and wo in by_policy:
        abl = token_ablation(by_policy[wt], by_policy[wo])
        ev.tables["ablation"] = abl
        ev.figures.update(token_ablation_figures(abl))
        measures = {
            "ablation_crash_share": ("is_crash", None),
            "ablation_goal_reached_share": ("is_goal", None),
            "ablation_atc_events": ("atc_events", None),
            "ablation_checkout_share": ("checkout_reached", None),
            "ablation_actions_ok": ("n_actions", "is_goal"),
        }
        ivs = rate_intervals(
            {wt: _with_outcome_flags(by_policy[wt]), wo: _with_outcome_flags(by_policy[wo])},
            measures,
            boot=boot,
            difference=(wt, wo),
        )
        ev.intervals |= ivs
        ev.figures |= flat_figures(ivs)
        ev.tables["ablation_intervals"] = intervals_table(ivs, "_gap_")
    two, one = STAGE_PAIR
    if two in by_policy and one in by_policy:
        t, p = paired_error_test(by_policy[two], by_policy[one])
        ev.figures |= {"stage_error_paired_t": t, "stage_error_paired_p": p}
        ivs = rate_intervals(
            {two: _with_outcome_flags(by_policy[two]), one: _with_outcome_flags(by_policy[one])},
            {"error_rate": ("is_error", None), "other_rate": ("is_other", None)},
            boot=boot,
            difference=(two, one),
        )
        ev.intervals |= ivs
        ev.figures |= flat_figures(ivs)
        ev.tables["errors_intervals"] = intervals_table(ivs, "_gap_")


def _instruction(ev: Evaluation, runs: pl.DataFrame, boot: BootstrapConfig) -> None:
    """Table 4 per policy, success by task kind with intervals (runs resampled within tasks,
    tasks within shops)."""
    flagged = runs.with_columns(
        *[(pl.col("task_kind") == k).alias(f"is_{k}") for k in ("cart", "checkout", "purchase")]
    )
    for p in sorted(runs["policy"].unique().to_list()):
        scored = flagged.filter(pl.col("policy") == p)
        ev.tables[f"instruction_{p}"] = instruction_table(scored)
        ev.figures.update({f"{k}_{p}": v for k, v in instruction_figures(scored).items()})
        measures: dict[str, tuple[str, str | None]] = {
            f"instruction_{k}_success": ("success", f"is_{k}")
            for k in ("cart", "checkout", "purchase")
        }
        measures["instruction_success"] = ("success", None)
        ivs = rate_intervals({p: scored}, measures, cell="task_id", boot=boot)
        ev.intervals |= ivs
        ev.figures |= flat_figures(ivs)


def intervals_table(intervals: Mapping[str, Interval], only: str = "") -> pl.DataFrame:
    """One row per interval (figure, estimate, CI, SE, MDD, n): what the report shows."""
    rows = [
        {
            "figure": k,
            "estimate": iv.estimate,
            "ci_low": iv.low,
            "ci_high": iv.high,
            "mdd": iv.mdd,
            "units": iv.units,
            "cells": iv.cells,
        }
        for k, iv in intervals.items()
        if only in k
    ]
    schema = {"figure": pl.Utf8, "estimate": pl.Float64, "ci_low": pl.Float64,
              "ci_high": pl.Float64, "mdd": pl.Float64, "units": pl.Int64, "cells": pl.Int64}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


# ---- the verdict -----------------------------------------------------------------------------
def _f(v: float) -> str:
    return f"{v:.3f}"


def verdict_sentences(
    figures: Mapping[str, Any],
    intervals: Mapping[str, Interval],
    recovery: Mapping[str, Any],
) -> list[str]:
    """The report's first three sentences (see `Evaluation.verdict`)."""
    out = []
    parts = []
    for (a, b), label in zip(TOKEN_PAIRS, ("Markov chains", "the LLM"), strict=True):
        iv = intervals.get(f"ara_correct_gap_{a}_{b}")
        if iv is None or not math.isfinite(iv.estimate):
            continue
        verdict = iv.verdict(ARA_SMALLEST_EFFECT)
        parts.append(
            f"{label}: **{verdict}** — stratified ARA correct {_f(figures[f'ara_correct_{a}'])} "
            f"with the token vs {_f(figures[f'ara_correct_{b}'])} without, a difference of "
            f"{iv.text()} over {iv.units} paired agents in {iv.cells} cells "
            f"(smallest detectable at this size: {iv.mdd:.3f})"
        )
    out.append(
        "Do persona tokens change behaviour (the same model with and without its token)? "
        + (
            "; ".join(parts) + "."
            if parts
            else "not measured: no policy ran both with and without the token on the same agents."
        )  # fmt: skip
    )
    parts = []
    # The persona policies (and the oracle, labelled); every other policy is in the tables.
    for p in ("markov", "markov_oracle", "llm"):
        iv = intervals.get(f"ara_diff_{p}")
        if iv is None or not math.isfinite(iv.estimate):
            continue
        tag = " (in-sample upper bound)" if p.endswith("_oracle") else ""
        parts.append(
            f"{p}{tag}: **{iv.verdict(ARA_SMALLEST_EFFECT)}**, correct − all-mismatch "
            f"{iv.text()} ({iv.units} agents in {iv.cells} cells)"
        )
    out.append(
        "Do agents match their real counterparts better than mismatched buyers? "
        + ("; ".join(parts) + "." if parts else "not measured: no ARA cell had enough buyers.")
    )
    n = recovery.get("n_stores_heldout")
    js = recovery.get("js_mean_heldout")
    if js is None or not n:
        out.append(
            "Does the simulated population recover each store's mix? "
            + (
                recovery.get("recovery_note")
                or "not measured: distribution_recovery has not run for the current codebook."
            )  # fmt: skip
        )
    else:
        lo, hi = recovery.get("js_mean_heldout_ci_low"), recovery.get("js_mean_heldout_ci_high")
        ci = (
            f"95 % CI {lo:.4f} to {hi:.4f}"
            if lo is not None and math.isfinite(lo)
            else "no interval"
        )
        r2 = recovery.get("r2_intent_strength_heldout")
        r2_lo = recovery.get("r2_intent_strength_heldout_ci_low")
        r2_text = (
            f"; R² of intent strength across them {_f(r2)}"
            + (f" (95 % CI {_f(r2_lo)} to {_f(recovery['r2_intent_strength_heldout_ci_high'])})"
               if r2_lo is not None else "")
            if r2 is not None
            else ""
        )  # fmt: skip
        out.append(
            "Does the simulated population recover each store's mix? On stores the codebook "
            f"never trained on, strata A–D: mean JS divergence {js:.4f} ({ci}; "
            f"{n} held-out stores, {recovery.get('buyers_heldout', 0):,} buyers; paper 0.054)"
            f"{r2_text}." + (f" {recovery['recovery_note']}" if recovery.get("recovery_note") else "")
        )  # fmt: skip
    return out
