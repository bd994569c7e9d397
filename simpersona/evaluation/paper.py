"""The paper's evaluation figures (paper Tables 2–4, 7–9, App. B), in the
units of our figures: shares in 0–1, effect sizes and means raw, counts as numbers."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from simpersona.personas.distribution import PAPER_APPENDIX_B


@dataclass(frozen=True)
class PaperFigure:
    value: float
    label: str
    source: str
    kind: str = "num"  # num | share | p | int
    note: str = ""


def _f(value: float, label: str, source: str, kind: str = "num", note: str = "") -> PaperFigure:
    return PaperFigure(value, label, source, kind, note)


PAPER_FIGURES: dict[str, PaperFigure] = {
    # Table 2
    "ara_correct": _f(0.787, "stratified ARA, correct", "Table 2"),
    "ara_all_mismatch": _f(0.589, "stratified ARA, all-mismatch", "Table 2"),
    "ara_random_mismatch": _f(0.576, "stratified ARA, 1-random mismatch", "Table 2"),
    "atc_align_correct": _f(0.788, "stratified ATC alignment, correct", "Table 2"),
    "pur_align_correct": _f(0.785, "stratified PUR alignment, correct", "Table 2"),
    "ara_correct_A": _f(0.724, "ARA correct, stratum A", "Table 2"),
    "ara_correct_B": _f(0.748, "ARA correct, stratum B", "Table 2"),
    "ara_correct_C": _f(0.721, "ARA correct, stratum C", "Table 2"),
    "ara_correct_D": _f(0.954, "ARA correct, stratum D", "Table 2"),
    "ara_all_mismatch_A": _f(0.506, "ARA all-mismatch, stratum A", "Table 2"),
    "ara_all_mismatch_B": _f(0.532, "ARA all-mismatch, stratum B", "Table 2"),
    "ara_all_mismatch_C": _f(0.597, "ARA all-mismatch, stratum C", "Table 2"),
    "ara_all_mismatch_D": _f(0.723, "ARA all-mismatch, stratum D", "Table 2"),
    # Table 3
    "purchase_mean_low": _f(0.06, "purchase score, Low bin", "Table 3"),
    "purchase_mean_medium": _f(2.94, "purchase score, Medium bin", "Table 3"),
    "purchase_mean_high": _f(7.25, "purchase score, High bin", "Table 3"),
    "purchase_cohens_d": _f(2.80, "purchase Cohen's d (Low vs High)", "Table 3"),
    "purchase_welch_p": _f(5.5e-22, "purchase Welch t p", "Table 3", "p"),
    "purchase_kw_p": _f(4.5e-14, "purchase Kruskal–Wallis p", "Table 3", "p"),
    "purchase_perm_p": _f(1e-4, "purchase permutation p", "Table 3", "p", "paper: < 0.0001"),
    "engagement_mean_low": _f(1.55, "engagement (actions/session), Low", "Table 3"),
    "engagement_mean_medium": _f(2.00, "engagement (actions/session), Medium", "Table 3"),
    "engagement_mean_high": _f(2.41, "engagement (actions/session), High", "Table 3"),
    "engagement_cohens_d": _f(0.76, "engagement Cohen's d", "Table 3"),
    "engagement_welch_p": _f(4.1e-3, "engagement Welch t p", "Table 3", "p"),
    "engagement_kw_p": _f(1.2e-2, "engagement Kruskal–Wallis p", "Table 3", "p"),
    "engagement_perm_p": _f(3e-3, "engagement permutation p", "Table 3", "p"),
    "exploration_mean_low": _f(1.34, "exploration, Low", "Table 3"),
    "exploration_mean_medium": _f(1.29, "exploration, Medium", "Table 3"),
    "exploration_mean_high": _f(1.39, "exploration, High", "Table 3"),
    "exploration_cohens_d": _f(0.10, "exploration Cohen's d", "Table 3"),
    "exploration_welch_p": _f(0.81, "exploration Welch t p", "Table 3", "p"),
    "exploration_kw_p": _f(0.78, "exploration Kruskal–Wallis p", "Table 3", "p"),
    "exploration_perm_p": _f(0.48, "exploration permutation p", "Table 3", "p"),
    "funnel_atc_rate_low": _f(0.010, "add-to-cart, purchase bin Low", "Table 3", "share"),
    "funnel_atc_rate_medium": _f(0.294, "add-to-cart, purchase bin Medium", "Table 3", "share"),
    "funnel_atc_rate_high": _f(0.720, "add-to-cart, purchase bin High", "Table 3", "share"),
    "funnel_checkout_rate_low": _f(0.003, "checkout, purchase bin Low", "Table 3", "share"),
    "funnel_checkout_rate_medium": _f(0.137, "checkout, purchase bin Medium", "Table 3", "share"),
    "funnel_checkout_rate_high": _f(0.433, "checkout, purchase bin High", "Table 3", "share"),
    # Table 4 (note: the 8x larger GPT-OSS-120B baseline)
    "instruction_cart_success": _f(0.914, "cart tasks → added to cart", "Table 4", "share",
                                   "baseline 81.7 %"),
    "instruction_checkout_success": _f(0.769, "checkout tasks → reached checkout", "Table 4",
                                       "share", "baseline 53.1 %"),
    "instruction_purchase_checkout": _f(0.593, "purchase tasks → reached checkout", "Table 4",
                                        "share", "baseline 52.2 %"),
    "instruction_self_reported": _f(0.777, "self-reported goal reached", "Table 4", "share",
                                    "baseline 93.9 %"),
    "instruction_avg_steps": _f(14.9, "average steps per run", "Table 4", "num",
                                "baseline 11.4"),
    # Tables 7–8 (two-stage; single-stage in the note)
    "goal_reached_share": _f(0.835, "goal reached", "Table 7", "share", "single-stage 82.8 %"),
    "steps_limit_share": _f(0.131, "steps-limit", "Table 7", "share", "single-stage 12.6 %"),
    "time_limit_share": _f(0.012, "time-limit", "Table 7", "share", "single-stage 0.0 %"),
    "other_share": _f(0.022, "other (malformed output)", "Table 7", "share",
                      "single-stage 4.6 %"),
    "std_error": _f(0.076, "per-shop error rate, std", "Table 8", "share", "single-stage 13.9 pp"),
    "min_error": _f(0.022, "per-shop error rate, min", "Table 8", "share", "single-stage 2.9 %"),
    "max_error": _f(0.285, "per-shop error rate, max", "Table 8", "share", "single-stage 71.3 %"),
    "cv_error": _f(0.46, "per-shop error rate, CV", "App. F", "num", "single-stage 0.81"),
    "min_goal_reached": _f(0.715, "lowest per-shop goal-reached rate", "Table 8", "share",
                           "single-stage 28.7 %"),
    "max_other": _f(0.109, "per-shop other rate, max", "App. F", "share",
                    "single-stage 51.1 %"),
    # Table 9
    "ablation_crash_share_with": _f(0.053, "crashes, with token", "Table 9", "share"),
    "ablation_crash_share_without": _f(0.156, "crashes, no token", "Table 9", "share"),
    "ablation_goal_reached_share_with": _f(0.787, "goal reached, with token", "Table 9", "share"),
    "ablation_goal_reached_share_without": _f(0.753, "goal reached, no token", "Table 9",
                                              "share"),
    "ablation_atc_events_ratio": _f(1.18, "add-to-cart events, with/without", "Table 9"),
    "ablation_checkout_reached_ratio": _f(1.17, "checkouts reached, with/without", "Table 9"),
    "ablation_actions_per_session_ok_with": _f(11.1, "actions/session (goal reached), token",
                                               "Table 9"),
    "ablation_actions_per_session_ok_without": _f(9.1, "actions/session (goal reached), none",
                                                  "Table 9"),
    # Appendix B (population recovery), ours on held-out stores
    "js_mean_heldout": _f(PAPER_APPENDIX_B["js_mean"], "stratum-mix JS divergence, mean",
                          "App. B", note="ours: held-out stores, A–D"),
    "js_median_heldout": _f(PAPER_APPENDIX_B["js_median"], "stratum-mix JS divergence, median",
                            "App. B"),
    "r2_intent_strength_heldout": _f(PAPER_APPENDIX_B["r2_intent_strength"],
                                     "R² intent strength", "App. B"),
    "r2_atc_rate_heldout": _f(PAPER_APPENDIX_B["r2_atc_rate"], "R² add-to-cart rate", "App. B"),
    "r2_checkout_rate_heldout": _f(PAPER_APPENDIX_B["r2_checkout_rate"], "R² checkout rate",
                                   "App. B"),
    "r2_browse_only_rate_heldout": _f(PAPER_APPENDIX_B["r2_browse_only_rate"],
                                      "R² browse-only rate", "App. B"),
}  # fmt: skip

# The paper's tables in the layout of ours (shown beside them in the report).
PAPER_TABLES: dict[str, pl.DataFrame] = {
    "ara": pl.DataFrame(
        {
            "stratum": ["A", "B", "C", "D", "Stratified"],
            "atc_align_correct": [0.706, 0.736, 0.767, 0.942, 0.788],
            "atc_align_all": [0.496, 0.465, 0.438, 0.653, 0.513],
            "atc_align_rand": [0.522, 0.429, 0.442, 0.644, 0.509],
            "pur_align_correct": [0.742, 0.760, 0.674, 0.965, 0.785],
            "pur_align_all": [0.516, 0.598, 0.755, 0.792, 0.665],
            "pur_align_rand": [0.537, 0.544, 0.720, 0.769, 0.643],
            "ara_correct": [0.724, 0.748, 0.721, 0.954, 0.787],
            "ara_all": [0.506, 0.532, 0.597, 0.723, 0.589],
            "ara_rand": [0.530, 0.487, 0.581, 0.707, 0.576],
        }
    ),
    "separation": pl.DataFrame(
        {
            "head": ["purchase", "engagement", "exploration"],
            "mean_low": [0.06, 1.55, 1.34],
            "mean_medium": [2.94, 2.00, 1.29],
            "mean_high": [7.25, 2.41, 1.39],
            "cohens_d": [2.80, 0.76, 0.10],
            "welch_p": [5.5e-22, 4.1e-3, 0.81],
            "kw_p": [4.5e-14, 1.2e-2, 0.78],
            "perm_p": ["<0.0001", "0.003", "0.48"],
        }
    ),
    "funnel": pl.DataFrame(
        {
            "purchase_bin": ["Low", "Medium", "High"],
            "atc_rate": [0.010, 0.294, 0.720],
            "checkout_rate": [0.003, 0.137, 0.433],
        }
    ),
    "instruction": pl.DataFrame(
        {
            "metric": [
                "avg steps per run",
                "self-reported goal reached",
                "cart tasks → added to cart",
                "checkout tasks → reached checkout",
                "purchase tasks → reached checkout",
            ],
            "SimPersona": [14.9, 0.777, 0.914, 0.769, 0.593],
            "GPT-OSS-120B": [11.4, 0.939, 0.817, 0.531, 0.522],
        }
    ),
    "outcomes": pl.DataFrame(
        {
            "outcome": ["goal_reached", "steps_limit", "time_limit", "other"],
            "two_stage_count": [42083, 6625, 598, 1094],
            "two_stage_share": [0.835, 0.131, 0.012, 0.022],
            "single_stage_count": [41720, 6333, 7, 2340],
            "single_stage_share": [0.828, 0.126, 0.000, 0.046],
        }
    ),
    "errors": pl.DataFrame(
        {
            "statistic": [
                "std_error",
                "min_error",
                "max_error",
                "shops_error_below_10",
                "shops_error_above_30",
                "shops_error_above_50",
                "min_goal_reached",
                "shops_goal_below_50",
                "shops_goal_below_70",
            ],
            "two_stage": [0.076, 0.022, 0.285, 8, 0, 0, 0.715, 0, 0],
            "single_stage": [0.139, 0.029, 0.713, 13, 5, 2, 0.287, 2, 5],
        },
        strict=False,
    ),
    "ablation": pl.DataFrame(
        {
            "metric": [
                "crashes",
                "crash_share",
                "goal_reached",
                "goal_reached_share",
                "atc_events",
                "checkout_reached",
                "actions_per_session_ok",
                "shops_higher_crash",
            ],
            "with_token": [2650, 0.053, 39664, 0.787, 16132, 7823, 11.1, 3],
            "no_token": [7862, 0.156, 37942, 0.753, 13698, 6664, 9.1, 38],
            "ratio": [0.34, 0.34, 1.05, 1.05, 1.18, 1.17, 1.23, None],
        },
        strict=False,
    ),
}
