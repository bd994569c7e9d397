"""The policies of a population simulation on one shop (paper §3.2), built once each: the
persona Markov chains (fitted on the training shops, refused on a shop they were fitted on),
the in-sample oracle chains, and the fine-tuned persona model served on loopback while any
LLM policy runs (the same OpenAI-compatible API as vLLM in production), or an external
server's. Also each policy's resumable results folder and the agents' runtime limits."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl

from simpersona.artifacts import require_current

PERSONA_MODEL = "persona_model"
SINGLE_STAGE_MODEL = "persona_model_single_stage"
MARKOV_POLICY = "markov_policy"
# LLM policies and the model each runs: llm_single is the single-stage ablation (App. F).
LLM_POLICIES = ("llm", "nopersona", "llm_neutral", "nopersona_neutral", "llm_single")
# markov: per-token chains fitted on the training shops (out of sample on evaluation shops);
# markov_notoken: the same model without the token (all buyers' chain), its paired baseline;
# markov_oracle: chains fitted on the evaluation shop itself, an in-sample upper bound.
MARKOV_POLICIES = ("markov", "markov_notoken", "markov_oracle")
TOKENLESS = ("nopersona", "nopersona_neutral", "markov_notoken")


class InSampleError(ValueError):
    """A policy would be scored on a shop it was fitted on."""


class PolicySet:
    """Builds each policy once per materialization; serves the persona model on loopback
    while any LLM policy runs (the same OpenAI-compatible API as vLLM in production)."""

    def __init__(self, artifacts_root: str | Path | None, wh: Any, shop: str, cfg: Any) -> None:
        self.artifacts_root, self.wh, self.shop, self.cfg = artifacts_root, wh, shop, cfg
        self.served: dict[str, tuple[str, Path, Any, str]] = {}  # asset → version, folder, …
        self.model_version: str | None = None
        self.markov = None
        self.oracle = None

    def _current(self, name: str) -> tuple[str, Path]:
        assert self.artifacts_root is not None, "PolicySet without an artifacts folder"
        return require_current(self.artifacts_root, name)

    @staticmethod
    def model_asset(policy: str) -> str:
        return SINGLE_STAGE_MODEL if policy == "llm_single" else PERSONA_MODEL

    def _served(self, asset: str) -> tuple[str, Path, Any, str]:
        """(version, folder, server, base URL) of a persona model served on loopback."""
        from simpersona.llm.server import serve_in_background

        if asset not in self.served:
            version, folder = self._current(asset)
            # threads: one for the tiny model, every core for a real base (LocalModel decides)
            server = serve_in_background(folder)
            self.served[asset] = (version, folder, server, server.__enter__())
            if asset == PERSONA_MODEL:
                self.model_version = version
        return self.served[asset]

    def run_dir(self, kind: str, policy: str) -> Path:
        """`<warehouse>/<kind>/shop=<S>/<policy>[-<model version>]-<config hash>`: one
        resumable results folder per (policy, model, config), so a new model or config never
        resumes an old run. The list of policies is not part of the hash: each policy's
        agents are planned alone (paired by seed), so adding a policy resumes the others."""
        key = policy
        if policy in ("markov", "markov_notoken"):
            key = f"{policy}-{self._markov_model()[0]}"
        elif policy == "markov_oracle":
            key = f"{policy}-{self._oracle()[0]}"
        elif policy not in MARKOV_POLICIES:
            version, _ = self._current(self.model_asset(policy))
            key = f"{policy}-{version}"
        digest = hashlib.sha256(
            json.dumps(
                self.cfg.model_dump(exclude={"policies"}), sort_keys=True, default=str
            ).encode()
        ).hexdigest()[:8]
        return self.wh.root / kind / f"shop={self.shop}" / f"{key}-{digest}"

    def population_config(self, storefront=None):
        """Browser concurrency and the per-agent limits of the asset's config; with a
        storefront resource that names a URL, the agents shop there."""
        from simpersona.agent.population import PopulationConfig
        from simpersona.agent.session import RuntimeConfig

        c = self.cfg
        url = storefront.base_url if storefront is not None else ""
        return PopulationConfig(
            concurrency=c.concurrency,
            runtime=RuntimeConfig(
                max_steps=c.max_steps,
                session_timeout_s=c.session_timeout_s,
                max_invalid_actions=c.max_invalid_actions,
                **(storefront.runtime_overrides() if storefront is not None else {}),
            ),
            progress=False,
            store_url=url or None,
        )

    def policy(self, name: str):
        from simpersona.agent.llm_policy import served_llm_policy
        from simpersona.agent.markov_policy import MarkovPolicy

        if name in ("markov", "markov_notoken"):
            return MarkovPolicy(self._markov_model()[1], seed=self.cfg.seed)
        if name == "markov_oracle":
            return MarkovPolicy(self._oracle()[1], seed=self.cfg.seed)
        if name not in LLM_POLICIES:
            raise ValueError(f"unknown policy {name!r}: one of {MARKOV_POLICIES + LLM_POLICIES}")
        asset = self.model_asset(name)
        external = getattr(self.cfg, "llm_base_url", "") if asset == PERSONA_MODEL else ""
        if external:
            self.model_version, folder = self._current(asset)
            base_url, model = external.rstrip("/").removesuffix("/v1"), self.cfg.llm_model
        else:
            _, folder, _, base_url = self._served(asset)
            model = ""
        return served_llm_policy(
            base_url,
            model or folder.name,  # serve-llm names the model after its folder
            self.cfg.concurrency,
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
            client_max_tokens=self.cfg.max_tokens,
            constrained=self.cfg.guided_decoding,
        )

    def _markov_model(self):
        """(version, model) of the current markov_policy, refused when it was fitted on this
        shop: scoring a shop with chains fitted on its own buyers is in-sample."""
        from simpersona.agent.markov import MarkovModel

        if self.markov is None:
            version, folder = self._current(MARKOV_POLICY)
            fit = json.loads((folder / "fit.json").read_text())
            if self.shop in fit["fit_shops"]:
                raise InSampleError(
                    f"markov_policy {version} was fitted on shop {self.shop}: scoring it there "
                    "would be in-sample. Simulate evaluation shops (shop_split.json), or run "
                    "markov_oracle for a labelled in-sample upper bound"
                )
            self.markov = (version, MarkovModel.load(folder / "markov.json"))
        return self.markov

    def _oracle(self):
        """(version, model): per-token chains fitted on this shop's own events, the
        in-sample upper bound."""
        from simpersona.agent.markov import MarkovConfig
        from simpersona.agent.markov_fit import ShopData, fit_token_policy

        if self.oracle is None:
            labels = pl.read_parquet(
                self.wh.partition_path("persona_assignments", self.shop),
                columns=["buyer_id", "token", "stratum"],
            )
            model = fit_token_policy(
                [ShopData(self.shop, self.wh.read_events(self.shop), labels)],
                MarkovConfig(
                    smoothing=getattr(self.cfg, "markov_smoothing", 1.0),
                    sessions=getattr(self.cfg, "markov_sessions", "deepest"),
                ),
            )
            text = json.dumps(model.to_dict(), sort_keys=True)
            self.oracle = (hashlib.sha256(text.encode()).hexdigest()[:12], model)
        return self.oracle

    def persona_for(self, name: str):
        """Markov agents: the token's chain (none for markov_notoken: all buyers') with the
        goal's topics and searches; other policies: the default persona."""
        if name not in MARKOV_POLICIES:
            return None
        model = (self._oracle() if name == "markov_oracle" else self._markov_model())[1]
        with_token = name not in TOKENLESS
        return lambda plan: model.persona(
            str(plan.token) if with_token else "*",
            seed=plan.seed,
            topics=plan.topics,
            queries=plan.queries,
        )

    def close(self) -> None:
        for _, _, server, _ in self.served.values():
            server.__exit__(None, None, None)
        self.served.clear()


