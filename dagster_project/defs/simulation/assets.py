"""Simulation stage (paper §3.2): per evaluation shop, agents sampled from the shop's persona
mix run on its storefront with each policy (persona Markov, the fine-tuned LLM, the LLM
without a persona token), and the deterministic instruction-following tasks. Thin wrappers:
the logic lives in simpersona.agent.population and simpersona.evaluation."""

import hashlib
import json
import time
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from dagster_project.defs.traces.assets import shop_session_inputs
from dagster_project.partitions import shop_partitions
from dagster_project.record import record
from dagster_project.resources import (
    ArtifactsResource,
    MLflowResource,
    StorefrontResource,
    WarehouseResource,
    require_partitions,
)
from simpersona.agent.policy_set import (
    MARKOV_POLICY,
    PERSONA_MODEL,
    SINGLE_STAGE_MODEL,
    PolicySet,
)
from simpersona.markdown import counts_to_markdown, frame_to_markdown


def _max_invalid_actions():
    """The runtime's tolerance of invalid actions, one field of both agent-run configs."""
    return Field(
        default=0,
        description=(
            "Invalid actions (unparseable, or naming no element on the page) an agent may "
            "make, each reported back in its progress log, before its session ends as "
            "`other`. 0: the first ends it, as in the paper."
        ),
    )


class SimulationConfig(dg.Config):
    policies: list[str] = Field(
        default=["markov", "llm", "nopersona"],
        description=(
            "Policies to run: markov (per-token Markov chains fitted on the training shops), "
            "markov_notoken (the same chains without the token), markov_oracle (chains fitted "
            "on this shop: an in-sample upper bound, labelled so), llm (the fine-tuned model "
            "with the persona token), nopersona (same model, no token), and the Table-9 "
            "ablation pair llm_neutral / nopersona_neutral (neutral goals)."
        ),
    )
    agents_per_shop: int = Field(default=40, description="Agents per shop and policy.")
    markov_agents_per_shop: int = Field(
        default=0,
        description=(
            "Agents per shop for the Markov policies (cheap: no model to run), so their token "
            "effect can be sized to be decided; 0: agents_per_shop. Agent i is the same "
            "person in every policy, so the first agents_per_shop stay paired with the LLM's."
        ),
    )
    ablation_agents_per_shop: int = Field(
        default=20, description="Agents per shop for the *_neutral ablation policies."
    )
    sampling: Literal["mix", "strata"] = Field(
        default="mix",
        description=(
            "How agents draw their token: mix (from the shop's p̂_s, the paper's population) "
            "or strata (a funnel stratum uniformly, then p̂_s within it: enough agents of rare "
            "buyer types for the per-stratum alignment; per-cell figures stay unbiased)."
        ),
    )
    concurrency: int = Field(default=4, description="Browser sessions at once.")
    max_steps: int = Field(default=30, description="Steps per agent (paper: 30).")
    session_timeout_s: float = Field(default=300.0, description="Wall-clock limit per agent.")
    max_invalid_actions: int = _max_invalid_actions()
    temperature: float = Field(default=0.7, description="LLM sampling temperature.")
    max_tokens: int = Field(default=160, description="LLM reply budget per step (tokens).")
    guided_decoding: bool = Field(
        default=True,
        description=(
            "Send each page's action schema as the response format (vLLM-style guided "
            "decoding): replies are well-formed actions on real elements. False: free text."
        ),
    )
    seed: int = Field(default=0, description="Seed of the agents' draws and sampling.")
    llm_base_url: str = Field(
        default="",
        description=(
            "An OpenAI-compatible endpoint already serving the current persona model (vLLM "
            "in production, docs/deploy.md); empty: serve it here with serve-llm. The "
            "single-stage ablation is always served here."
        ),
    )
    llm_model: str = Field(
        default="", description="The model name that endpoint serves (default: the folder's)."
    )
    markov_smoothing: float = Field(
        default=1.0,
        description="markov_oracle: pseudo-sessions of the stratum chain mixed into each "
        "token's chain (markov uses the markov_policy asset's own setting).",
    )
    markov_sessions: Literal["all", "deepest"] = Field(
        default="deepest",
        description="markov_oracle: the sessions its chains are fitted on (as markov_policy).",
    )
    eval_shops_only: bool = Field(
        default=True, description="Refuse shops of the training split (they taught the model)."
    )


