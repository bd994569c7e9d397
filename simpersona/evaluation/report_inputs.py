"""What the evaluation report adds beside the simulation's own figures (paper §4, App. B):
the codebook's population recovery, the persona probe's table, and the headline figures
under their summary names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

# The held-out recovery figures a report's headline carries (distribution_recovery's).
RECOVERY_HEADLINE = (
    "js_mean_heldout",
    "js_mean_heldout_ci_low",
    "js_mean_heldout_ci_high",
    "n_stores_heldout",
    "r2_intent_strength_heldout",
    "r2_intent_strength_heldout_ci_low",
    "r2_intent_strength_heldout_ci_high",
    "r2_atc_rate_heldout",
    "r2_atc_rate_heldout_ci_low",
    "r2_atc_rate_heldout_ci_high",
    "recovery_note",
)


def add_population_recovery(ev: Any, folder: Path) -> dict[str, Any]:
    """App. B beside the simulation: the recovery figures (held-out JS of the stratum mix per
    store and R² of feature means, the in-sample extra), table and plots that
    distribution_recovery wrote in `folder`, added to the evaluation `ev`; returns the
    figures ({} when it has not run)."""
    figs: dict[str, Any] = {}
    if (folder / "figures.json").exists():
        figs = json.loads((folder / "figures.json").read_text())
        figs = {k: v for k, v in figs.items() if not k.startswith("kmeans_")}
        ev.figures.update(figs)
    if (folder / "store_js.csv").exists():
        ev.tables["population_recovery"] = pl.read_csv(folder / "store_js.csv")
    for name in ("stratum_recovery", "feature_recovery"):
        if (folder / f"{name}.png").exists():
            ev.plots[f"Population recovery: {name.replace('_', ' ')}"] = folder / f"{name}.png"
    return figs


def probe_table(probe: dict) -> pl.DataFrame:
    """The probe's rates and gaps, one row per figure, with its interval where it has one."""
    rows = [
        ("add-to-cart, buy goal, with token", "atc_buy"),
        ("add-to-cart, browse goal, with token", "atc_browse"),
        ("add-to-cart, buy goal, no token", "atc_buy_without_token"),
        ("intent gap (buy − browse)", "intent_gap"),
        ("token gap (with − without token, buy)", "token_gap"),
        ("taught add-to-cart under buy (the data)", "truth_atc_buy"),
        ("taught add-to-cart under browse (the data)", "truth_atc_browse"),
        ("unparsed replies", "unparsed_rate"),
    ]
    return pl.DataFrame(
        {
            "figure": [label for label, _ in rows],
            "value": [probe.get(k) for _, k in rows],
            "ci_low": [probe.get(f"{k}_ci_low") for _, k in rows],
            "ci_high": [probe.get(f"{k}_ci_high") for _, k in rows],
            "prompts": [probe.get("prompts")] * len(rows),
        }
    )


def grounding_headline(figures: dict, probe: dict) -> dict:
    """The persona model's headline figures under their summary names: the probe's intent
    gap, and the purchase-bin Cohen's d gap of the LLM with minus without its token."""
    out: dict = {}
    for suffix in ("", "_ci_low", "_ci_high"):
        if f"intent_gap{suffix}" in probe:
            out[f"intent_gap_llm{suffix}"] = probe[f"intent_gap{suffix}"]
        if f"token_gap{suffix}" in probe:
            out[f"token_gap_probe_llm{suffix}"] = probe[f"token_gap{suffix}"]
        if f"purchase_d_gap_llm_nopersona{suffix}" in figures:
            out[f"token_d_gap_llm{suffix}"] = figures[f"purchase_d_gap_llm_nopersona{suffix}"]
    if probe:
        out["probe_prompts"] = probe.get("prompts")
    return out


def add_probe(ev: Any, probe: dict) -> None:
    """The persona probe's table and figures (`probe_…`) in the evaluation, when it ran."""
    if probe.get("prompts"):
        ev.tables["persona_probe"] = probe_table(probe)
        ev.figures |= {f"probe_{k}": v for k, v in probe.items()}
