"""Traces stage (paper §2.1.2): per shop, sessions → navigation goals → replay on the shop's
storefront in a real browser → judge; then the stage-1 and stage-2 SFT datasets from the
training shops. Thin wrappers: the logic lives in simpersona.traces."""

from collections import Counter
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from dagster_project.partitions import shop_partitions
from dagster_project.record import record
from dagster_project.resources import (
    ArtifactsResource,
    LLMResource,
    MLflowResource,
    WarehouseResource,
    require_partitions,
)
from simpersona.markdown import counts_to_markdown, frame_to_markdown

TRACES_DIR = "traces"
STORE_WALKS_DIR = "store_walks"


class ReplayedTracesConfig(dg.Config):
    goal_writer: Literal["template", "llm"] = Field(
        default="template", description="'template' (offline, deterministic) or 'llm'."
    )
    judge: Literal["rules", "llm"] = Field(
        default="rules", description="'rules' (required actions) or 'llm' (the llm resource)."
    )
    sessions_per_shop: int = Field(
        default=90, description="Sessions replayed per shop (paper: 3,600 from ~40 shops)."
    )
    min_events: int = Field(default=2, description="Shortest session replayed (events).")
    max_events: int = Field(default=25, description="Longest session replayed (events).")
    concurrency: int = Field(default=4, description="Browser sessions at once.")
    max_steps: int = Field(default=60, description="Steps per replay at most.")
    seed: int = Field(default=0, description="Seed of the session selection.")


def shop_session_inputs(wh, shop: str):
    """(enriched sessions, buyer → token/stratum, CategoryIndex) of one shop: what session
    outlines are built from (the replayed traces here, the simulation's counterparts)."""
    from simpersona.traces.outline import CategoryIndex

    require_partitions(wh, shop, "enriched_sessions", "persona_assignments")
    sessions = pl.read_parquet(wh.partition_path("enriched_sessions", shop))
    assignments = pl.read_parquet(
        wh.partition_path("persona_assignments", shop), columns=["buyer_id", "token", "stratum"]
    )
    cats = CategoryIndex.from_frames(
        wh.read_partition("products", shop), wh.read_partition("collections", shop)
    )
    return sessions, assignments, cats


def _every_tenth(context: dg.AssetExecutionContext, total: int, what: str):
    """A callback logging "replayed n/total <what>" every tenth call and at the last."""
    done = [0]

    def progress(_item) -> None:
        done[0] += 1
        if done[0] % 10 == 0 or done[0] == total:
            context.log.info(f"replayed {done[0]}/{total} {what}")

    return progress


