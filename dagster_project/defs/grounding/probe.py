"""Does the persona model read its goal and its token? A counterfactual probe on the
evaluation shops (docs/llm.md, "Intent probe"): product pages of their sessions, replayed in
the browser, asked with the goal's intent set to "buy" and to "browse", with and without the
persona token. Nothing here is fitted: the shops are held out of the SFT data, so the gap is
out of sample."""

import json
import time

import dagster as dg
from pydantic import Field

from dagster_project.defs.traces.assets import shop_session_inputs
from dagster_project.record import record
from dagster_project.resources import ArtifactsResource, MLflowResource, WarehouseResource

PERSONA_PROBE = "persona_probe"


class PersonaProbeConfig(dg.Config):
    sessions_per_shop: int = Field(
        default=8, description="Sessions of each evaluation shop replayed for product pages."
    )
    prompts: int = Field(default=24, description="Product-page prompts probed in all.")
    samples: int = Field(default=2, description="Replies sampled per prompt and variant.")
    temperature: float = Field(default=0.7, description="Sampling temperature (the policy's).")
    max_new_tokens: int = Field(default=96, description="Reply budget: reasoning, then action.")
    seed: int = Field(default=0, description="Seed of the session and prompt draws, sampling.")


def heldout_prompt_rows(wh, shops: list[str], sessions_per_shop: int, seed: int) -> list[dict]:
    """Stage-2 examples, every one with the intent-only goal, of `sessions_per_shop` sessions
    of each shop replayed on its storefront (the traces stage's replay teacher)."""
    from simpersona.store import StoreCatalog
    from simpersona.traces.build import (
        TraceSelection,
        replay_shop,
        select_outlines,
        trajectory_record,
        write_goals,
    )
    from simpersona.traces.dataset import step_examples
    from simpersona.traces.goals import TemplateGoalWriter
    from simpersona.traces.replay import ReplayConfig

    rows: list[dict] = []
    for shop in shops:
        sessions, assignments, cats = shop_session_inputs(wh, shop)
        sel = TraceSelection(per_shop=sessions_per_shop, seed=seed)
        outlines = select_outlines(sessions, assignments, cats, sel)
        goals = write_goals(outlines, TemplateGoalWriter())
        trajs = replay_shop(
            StoreCatalog.from_warehouse(wh, shop),
            list(zip(outlines, goals, strict=True)),
            ReplayConfig(concurrency=2),
        )
        for t in trajs:
            rows += step_examples(trajectory_record(t), "stage2", intent_share=1.0)
    return rows


@dg.asset(
    group_name="simulation",
    deps=[dg.AssetKey("persona_model")],
    kinds={"playwright", "pytorch"},
    description=(
        "Intent and token probe of the current persona model on the evaluation shops: "
        "add-to-cart rate on their product pages under a 'buy' minus a 'browse' goal, and "
        "with minus without the persona token, each with a paired bootstrap interval."
    ),
)
def persona_probe(
    context: dg.AssetExecutionContext,
    config: PersonaProbeConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.lake import atomic_write_text
    from simpersona.llm.probe import ProbeConfig, intent_probe
    from simpersona.traces.build import write_records

    wh = warehouse.warehouse()
    shops = sorted(wh.shop_split().get("eval", []))
    if not shops:
        raise dg.Failure("no evaluation shops in shop_split.json: materialize training_sample")
    version, folder = artifacts.current("persona_model")
    t0 = time.perf_counter()
    rows = heldout_prompt_rows(wh, shops, config.sessions_per_shop, config.seed)
    replay_seconds = time.perf_counter() - t0
    probe = ProbeConfig(
        prompts=config.prompts,
        samples=config.samples,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
    )
    try:
        r = intent_probe(folder, rows, probe)
    except ValueError as exc:
        # Not a failure of the model or the data: nothing to measure. Recorded as 0 prompts,
        # so the report says the probe measured nothing rather than showing an old figure.
        context.log.warning(
            f"{exc}; replayed {len(rows)} steps of {shops}: raise sessions_per_shop"
        )
        r = {"prompts": 0, "actions": {}}
    figures = {k: v for k, v in r.items() if isinstance(v, int | float)}
    figures |= {"replay_seconds": round(replay_seconds, 1)}
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    out = {"model_version": version, "shops": shops, "figures": figures, "actions": r["actions"]}
    atomic_write_text(json.dumps(out, indent=2), artifacts.path(PERSONA_PROBE, f"{version}.json"))
    # The replayed prompts too: benchmarks/persona_grounding.py --quick re-probes without a browser.
    write_records(rows, artifacts.path(PERSONA_PROBE, f"{version}.rows.jsonl"))
    return record(
        context,
        mlflow,
        {k: round(float(v), 4) for k, v in figures.items()},
        tags={"model_version": version},
        params={**config.model_dump(), "shops": shops},
        metrics={k: float(v) for k, v in figures.items()},
        metadata={
            "model_version": version,
            "shops": dg.MetadataValue.json(shops),
            "actions": dg.MetadataValue.json(r["actions"]),
        },
    )


def probe_figures(artifacts: ArtifactsResource, model_version: str | None) -> dict:
    """The probe's figures for `model_version` ({} when it has not been probed)."""
    if not model_version:
        return {}
    path = artifacts.path(PERSONA_PROBE, f"{model_version}.json")
    return json.loads(path.read_text())["figures"] if path.exists() else {}