class InstructionConfig(dg.Config):
    policies: list[str] = Field(
        default=["markov", "llm", "nopersona"], description="Policies given the tasks."
    )
    n_tasks: int = Field(
        default=70,
        description=(
            "Tasks in total over the evaluation shops (paper: 70); each shop takes its share: "
            "n_tasks // m, plus one for the first n_tasks % m of the sorted shops (m shops)."
        ),
    )
    repetitions: int = Field(default=10, description="Runs per task (paper: 10).")
    concurrency: int = Field(default=4, description="Browser sessions at once.")
    max_steps: int = Field(default=30, description="Steps per run.")
    session_timeout_s: float = Field(default=300.0, description="Wall-clock limit per run.")
    max_invalid_actions: int = _max_invalid_actions()
    temperature: float = Field(default=0.7, description="LLM sampling temperature.")
    max_tokens: int = Field(default=160, description="LLM reply budget per step (tokens).")
    guided_decoding: bool = Field(
        default=True, description="Guided decoding with each page's action schema."
    )
    seed: int = Field(default=0, description="Seed of the task order and sampling.")
    llm_base_url: str = Field(
        default="", description="As population_simulation's: an endpoint serving the model."
    )
    llm_model: str = Field(default="", description="The model name that endpoint serves.")
    eval_shops_only: bool = Field(
        default=True,
        description=(
            "Refuse shops outside the evaluation split (shop_split.json); false: such a shop "
            "gets the largest evaluation share of n_tasks."
        ),
    )


def _shop_data(wh, shop: str):
    """A training shop's events, buyer labels and catalogue for the Markov fit."""
    from simpersona.agent.markov_fit import ShopData

    require_partitions(wh, shop, "persona_assignments")
    labels = pl.read_parquet(
        wh.partition_path("persona_assignments", shop), columns=["buyer_id", "token", "stratum"]
    )
    products, collections = (
        wh.read_partition(t, shop) if wh.has_partition(t, shop) else None
        for t in ("products", "collections")
    )
    return ShopData(shop, wh.read_events(shop), labels, products, collections)


class MarkovPolicyConfig(dg.Config):
    smoothing: float = Field(
        default=1.0,
        description=(
            "Pseudo-sessions of the parent chain mixed into each token's chain (back-off: "
            "token → its funnel stratum → all buyers)."
        ),
    )
    sessions: Literal["all", "deepest"] = Field(
        default="deepest",
        description=(
            "Sessions that shape the chains: all, or per buyer its deepest (furthest funnel "
            "step): an agent plays one buyer in one session, compared with buyers who ever "
            "carted or bought."
        ),
    )