@dg.asset(
    group_name="traces",
    partitions_def=shop_partitions,
    deps=["enriched_sessions", "persona_assignments"],
    kinds={"playwright", "json"},
    description=(
        "A shop's sessions replayed on its storefront in headless Chromium by the replay "
        "teacher, with stage-1/stage-2 goals and the judge's verdict (one JSON record per "
        "session: steps, plan, outcome, keep)."
    ),
)
def replayed_traces(
    context: dg.AssetExecutionContext,
    config: ReplayedTracesConfig,
    warehouse: WarehouseResource,
    llm: LLMResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.store import StoreCatalog
    from simpersona.traces.build import (
        TraceSelection,
        select_outlines,
        trace_shop,
        trajectory_record,
        write_records,
    )
    from simpersona.traces.goals import LLMGoalWriter, TemplateGoalWriter
    from simpersona.traces.judge import LLMJudge
    from simpersona.traces.replay import ReplayConfig

    shop = context.partition_key
    wh = warehouse.warehouse()
    sessions, assignments, cats = shop_session_inputs(wh, shop)
    sel = TraceSelection(
        config.sessions_per_shop, config.min_events, config.max_events, seed=config.seed
    )
    outlines = select_outlines(sessions, assignments, cats, sel)
    if not outlines:
        raise dg.Failure(f"shop {shop} has no session of {sel.min_events}–{sel.max_events} events")
    client = llm.client() if "llm" in (config.goal_writer, config.judge) else None
    traces = trace_shop(
        StoreCatalog.from_warehouse(wh, shop),
        outlines,
        LLMGoalWriter(client) if config.goal_writer == "llm" else TemplateGoalWriter(),
        ReplayConfig(concurrency=config.concurrency, max_steps=config.max_steps),
        judge=LLMJudge(client) if config.judge == "llm" else None,
        on_done=_every_tenth(context, len(outlines), f"sessions of {shop}"),
    )
    trajs, rates, figures = traces.trajectories, traces.rates, traces.figures()
    path = write_records(
        [trajectory_record(t) for t in trajs], wh.root / TRACES_DIR / f"shop={shop}.jsonl"
    )
    usage = client.usage.as_dict() if client is not None else {}
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop},
        params={"goal_writer": config.goal_writer, "judge": config.judge, **sel.__dict__},
        metrics={**figures, **{f"llm_{k}": v for k, v in usage.items()}},
        metadata={
            "outcomes": dg.MetadataValue.json(dict(Counter(t.result.outcome for t in trajs))),
            "keep_rate_by_stratum": dg.MetadataValue.md(
                counts_to_markdown(rates.table("stratum"), "stratum", "keep rate")
            ),
            "keep_rate_by_token": dg.MetadataValue.json(rates.table("token")),
            "missing_actions": dg.MetadataValue.json(dict(rates.missing)),
            "llm_usage": dg.MetadataValue.json(usage),
            "preview": dg.MetadataValue.md(frame_to_markdown(pl.DataFrame(traces.preview()))),
        },
        rows=len(trajs),
        path=path,
    )


class StoreWalkTracesConfig(dg.Config):
    sessions_per_shop: int = Field(
        default=16,
        description=(
            "Personas per training shop that walk its storefront on their own (half with the "
            "add to cart leading back to the product page); docs/llm.md's CPU recipe."
        ),
    )
    kept_steps: int | None = Field(
        default=None,
        description="Steps of each session made examples (all by default; 12 bounds CPU training).",
    )
    max_steps: int = Field(default=40, description="Steps a session may take.")
    goal: Literal["buy", "cart", "view", "browse"] = Field(
        default="buy", description="The walks' goal (texts the evaluation never shows)."
    )
    concurrency: int = Field(default=2, description="Browser sessions at once.")
    seed: int = Field(default=0, description="Seed of the personas and their walks.")