def agents_for(cfg: Any, policy: str) -> int:
    """Agents of `policy` per shop: the ablation count for the neutral-goal policies, the
    Markov count (when set) for the Markov ones, else the common one."""
    if policy.endswith("_neutral"):
        return int(cfg.ablation_agents_per_shop)
    if policy in MARKOV_POLICIES and getattr(cfg, "markov_agents_per_shop", None):
        return int(cfg.markov_agents_per_shop)
    return int(cfg.agents_per_shop)


def simulate_shop(
    policies: PolicySet,
    catalog: Any,
    distribution: pl.DataFrame,
    counterparts: Any,
    population_config: Any,
    on_progress: Any = None,
) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    """Each of the config's policies on one shop: agents planned from the shop's token
    distribution (paired by seed across policies), run in the browser, resumable per
    policy. Returns (one row per agent, each policy's summary). `on_progress(policy, done,
    total)` is called as agents finish; the served models are stopped at the end."""
    from simpersona.agent.plans import plan_agents
    from simpersona.agent.population import run_population

    cfg, shop = policies.cfg, policies.shop
    tables, summaries = [], {}
    try:
        for name in cfg.policies:
            n = agents_for(cfg, name)
            plans = plan_agents(
                shop, distribution, counterparts, n, name, seed=cfg.seed,
                with_token=name not in TOKENLESS,
                goal_kind="neutral" if name.endswith("_neutral") else "intent",
                sampling=cfg.sampling,
            )  # fmt: skip
            policy = policies.policy(name)
            done = [0]

            def progress(_row: Any, name: str = name, n: int = n, done: list = done) -> None:
                done[0] += 1
                if on_progress is not None:
                    on_progress(name, done[0], n)

            run = run_population(
                catalog, plans, policy, population_config,
                policies.run_dir("simulation_runs", name),
                on_done=progress, persona_for=policies.persona_for(name),
            )  # fmt: skip
            tables.append(run.table)
            summaries[name] = run.summary()
            stats = getattr(policy, "stats", None)
            if stats is not None:
                summaries[name]["llm_requests"] = stats.requests
                summaries[name]["llm_completion_tokens"] = stats.completion_tokens
    finally:
        policies.close()
    return pl.concat(tables, how="vertical_relaxed"), summaries


def by_policy(table: pl.DataFrame) -> pl.DataFrame:
    """Agents, add-to-cart, purchase and `other` rates and mean steps per policy."""
    return (
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


def run_tasks(
    policies: PolicySet, catalog: Any, tasks: list, population_config: Any, on_done: Any = None
) -> list[pl.DataFrame]:
    """The instruction-following tasks (paper §3.2, Table 4), each repeated, under each of
    the config's policies on one shop; one table of runs per policy (`on_done(policy,
    runs)` after each). The served models are stopped at the end."""
    from simpersona.agent.plans import AgentPlan
    from simpersona.agent.population import run_population
    from simpersona.evaluation.instruction import repeat_tasks

    cfg, shop = policies.cfg, policies.shop
    tables = []
    try:
        for name in cfg.policies:
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
                for t, rep, run_seed in repeat_tasks(tasks, cfg.repetitions, cfg.seed)
            ]
            run = run_population(
                catalog, plans, policies.policy(name), population_config,
                policies.run_dir("instruction_runs", name),
                persona_for=policies.persona_for(name),
            )  # fmt: skip
            tables.append(run.table)
            if on_done is not None:
                on_done(name, run.table.height)
    finally:
        policies.close()
    return tables