@dg.asset(
    group_name="simulation",
    deps=["persona_assignments", "enriched_sessions", dg.AssetKey("catalog")],
    kinds={"json", "mlflow"},
    description=(
        "The persona Markov policy: per-token transition chains over page kinds and actions, "
        "pooled over the training shops only (back-off to the token's stratum, then to all "
        "buyers), so it is scored out of sample on the evaluation shops; versioned, with the "
        "shops it was fitted on."
    ),
)
def markov_policy(
    context: dg.AssetExecutionContext,
    config: MarkovPolicyConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.agent.markov import MarkovConfig
    from simpersona.agent.markov_fit import fit_token_policy
    from simpersona.lake import atomic_write_text

    wh = warehouse.warehouse()
    split = wh.shop_split()
    train = sorted(split.get("train", []))
    if not train:
        raise dg.Failure("no training shops in shop_split.json: materialize training_sample first")
    data = [_shop_data(wh, shop) for shop in train]
    model = fit_token_policy(
        data, MarkovConfig(smoothing=config.smoothing, sessions=config.sessions)
    )
    text = json.dumps(model.to_dict(), indent=1, sort_keys=True)
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    staged = artifacts.staging_folder(MARKOV_POLICY, version)
    fit = {
        "fit_shops": train,
        "eval_shops": sorted(split.get("eval", [])),
        "tokens": len(model.labels),
        "buyers": model.overall.buyers,
        "sessions": model.overall.sessions,
        "smoothing": config.smoothing,
        "fitted_on": config.sessions,
    }
    atomic_write_text(text, staged / "markov.json")
    atomic_write_text(json.dumps(fit, indent=2) + "\n", staged / "fit.json")
    folder = artifacts.publish(MARKOV_POLICY, version, staged)
    return record(
        context,
        mlflow,
        {k: fit[k] for k in ("tokens", "buyers", "sessions")},
        tags={"markov_policy.version": version},
        params={"fit_shops": train, "smoothing": config.smoothing, "sessions": config.sessions},
        metadata={"version": version, "fit_shops": dg.MetadataValue.json(train)},
        path=folder,
    )


def _check_shop(context, wh, shop: str, eval_only: bool) -> None:
    split = wh.shop_split()
    if eval_only and shop in split.get("train", []):
        raise dg.Failure(
            f"shop {shop} is a training shop (shop_split.json): its sessions taught the "
            "persona model; simulate evaluation shops, or set eval_shops_only=false"
        )
    require_partitions(wh, shop, "store_token_distribution")


def _counterparts(wh, shop: str):
    from simpersona.agent.plans import counterparts_by_token
    from simpersona.traces.build import TraceSelection, select_outlines

    sessions, assignments, cats = shop_session_inputs(wh, shop)
    sel = TraceSelection(per_shop=2_000, strata=("A", "B", "C", "D", "E"), min_events=1)
    return counterparts_by_token(select_outlines(sessions, assignments, cats, sel))


@dg.asset(
    group_name="simulation",
    partitions_def=shop_partitions,
    deps=[
        "enriched_sessions",
        "persona_assignments",
        "store_token_distribution",
        markov_policy,
        dg.AssetKey(PERSONA_MODEL),
        dg.AssetKey(SINGLE_STAGE_MODEL),
    ],
    kinds={"playwright", "parquet"},
    description=(
        "Agents drawn from the shop's persona mix p̂_s(k) run on its storefront with each "
        "policy; one row per agent: token, stratum, intent, actions, add-to-cart, checkout, "
        "purchase, outcome, error, steps, seconds. Resumable: finished agents are kept."
    ),
)
def population_simulation(
    context: dg.AssetExecutionContext,
    config: SimulationConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
    storefront: StorefrontResource,
) -> dg.MaterializeResult:
    from simpersona.agent.policy_set import by_policy, simulate_shop
    from simpersona.lake import atomic_write_parquet
    from simpersona.store import StoreCatalog

    shop = context.partition_key
    wh = warehouse.warehouse()
    _check_shop(context, wh, shop, config.eval_shops_only)
    policies = PolicySet(artifacts.root, wh, shop, config)
    if storefront.base_url:
        context.log.info(f"agents shop at {storefront.base_url}, not the served storefront")

    def progress(policy: str, done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            context.log.info(f"{shop} {policy}: {done}/{total} agents done")

    inputs = (
        StoreCatalog.from_warehouse(wh, shop),
        pl.read_parquet(wh.partition_path("store_token_distribution", shop)),
        _counterparts(wh, shop),
        policies.population_config(storefront),
    )
    t0 = time.perf_counter()
    table, summaries = simulate_shop(policies, *inputs, on_progress=progress)
    path = atomic_write_parquet(table, wh.partition_path("population_simulation", shop))
    seconds = time.perf_counter() - t0
    metrics = {
        f"{k}_{p}": float(v)
        for p, s in summaries.items()
        for k, v in s.items()
        if isinstance(v, int | float)
    }
    preview = table.select(
        "agent_id", "policy", "token", "stratum", "intent", "steps", "add_to_cart", "purchase",
        "outcome",
    ).head(10)  # fmt: skip
    outcomes = dict(table.group_by("outcome").len().iter_rows())
    return record(
        context,
        mlflow,
        {"agents": table.height, "seconds": round(seconds, 1)},
        tags={"shop": shop, "model_version": str(policies.model_version)},
        params=config.model_dump(),
        metrics={**metrics, "seconds": seconds},
        metadata={
            "model_version": str(policies.model_version),
            "by_policy": dg.MetadataValue.md(frame_to_markdown(by_policy(table))),
            "outcomes": dg.MetadataValue.md(counts_to_markdown(outcomes, "outcome", "agents")),
            "runs": dg.MetadataValue.json(summaries),
            "preview": dg.MetadataValue.md(frame_to_markdown(preview)),
        },
        path=path,
    )


def _shop_tasks(wh, shop: str, config: "InstructionConfig", quota: int) -> list:
    """The shop's instruction tasks (its quota of them) from its real sessions."""
    from simpersona.evaluation.instruction import InstructionConfig as TaskConfig
    from simpersona.evaluation.instruction import tasks_from_sessions

    sessions = pl.read_parquet(wh.partition_path("enriched_sessions", shop))
    assignments = pl.read_parquet(
        wh.partition_path("persona_assignments", shop),
        columns=["shop_id", "buyer_id", "token", "stratum"],
    )
    task_cfg = TaskConfig(n_tasks=quota, repetitions=config.repetitions, seed=config.seed)
    return tasks_from_sessions(sessions, task_cfg, assignments)


@dg.asset(
    group_name="simulation",
    partitions_def=shop_partitions,
    deps=["enriched_sessions", "persona_assignments", dg.AssetKey(PERSONA_MODEL)],
    kinds={"playwright", "parquet"},
    description=(
        "Instruction following (Table 4): deterministic tasks derived from the shop's "
        "sessions (3-27 navigation actions; cart, checkout and purchase tasks), the shop's "
        "share of `n_tasks` over the evaluation shops, each run `repetitions` times per "
        "policy; one row per run with the checker's verdict (path, product, quantity, end "
        "state) read from the store's events."
    ),
)
def instruction_following(
    context: dg.AssetExecutionContext,
    config: InstructionConfig,
    warehouse: WarehouseResource,
    artifacts: ArtifactsResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from simpersona.agent.policy_set import run_tasks
    from simpersona.agent.population import results_frame
    from simpersona.evaluation.instruction import shop_task_quota, tasks_frame
    from simpersona.evaluation.instruction_check import instruction_table, score_runs
    from simpersona.lake import atomic_write_parquet
    from simpersona.store import StoreCatalog

    shop = context.partition_key
    wh = warehouse.warehouse()
    eval_shops = sorted(wh.shop_split().get("eval", []))
    try:
        # The paper's 70 tasks are a total: this shop's share depends only on the config
        # and the split (docs/evaluation.md, "Instruction following").
        quota = shop_task_quota(config.n_tasks, shop, eval_shops, config.eval_shops_only)
    except ValueError as exc:
        raise dg.Failure(f"{exc}; or set eval_shops_only=false") from None
    wh = warehouse.require(shop, "enriched_sessions", "persona_assignments")
    tasks = _shop_tasks(wh, shop, config, quota)
    if quota > 0 and not tasks:
        raise dg.Failure(f"shop {shop}: no session gives a 3-27 step cart/checkout/purchase task")
    if len(tasks) < quota:
        context.log.warning(
            f"{shop}: {len(tasks)} tasks of its quota of {quota} (too few eligible sessions)"
        )
    t0 = time.perf_counter()
    runs = []
    if tasks:
        policies = PolicySet(artifacts.root, wh, shop, config)
        runs = run_tasks(
            policies, StoreCatalog.from_warehouse(wh, shop), tasks,
            policies.population_config(),
            on_done=lambda name, n: context.log.info(f"{shop} {name}: {n} task runs"),
        )  # fmt: skip
    scored = [score_runs(tasks, t) for t in [results_frame([]), *runs]]
    table = pl.concat(scored, how="vertical_relaxed")
    path = atomic_write_parquet(table, wh.partition_path("instruction_following", shop))
    atomic_write_parquet(tasks_frame(tasks), wh.partition_path("instruction_tasks", shop))
    seconds = time.perf_counter() - t0
    summary = pl.concat(
        instruction_table(table.filter(pl.col("policy") == p)).with_columns(policy=pl.lit(p))
        for p in config.policies
    )
    return record(
        context,
        mlflow,
        {"tasks": len(tasks), "quota": quota, "eval_shops": len(eval_shops)},
        tags={"shop": shop},
        params={**config.model_dump(), "tasks": len(tasks), "quota": quota},
        metrics={"runs": table.height, "seconds": seconds},
        metadata={
            "runs": table.height,
            "seconds": round(seconds, 1),
            "by_kind": dg.MetadataValue.md(frame_to_markdown(summary)),
        },
        path=path,
    )
