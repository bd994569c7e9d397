"""Simulation stage (SPEC §11): per evaluation shop, agents sampled from the shop's persona
mix run on its storefront with each policy (persona Markov, the fine-tuned LLM, the LLM
without a persona token), and the deterministic instruction-following tasks. Thin wrappers:
the logic lives in simpersona.agent.population and simpersona.evaluation."""

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from dagster_project.assets.features import enriched_sessions
from dagster_project.assets.personas import (
    _current,
    _shop_split,
    persona_assignments,
    store_token_distribution,
)
from dagster_project.assets.traces import require_partitions, shop_session_inputs
from dagster_project.partitions import shop_partitions
from dagster_project.resources import ArtifactsResource, MLflowResource, WarehouseResource
from simpersona.markdown import counts_to_markdown, frame_to_markdown

PERSONA_MODEL = "persona_model"
LLM_POLICIES = ("llm", "nopersona", "llm_neutral", "nopersona_neutral")


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
            "Policies to run: markov (persona Markov chains fitted on the shop), llm (the "
            "fine-tuned model with the persona token), nopersona (same model, no token), and "
            "the Table-9 ablation pair llm_neutral / nopersona_neutral (neutral goals)."
        ),
    )
    agents_per_shop: int = Field(default=40, description="Agents per shop and policy.")
    ablation_agents_per_shop: int = Field(
        default=20, description="Agents per shop for the *_neutral ablation policies."
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
    markov_smoothing: float = Field(
        default=1.0,
        description="Pseudo-sessions of the stratum chain mixed into each token's Markov chain.",
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
    eval_shops_only: bool = Field(
        default=True,
        description=(
            "Refuse shops outside the evaluation split (shop_split.json); false: such a shop "
            "gets the largest evaluation share of n_tasks."
        ),
    )


def _model(artifacts: ArtifactsResource):
    """(version, folder) of the current persona model."""
    return _current(artifacts, PERSONA_MODEL)


class _Policies:
    """Builds each policy once per materialization; serves the persona model on loopback
    while any LLM policy runs (the same OpenAI-compatible API as vLLM in production)."""

    def __init__(self, artifacts: ArtifactsResource, wh, shop: str, cfg: Any) -> None:
        self.artifacts, self.wh, self.shop, self.cfg = artifacts, wh, shop, cfg
        self.server = None
        self.base_url = None
        self.model_version = None
        self.folder = None
        self.markov = None

    def run_dir(self, kind: str, policy: str) -> Path:
        """`<warehouse>/<kind>/shop=<S>/<policy>[-<model version>]-<config hash>`: one
        resumable results folder per (policy, model, config), so a new model or config never
        resumes an old run. The list of policies is not part of the hash: each policy's
        agents are planned alone (paired by seed), so adding a policy resumes the others."""
        key = policy
        if policy != "markov":
            if self.model_version is None:
                self.model_version, _ = _model(self.artifacts)
            key = f"{policy}-{self.model_version}"
        digest = hashlib.sha256(
            json.dumps(
                self.cfg.model_dump(exclude={"policies"}), sort_keys=True, default=str
            ).encode()
        ).hexdigest()[:8]
        return self.wh.root / kind / f"shop={self.shop}" / f"{key}-{digest}"

    def population_config(self):
        """Browser concurrency and the per-agent limits of the asset's config."""
        from simpersona.agent.population import PopulationConfig
        from simpersona.agent.runtime import RuntimeConfig

        c = self.cfg
        return PopulationConfig(
            concurrency=c.concurrency,
            runtime=RuntimeConfig(
                max_steps=c.max_steps,
                session_timeout_s=c.session_timeout_s,
                max_invalid_actions=c.max_invalid_actions,
            ),
            progress=False,
        )

    def policy(self, name: str):
        from simpersona.agent.llm_policy import LLMPolicy
        from simpersona.agent.markov import MarkovConfig, MarkovModel, MarkovPolicy
        from simpersona.llm.client import LLMClient, LLMConfig
        from simpersona.llm.server import serve_in_background

        if name == "markov":
            if self.markov is None:
                labels = pl.read_parquet(
                    self.wh.partition_path("persona_assignments", self.shop),
                    columns=["buyer_id", "token", "stratum"],
                ).with_columns(pl.col("token").cast(pl.String))
                self.markov = MarkovModel.fit(
                    self.wh.read_events(self.shop),
                    labels,
                    label_column="token",
                    parents=token_strata(labels),
                    config=MarkovConfig(smoothing=getattr(self.cfg, "markov_smoothing", 1.0)),
                )
            return MarkovPolicy(self.markov, seed=self.cfg.seed)
        if name not in LLM_POLICIES:
            raise dg.Failure(f"unknown policy {name!r}: markov or one of {LLM_POLICIES}")
        if self.server is None:
            self.model_version, self.folder = _model(self.artifacts)
            self.server = serve_in_background(self.folder, threads=1)
            self.base_url = self.server.__enter__()
        client = LLMClient(
            LLMConfig(
                base_url=self.base_url + "/v1",
                model=self.folder.name,  # serve-llm names the model after its folder
                max_retries=2,
                concurrency=self.cfg.concurrency,
                max_tokens=self.cfg.max_tokens,
            )
        )
        return LLMPolicy(
            client,
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
            constrained=self.cfg.guided_decoding,
        )

    def persona_for(self, name: str):
        if name != "markov":
            return None
        model = self.markov
        return lambda plan: model.persona(str(plan.token), seed=plan.seed)

    def close(self) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None


def token_strata(labels: pl.DataFrame) -> dict[str, str]:
    """token → the modal funnel stratum of its buyers (ties: the deeper stratum): the
    parent a token's Markov chain backs off to."""
    modal = (
        labels.group_by("token", "stratum")
        .len()
        .sort(["token", "len", "stratum"], descending=[False, True, False])
        .group_by("token", maintain_order=True)
        .first()
    )
    return dict(zip(modal["token"].to_list(), modal["stratum"].to_list(), strict=True))


def _check_shop(context, wh, shop: str, eval_only: bool) -> None:
    split = _shop_split(wh)
    if eval_only and shop in split.get("train", []):
        raise dg.Failure(
            f"shop {shop} is a training shop (shop_split.json): its sessions taught the "
            "persona model; simulate evaluation shops, or set eval_shops_only=false"
        )
    require_partitions(wh, shop, ("store_token_distribution",))


def _counterparts(wh, shop: str):
    from simpersona.agent.population import counterparts_by_token
    from simpersona.traces.build import TraceSelection, select_outlines

    sessions, assignments, cats = shop_session_inputs(wh, shop)
    sel = TraceSelection(per_shop=2_000, strata=("A", "B", "C", "D", "E"), min_events=1)
    return counterparts_by_token(select_outlines(sessions, assignments, cats, sel))


@dg.asset(
    group_name="simulation",
    partitions_def=shop_partitions,
    deps=[
        enriched_sessions,
        persona_assignments,
        store_token_distribution,
        dg.AssetKey(PERSONA_MODEL),
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
) -> dg.MaterializeResult:
    from simpersona.agent.population import plan_agents, run_population
    from simpersona.lake import atomic_write_parquet
    from simpersona.store import StoreCatalog

    shop = context.partition_key
    wh = warehouse.warehouse()
    _check_shop(context, wh, shop, config.eval_shops_only)
    dist = pl.read_parquet(wh.partition_path("store_token_distribution", shop))
    cps = _counterparts(wh, shop)
    catalog = StoreCatalog.from_warehouse(wh, shop)
    policies = _Policies(artifacts, wh, shop, config)
    pop_cfg = policies.population_config()
    tables, summaries = [], {}
    t0 = time.perf_counter()
    try:
        for name in config.policies:
            neutral = name.endswith("_neutral")
            n = config.ablation_agents_per_shop if neutral else config.agents_per_shop
            plans = plan_agents(
                shop,
                dist,
                cps,
                n,
                name,
                seed=config.seed,
                with_token=not name.startswith("nopersona"),
                goal_kind="neutral" if neutral else "intent",
            )
            policy = policies.policy(name)
            run_dir = policies.run_dir("simulation_runs", name)
            done = [0]

            def progress(_row, name=name, n=n, done=done) -> None:
                done[0] += 1
                if done[0] % 10 == 0 or done[0] == n:
                    context.log.info(f"{shop} {name}: {done[0]}/{n} agents done")

            run = run_population(
                catalog,
                plans,
                policy,
                pop_cfg,
                run_dir,
                on_done=progress,
                persona_for=policies.persona_for(name),
            )
            tables.append(run.table)
            summaries[name] = run.summary()
            stats = getattr(policy, "stats", None)
            if stats is not None:
                summaries[name]["llm_requests"] = stats.requests
                summaries[name]["llm_completion_tokens"] = stats.completion_tokens
    finally:
        policies.close()
    table = pl.concat(tables, how="vertical_relaxed")
    path = atomic_write_parquet(table, wh.partition_path("population_simulation", shop))
    seconds = time.perf_counter() - t0
    by_policy = (
        table.group_by("policy")
        .agg(
            pl.len().alias("agents"),
            pl.col("add_to_cart").mean().round(3).alias("atc_rate"),
            pl.col("purchase").mean().round(3).alias("purchase_rate"),
            (pl.col("outcome") == "other").mean().round(3).alias("other_rate"),
            pl.col("steps").mean().round(2).alias("mean_steps"),
        )
        .sort("policy")
    )
    metrics = {
        f"{k}_{p}": float(v)
        for p, s in summaries.items()
        for k, v in s.items()
        if isinstance(v, int | float)
    }
    with mlflow.run_for(context, {"shop": shop, "model_version": str(policies.model_version)}) as r:
        r.log_params(config.model_dump())
        r.log_metrics({**metrics, "seconds": seconds})
    return dg.MaterializeResult(
        metadata={
            "agents": table.height,
            "seconds": round(seconds, 1),
            "model_version": str(policies.model_version),
            "by_policy": dg.MetadataValue.md(frame_to_markdown(by_policy)),
            "outcomes": dg.MetadataValue.md(
                counts_to_markdown(
                    dict(table.group_by("outcome").len().iter_rows()), "outcome", "agents"
                )
            ),
            "runs": dg.MetadataValue.json(summaries),
            "preview": dg.MetadataValue.md(
                frame_to_markdown(
                    table.select(
                        "agent_id",
                        "policy",
                        "token",
                        "stratum",
                        "intent",
                        "steps",
                        "add_to_cart",
                        "purchase",
                        "outcome",
                    ).head(10)
                )  # fmt: skip
            ),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    group_name="simulation",
    partitions_def=shop_partitions,
    deps=[enriched_sessions, persona_assignments, dg.AssetKey(PERSONA_MODEL)],
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
    from simpersona.agent.population import (
        AgentPlan,
        results_frame,
        run_population,
    )
    from simpersona.evaluation.instruction import InstructionConfig as TaskConfig
    from simpersona.evaluation.instruction import (
        instruction_table,
        repeat_tasks,
        score_runs,
        shop_task_quota,
        tasks_frame,
        tasks_from_sessions,
    )
    from simpersona.lake import atomic_write_parquet
    from simpersona.store import StoreCatalog

    shop = context.partition_key
    wh = warehouse.warehouse()
    eval_shops = sorted(_shop_split(wh).get("eval", []))
    try:
        # The paper's 70 tasks are a total: this shop's share depends only on the config
        # and the split (docs/evaluation.md, "Instruction following").
        quota = shop_task_quota(config.n_tasks, shop, eval_shops, config.eval_shops_only)
    except ValueError as exc:
        raise dg.Failure(f"{exc}; or set eval_shops_only=false") from None
    require_partitions(wh, shop, ("enriched_sessions", "persona_assignments"))
    sessions = pl.read_parquet(wh.partition_path("enriched_sessions", shop))
    assignments = pl.read_parquet(
        wh.partition_path("persona_assignments", shop),
        columns=["shop_id", "buyer_id", "token", "stratum"],
    )
    task_cfg = TaskConfig(n_tasks=quota, repetitions=config.repetitions, seed=config.seed)
    tasks = tasks_from_sessions(sessions, task_cfg, assignments)
    if quota > 0 and not tasks:
        raise dg.Failure(f"shop {shop}: no session gives a 3-27 step cart/checkout/purchase task")
    if len(tasks) < quota:
        context.log.warning(
            f"{shop}: {len(tasks)} tasks of its quota of {quota} (too few eligible sessions)"
        )
    scored = [score_runs(tasks, results_frame([]))]
    t0 = time.perf_counter()
    if tasks:
        catalog = StoreCatalog.from_warehouse(wh, shop)
        policies = _Policies(artifacts, wh, shop, config)
        pop_cfg = policies.population_config()
        try:
            for name in config.policies:
                plans = [
                    AgentPlan(
                        agent_id=f"{shop}-{name}-task-{t.task_id}-{rep}",
                        shop_id=shop,
                        policy=name,
                        token=t.token if name != "nopersona" else None,
                        stratum=t.stratum,
                        intent="task",
                        goal=t.text,
                        task_id=t.task_id,
                        task_kind=t.kind,
                        seed=run_seed,
                    )
                    for t, rep, run_seed in repeat_tasks(tasks, config.repetitions, config.seed)
                ]
                policy = policies.policy(name)
                run_dir = policies.run_dir("instruction_runs", name)
                run = run_population(
                    catalog, plans, policy, pop_cfg, run_dir, persona_for=policies.persona_for(name)
                )
                scored.append(score_runs(tasks, run.table))
                context.log.info(f"{shop} {name}: {run.table.height} task runs")
        finally:
            policies.close()
    table = pl.concat(scored, how="vertical_relaxed")
    path = atomic_write_parquet(table, wh.partition_path("instruction_following", shop))
    atomic_write_parquet(tasks_frame(tasks), wh.partition_path("instruction_tasks", shop))
    seconds = time.perf_counter() - t0
    summary = pl.concat(
        [
            instruction_table(table.filter(pl.col("policy") == p)).with_columns(
                pl.lit(p).alias("policy")
            )
            for p in config.policies
        ]
    )
    with mlflow.run_for(context, {"shop": shop}) as r:
        r.log_params({**config.model_dump(), "tasks": len(tasks), "quota": quota})
        r.log_metrics({"runs": table.height, "seconds": seconds})
    return dg.MaterializeResult(
        metadata={
            "tasks": len(tasks),
            "quota": quota,
            "eval_shops": len(eval_shops),
            "runs": table.height,
            "seconds": round(seconds, 1),
            "by_kind": dg.MetadataValue.md(frame_to_markdown(summary)),
            "path": dg.MetadataValue.path(str(path)),
        }
    )


class EvaluationReportConfig(dg.Config):
    shops: list[str] = Field(
        default=[], description="Shops to evaluate (default: the evaluation split)."
    )
    report_dir: str = Field(
        default="", description="Output folder (default: <artifacts>/evaluation_report/<ts>)."
    )


def _read_shops(wh, table: str, shops: list[str]) -> pl.DataFrame:
    frames = [
        pl.read_parquet(wh.partition_path(table, s))
        for s in shops
        if wh.partition_path(table, s).exists()
    ]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _add_population_recovery(ev, artifacts: ArtifactsResource) -> str | None:
    """App. B beside the simulation: the current codebook's recovery figures (JS of the
    stratum mix per store, R² of feature means), table and plots, when distribution_recovery
    has run for it. Returns the codebook version."""
    try:
        version, _ = _current(artifacts, "persona_codebook")
    except dg.Failure:
        return None
    folder = artifacts.path("distribution_recovery", version)
    if (folder / "figures.json").exists():
        figs = json.loads((folder / "figures.json").read_text())
        ev.figures.update({k: v for k, v in figs.items() if not k.startswith("kmeans_")})
    if (folder / "store_js.csv").exists():
        ev.tables["population_recovery"] = pl.read_csv(folder / "store_js.csv")
    for name in ("stratum_recovery", "feature_recovery"):
        if (folder / f"{name}.png").exists():
            ev.plots[f"Population recovery: {name.replace('_', ' ')}"] = folder / f"{name}.png"
    return version


@dg.asset(
    group_name="simulation",
    deps=[population_simulation, instruction_following, "distribution_recovery"],
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
    from simpersona.evaluation import real_buyer_outcomes, render_report
    from simpersona.evaluation.suite import evaluate

    wh = warehouse.warehouse()
    shops = list(config.shops) or _shop_split(wh).get("eval", [])
    shops = [s for s in shops if wh.partition_path("population_simulation", s).exists()]
    if not shops:
        raise dg.Failure("no evaluation shop has a population_simulation: materialize it first")
    agents = _read_shops(wh, "population_simulation", shops)
    runs = _read_shops(wh, "instruction_following", shops)
    assignments = _read_shops(wh, "persona_assignments", shops)
    features = _read_shops(wh, "buyer_features", shops)
    real = real_buyer_outcomes(assignments, features)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = config.report_dir or str(artifacts.path("evaluation_report", stamp))
    ev = evaluate(real, assignments, agents, runs if runs.height else None, (), f"{out}/plots")
    codebook_version = _add_population_recovery(ev, artifacts)
    policies = sorted(agents["policy"].unique().to_list())
    try:
        model_version, _ = _model(artifacts)
    except dg.Failure:
        model_version = None
    run_config = {
        "shops": shops,
        "policies": policies,
        "agents": agents.height,
        "instruction_runs": runs.height,
        "persona_model": model_version,
        "persona_codebook": codebook_version,
        "dagster_run_id": context.run.run_id,
    }
    html, md = render_report(ev.figures, ev.tables, ev.plots, run_config, out)
    headline = ev.headline(policies)
    with mlflow.run_for(context) as r:
        r.log_params({k: str(v) for k, v in run_config.items()})
        r.log_metrics({k: v for k, v in headline.items() if v is not None})
        r.log_artifact(html)
        r.log_artifact(md)
    atomic_json = json.dumps({"html": str(html), "md": str(md), "figures": headline}, indent=2)
    from simpersona.lake import atomic_write_text

    atomic_write_text(atomic_json, wh.root / "evaluation_report.json")
    return dg.MaterializeResult(
        metadata={
            "report_html": dg.MetadataValue.path(str(html)),
            "report_md": dg.MetadataValue.path(str(md)),
            "shops": len(shops),
            "agents": agents.height,
            "headline": dg.MetadataValue.json(headline),
            "figures": dg.MetadataValue.json(
                {
                    k: round(float(v), 6)
                    for k, v in ev.figures.items()
                    if isinstance(v, int | float) and math.isfinite(v)
                }
            ),
            "report": dg.MetadataValue.md(Path(md).read_text()[:20_000]),
        }
    )