@dg.asset(
    group_name="traces",
    partitions_def=shop_partitions,
    deps=["store_token_distribution", "markov_policy"],
    kinds={"playwright", "json"},
    description=(
        "A training shop's personas walking its storefront on their own (the Markov policy, "
        "keeping to a shopping goal the evaluation never shows) as SFT trajectories: what "
        "teaches the persona model to shop a store without a named product, to checkout."
    ),
)
def store_walk_traces(
    context: dg.AssetExecutionContext,
    config: StoreWalkTracesConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.agent.markov import MarkovModel
    from simpersona.store import StoreCatalog
    from simpersona.traces.build import write_records
    from simpersona.traces.walks import WalkConfig, walk_store

    shop = context.partition_key
    wh = warehouse.warehouse()
    if shop not in wh.shop_split()["train"]:
        raise dg.Failure(f"shop {shop} is not a training shop: walks train the persona model")
    require_partitions(wh, shop, "store_token_distribution")  # p̂_s, as the simulation draws
    _, folder = artifacts.current("markov_policy")
    shares = pl.read_parquet(wh.partition_path("store_token_distribution", shop))
    cfg = WalkConfig(
        sessions=config.sessions_per_shop, kept_steps=config.kept_steps,
        max_steps=config.max_steps, concurrency=config.concurrency, goal=config.goal,
        seed=config.seed,
    )  # fmt: skip
    records, figures = walk_store(
        StoreCatalog.from_warehouse(wh, shop),
        MarkovModel.load(folder / "markov.json"),
        dict(zip(shares["token"].cast(pl.String), shares["share"], strict=True)),
        cfg,
        wh.root / STORE_WALKS_DIR / f".work-{shop}",
    )
    path = write_records(records, wh.root / STORE_WALKS_DIR / f"shop={shop}.jsonl")
    return record(
        context,
        mlflow,
        figures,
        tags={"shop": shop, "markov_policy_version": folder.name},
        params=config.__dict__,
        rows=len(records),
        path=path,
    )


class SFTDatasetConfig(dg.Config):
    max_sessions: int = Field(
        default=3600, description="Sessions in the dataset at most (the paper: 3,600)."
    )
    seed: int = Field(default=0, description="Seed of the round-robin selection.")
    counterfactual_intent: bool = Field(
        default=True,
        description=(
            "Stage 2: a flipped-intent twin of each intent-goal step on the goal's product "
            "page (buy carts, browse leaves), so the intent, not the page, decides the reply."
        ),
    )
    store_walks: bool = Field(
        default=True,
        description="Add the training shops' store_walk_traces, where materialized.",
    )


def _sft(context, config: SFTDatasetConfig, warehouse, mlflow, stage: str) -> dg.MaterializeResult:
    from simpersona.traces.build import read_records
    from simpersona.traces.dataset import build_dataset

    wh = warehouse.warehouse()
    train = wh.shop_split()["train"]
    if not train:
        raise dg.Failure("no training shops: materialize training_sample first")
    have = [s for s in train if (wh.root / TRACES_DIR / f"shop={s}.jsonl").exists()]
    missing = sorted(set(train) - set(have))
    if not have:
        raise dg.Failure(f"no training shop has replayed_traces (training shops: {train})")
    if missing:
        context.log.warning(f"training shops without replayed_traces, left out: {missing}")
    records = [r for s in have for r in read_records(wh.root / TRACES_DIR / f"shop={s}.jsonl")]
    walks = [wh.root / STORE_WALKS_DIR / f"shop={s}.jsonl" for s in train]
    walks = [p for p in walks if config.store_walks and p.exists()]
    records += [r for p in walks for r in read_records(p)]
    path = wh.root / "sft" / f"{stage}.jsonl"
    stats = build_dataset(
        records, stage, path, config.max_sessions, config.seed,
        counterfactual=config.counterfactual_intent,
    )  # fmt: skip
    meta = stats.as_metadata()
    tokens = pl.DataFrame(
        {"token": list(stats.sessions_by_token), "sessions": list(stats.sessions_by_token.values())}
    ).sort("sessions", descending=True)
    return record(
        context,
        mlflow,
        {k: v for k, v in meta.items() if isinstance(v, int | float)},
        params={"stage": stage, "shops": have, **config.__dict__},
        artifacts=[(path, None)],
        metadata={
            "shops": dg.MetadataValue.json(have),
            "shops_missing": dg.MetadataValue.json(missing),
            "store_walk_shops": dg.MetadataValue.json([p.stem.split("=", 1)[1] for p in walks]),
            "examples_by_stratum": dg.MetadataValue.md(
                counts_to_markdown(meta["examples_by_stratum"], "stratum", "examples")
            ),
            "sessions_by_token": dg.MetadataValue.md(frame_to_markdown(tokens, 30)),
        },
        rows=stats.examples,
        path=path,
    )


@dg.asset(
    group_name="traces",
    deps=[replayed_traces, store_walk_traces],
    kinds={"json"},
    description=(
        "Stage-1 SFT dataset (chat-messages JSONL): intent-neutral goals, the persona token in "
        "the buyer-profile field, training shops only, every persona token in use represented."
    ),
)
def sft_stage1(
    context: dg.AssetExecutionContext,
    config: SFTDatasetConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    return _sft(context, config, warehouse, mlflow, "stage1")


@dg.asset(
    group_name="traces",
    deps=[replayed_traces, store_walk_traces],
    kinds={"json"},
    description=(
        "Stage-2 SFT dataset (chat-messages JSONL): goals with the intent of the buyer's "
        "stratum (A–C buy, D browse), same sessions and steps as stage 1."
    ),
)
def sft_stage2(
    context: dg.AssetExecutionContext,
    config: SFTDatasetConfig,
    warehouse: WarehouseResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    return _sft(context, config, warehouse, mlflow, "stage2")
