"""Evaluation stage (paper §3.2, §4): the report over every simulated evaluation shop —
ARA by stratum, behavioural separation, the purchase-bin funnel, instruction following,
population recovery beside it and the persona model's grounding figures. The logic lives in
simpersona.evaluation."""

import json
import math
import time
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from dagster_project.defs.grounding.probe import probe_figures
from dagster_project.record import record
from dagster_project.resources import ArtifactsResource, MLflowResource, WarehouseResource
from simpersona.agent.policy_set import MARKOV_POLICY, PERSONA_MODEL
from simpersona.lake import atomic_write_text

# What the report reads of each evaluated shop.
INPUT_TABLES = (
    "population_simulation", "instruction_following", "persona_assignments", "buyer_features",
)  # fmt: skip


def _stamp() -> str:
    """The report's folder name: the UTC time it was made."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _finite(d: dict) -> dict:
    """The finite numbers of `d` (what MLflow metrics and the figures entry take)."""
    return {k: v for k, v in d.items() if isinstance(v, int | float) and math.isfinite(v)}


class EvaluationReportConfig(dg.Config):
    shops: list[str] = Field(
        default=[], description="Shops to evaluate (default: the evaluation split)."
    )
    report_dir: str = Field(
        default="", description="Output folder (default: <artifacts>/evaluation_report/<ts>)."
    )
    resamples: int = Field(
        default=2000, description="Bootstrap resamples behind every interval of the report."
    )
    seed: int = Field(default=0, description="Seed of the bootstrap.")


def _evaluate(wh, artifacts: ArtifactsResource, config, shops: list[str], out: str):
    """(evaluation, agents, instruction runs, Markov fit shops, (codebook version, recovery
    figures)) of the evaluated shops."""
    from simpersona.evaluation import real_buyer_outcomes
    from simpersona.evaluation.bootstrap import BootstrapConfig
    from simpersona.evaluation.suite import evaluate, intervals_table

    agents, runs, assignments, features = (wh.read_shops(t, shops) for t in INPUT_TABLES)
    real = real_buyer_outcomes(assignments, features)
    fit_shops, bins = _fit_provenance(wh, artifacts, agents, shops)
    boot = BootstrapConfig(n_resamples=config.resamples, seed=config.seed)
    ev = evaluate(
        real, assignments, agents, runs if runs.height else None, (), f"{out}/plots",
        bins=bins, boot=boot,
    )  # fmt: skip
    recovery = _population_recovery(ev, artifacts)  # its table before the intervals
    ev.tables["intervals"] = intervals_table(ev.intervals)
    ev.figures["markov_fit_shops"] = fit_shops
    ev.figures["evaluation_shops"] = shops
    return ev, agents, runs, fit_shops, recovery


def _population_recovery(ev, artifacts: ArtifactsResource) -> tuple[str | None, dict]:
    """(codebook version, recovery figures) of the current codebook, added to `ev`."""
    from simpersona.evaluation.report_inputs import add_population_recovery

    current = artifacts.current_or_none("persona_codebook")
    if current is None:
        return None, {}
    folder = artifacts.path("distribution_recovery", current[0])
    return current[0], add_population_recovery(ev, folder)


def _fit_provenance(wh, artifacts: ArtifactsResource, agents: pl.DataFrame, shops: list[str]):
    """(markov_fit_shops, token bins): the shops the Markov policy was fitted on — refused
    when they overlap the evaluated ones and a `markov`/`markov_notoken` agent is scored — and
    each token's auxiliary bins from the training shops' buyers, so nothing fitted on an
    evaluation shop labels or drives what is scored there."""
    from simpersona.evaluation.tables import BIN_COLUMNS, token_bins

    fit_shops: list[str] = []
    if current := artifacts.current_or_none(MARKOV_POLICY):
        fit_shops = json.loads((current[1] / "fit.json").read_text())["fit_shops"]
    scored = set(agents["policy"].unique().to_list()) & {"markov", "markov_notoken"}
    overlap = sorted(set(fit_shops) & set(shops))
    if scored and overlap:
        raise dg.Failure(
            f"the Markov policy was fitted on {overlap}, which this report evaluates: an "
            "in-sample figure. Evaluate held-out shops only (shop_split.json), or refit"
        )
    train = [s for s in wh.shop_split().get("train", []) if s not in shops]
    frames = [
        pl.read_parquet(
            wh.partition_path("persona_assignments", s), columns=["token", *BIN_COLUMNS]
        )
        for s in train
        if wh.partition_path("persona_assignments", s).exists()
    ]
    bins = token_bins(pl.concat(frames)) if frames else None
    return fit_shops, bins


@dg.asset(
    group_name="simulation",
    deps=[
        "population_simulation",
        "instruction_following",
        "distribution_recovery",
        "persona_probe",
    ],
    kinds={"html", "mlflow"},
    description=(
        "The evaluation report: ARA by stratum (Table 2), behavioural separation and the "
        "purchase-bin funnel (Table 3), instruction following (Table 4), outcomes and per-shop "
        "errors (Tables 7-8), the persona-token ablation (Table 9), each policy beside the "
        "paper's figures; one self-contained HTML page and its Markdown twin, logged to MLflow."
    ),
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationReportConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.evaluation import render_report
    from simpersona.evaluation.report_inputs import RECOVERY_HEADLINE, add_probe, grounding_headline

    wh = warehouse.warehouse()
    shops = list(config.shops) or wh.shop_split().get("eval", [])
    shops = [s for s in shops if wh.partition_path("population_simulation", s).exists()]
    if not shops:
        raise dg.Failure("no evaluation shop has a population_simulation: materialize it first")
    out = config.report_dir or str(artifacts.path("evaluation_report", _stamp()))
    ev, agents, runs, fit_shops, (codebook_version, recovery) = _evaluate(
        wh, artifacts, config, shops, out
    )
    policies = sorted(agents["policy"].unique().to_list())
    model_version = (artifacts.current_or_none(PERSONA_MODEL) or (None,))[0]
    run_config = {
        "shops": shops,
        "policies": policies,
        "agents": agents.height,
        "instruction_runs": runs.height,
        "persona_model": model_version,
        "persona_codebook": codebook_version,
        "markov_fit_shops": fit_shops,
        "bootstrap": {"resamples": config.resamples, "seed": config.seed},
        "dagster_run_id": context.run.run_id,
    }
    probe = probe_figures(artifacts, model_version)
    add_probe(ev, probe)
    verdict = ev.verdict(recovery)
    html, md = render_report(
        ev.figures, ev.tables, ev.plots, run_config, out, verdict=verdict, notes=ev.notes
    )
    headline = ev.headline(policies) | {
        "markov_fit_shops": fit_shops,
        "evaluation_shops": shops,
        **{k: recovery.get(k) for k in RECOVERY_HEADLINE},
    }
    headline |= grounding_headline(headline, probe)
    report = {"html": str(html), "md": str(md), "figures": headline}
    atomic_write_text(json.dumps(report, indent=2), wh.root / "evaluation_report.json")
    return record(
        context,
        mlflow,
        {"shops": len(shops), "agents": agents.height},
        params={k: str(v) for k, v in run_config.items()},
        metrics=_finite(headline),
        artifacts=[(html, None), (md, None)],
        metadata={
            "report_html": dg.MetadataValue.path(str(html)),
            "report_md": dg.MetadataValue.path(str(md)),
            "headline": dg.MetadataValue.json(headline),
            "verdict": dg.MetadataValue.md(
                "\n".join(f"{i}. {v}" for i, v in enumerate(verdict, 1))
            ),
            "verdict_sentences": dg.MetadataValue.json(verdict),
            "figures": dg.MetadataValue.json(
                {k: round(float(v), 6) for k, v in _finite(ev.figures).items()}
            ),
            "report": dg.MetadataValue.md(Path(md).read_text()[:20_000]),
        },
    )
