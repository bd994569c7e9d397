"""Evaluation of simulated agents against real buyers (paper §3.2, App. B; docs/evaluation.md): Action Rate
Alignment, behavioural separation by auxiliary bin, instruction following, ablations, and
the HTML/Markdown report. Pure functions over polars tables; see docs/evaluation.md."""

from simpersona.evaluation.ablation import (
    error_distribution,
    error_distribution_stats,
    outcome_distribution,
    paired_error_test,
    per_shop_rates,
    token_ablation,
    token_ablation_figures,
)
from simpersona.evaluation.ara import (
    ARAConfig,
    action_rate_alignment,
    ara_cells,
    ara_figures,
    ara_table,
)
from simpersona.evaluation.paper import PAPER_FIGURES, PAPER_TABLES
from simpersona.evaluation.report import (
    paper_comparison,
    plot_ara_by_stratum,
    plot_purchase_funnel,
    plot_shop_errors,
    render_report,
)
from simpersona.evaluation.separation import (
    SeparationConfig,
    cohens_d,
    kruskal_wallis,
    permutation_pvalue,
    purchase_funnel,
    separation_figures,
    separation_table,
    welch_t,
)
from simpersona.evaluation.tables import real_buyer_outcomes, token_bins, with_sampled_tokens

__all__ = [
    "PAPER_FIGURES",
    "PAPER_TABLES",
    "ARAConfig",
    "SeparationConfig",
    "action_rate_alignment",
    "ara_cells",
    "ara_figures",
    "ara_table",
    "cohens_d",
    "error_distribution",
    "error_distribution_stats",
    "kruskal_wallis",
    "outcome_distribution",
    "paired_error_test",
    "paper_comparison",
    "per_shop_rates",
    "permutation_pvalue",
    "plot_ara_by_stratum",
    "plot_purchase_funnel",
    "plot_shop_errors",
    "purchase_funnel",
    "real_buyer_outcomes",
    "render_report",
    "separation_figures",
    "separation_table",
    "token_ablation",
    "token_ablation_figures",
    "token_bins",
    "welch_t",
    "with_sampled_tokens",
]
