"""Run the pipeline in-process against a persistent Dagster instance (the CLI and the demo
use this; the web UI and daemon use the same definitions)."""

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import polars as pl

from dagster_project import selections
from dagster_project.definitions import all_assets
from dagster_project.defs.simulation.assets import SimulationConfig
from dagster_project.partitions import day_partitions, shop_day_key, shop_partitions
from dagster_project.resources import default_resources
from simpersona.agent.policy import POLICIES
from simpersona.agent.policy_set import LLM_POLICIES
from simpersona.errors import describe
from simpersona.lake import Lake, sweep_temp_files
from simpersona.processes import process_alive

# The instance's settings when this project creates it: storage under its folder (Dagster's
# defaults) and no usage statistics (nothing here may call out; edit the file to opt in).
DAGSTER_YAML = """\
# Created by simpersona: storage under this folder (Dagster's defaults).
telemetry:
  enabled: false
"""


def dagster_instance(home: str | os.PathLike[str] | None = None) -> dg.DagsterInstance:
    """The project's Dagster instance: $DAGSTER_HOME, else `data/dagster_home` (created).
    Runs of this machine that a killed process left STARTED are marked failed first."""
    if home is None and os.environ.get("DAGSTER_HOME"):
        instance = dg.DagsterInstance.get()
    else:
        path = Path(home or os.environ.get("SIMPERSONA_DATA_DIR", "data")) / "dagster_home"
        if home is not None:
            path = Path(home)
        path = path.resolve()
        path.mkdir(parents=True, exist_ok=True)
        # an empty dagster.yaml: the defaults (storage under this folder), said once, here,
        # instead of Dagster's notice on every command
        config = path / "dagster.yaml"
        if not config.exists():
            config.write_text(DAGSTER_YAML)
        os.environ["DAGSTER_HOME"] = str(path)
        instance = dg.DagsterInstance.get()
    fail_interrupted_runs(instance)
    return instance


# In-process runs carry the process that runs them, so that the next command can tell a
# run whose process was killed (it stays STARTED for ever) from one still going.
PID_TAG, HOST_TAG = "simpersona/pid", "simpersona/host"
_OPEN = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]


def run_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def fail_interrupted_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the open runs this machine started in-process whose process is gone;
    returns their run ids. Runs of the daemon or of other machines are left to Dagster."""
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_OPEN)):
        pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
        if not pid or host != socket.gethostname() or process_alive(int(pid)):
            continue
        instance.report_run_failed(
            run, f"interrupted: the process that ran it (pid {pid}) is gone (killed?)"
        )
        failed.append(run.run_id)
    return failed


def register_partitions(instance: dg.DagsterInstance, lake: Lake) -> tuple[list[str], list[str]]:
    """Add the lake's shops and days as dynamic partitions; returns the newly added ones."""
    shops, days = lake.shops(), sorted({d for s in lake.shops() for d in lake.dates(s)})
    new_shops = sorted(set(shops) - set(instance.get_dynamic_partitions(shop_partitions.name)))
    new_days = sorted(set(days) - set(instance.get_dynamic_partitions(day_partitions.name)))
    if new_shops:
        instance.add_dynamic_partitions(shop_partitions.name, new_shops)
    if new_days:
        instance.add_dynamic_partitions(day_partitions.name, new_days)
    return new_shops, new_days


@dataclass
class IngestRun:
    partitions: int = 0
    catalogs: int = 0
    rows_read: int = 0
    rows_valid: int = 0
    rows_rejected: int = 0
    rows_valid_by_shop: dict[str, int] = field(default_factory=dict)
    rows_read_by_shop: dict[str, int] = field(default_factory=dict)
    rows_rejected_by_shop: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # (shop, date or None for the catalog, one-line error) of each partition that failed
    failures: list[tuple[str, str | None, str]] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        return {
            "ingest_partitions": self.partitions,
            "ingest_shops": self.catalogs,
            "ingest_rows_read": self.rows_read,
            "ingest_rows_valid": self.rows_valid,
            "ingest_rows_rejected": self.rows_rejected,
            "ingest_reject_share": round(self.rows_rejected / self.rows_read, 6)
            if self.rows_read
            else 0.0,
            "ingest_seconds": round(self.seconds, 2),
            "ingest_failed_partitions": len(self.failures),
        }


class IngestionFailed(RuntimeError):
    """Some partitions failed; the others were ingested. `run` holds what was done."""

    def __init__(self, run: IngestRun) -> None:
        self.run = run
        lines = "; ".join(
            f"shop={shop}" + (f" date={date}" if date else " catalog") + f": {msg}"
            for shop, date, msg in run.failures
        )
        super().__init__(f"{len(run.failures)} partition(s) failed: {lines}")


# In-process runs print nothing to the console: their callers report failures in one line
# (simpersona.errors) and warnings themselves; full logs stay in the instance (UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _materialize(
    selection: list[str], instance, partition_key=None, resources=None, run_config=None
):
    # dg.materialize loads the definitions with the defs-state storage of the current
    # context, which is whatever instance was entered last in this process; when that one
    # is gone, loading fails ("undefined DagsterInstance weakref"). Use this run's instance.
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(instance.defs_state_storage if instance is not None else None):
        return dg.materialize(
            all_assets,
            selection=selection,
            partition_key=partition_key,
            instance=instance,
            run_config={**QUIET, **(run_config or {})},
            resources=resources or default_resources(),
            raise_on_error=True,
            tags=run_tags(),
        )


def run_ingestion(
    lake_root: str | os.PathLike[str],
    instance: dg.DagsterInstance | None = None,
    shops: Iterable[str] | None = None,
    resources: dict | None = None,
    on_partition: Callable[[str, str | None], None] | None = None,
    progress: bool = False,
    fail_fast: bool = False,
) -> IngestRun:
    """Materialize `catalog` per shop, `raw_events` per shop-day, then `quarantine`.

    A failing partition does not stop the others (a shop whose catalog fails skips its
    days); after the `quarantine` refresh, `IngestionFailed` names every failure, one line
    each. `fail_fast` re-raises the first failure instead. `on_partition(shop, date)` is
    called after each success (date None for a catalog); `progress` shows a progress bar."""
    t0 = time.perf_counter()
    instance = instance or dagster_instance()
    lake = Lake.at(lake_root)
    sweep_temp_files(lake.root)  # what a killed writer left
    register_partitions(instance, lake)
    wanted = set(shops) if shops else None
    plan = {s: lake.dates(s) for s in lake.shops() if wanted is None or s in wanted}
    bar = _RunBar(sum(len(d) + 1 for d in plan.values()) + 1, "ingest", progress)
    out = IngestRun()

    def attempt(selection: tuple[str, ...], shop: str, date: str | None):
        key = shop if date is None else shop_day_key(shop, date)
        try:
            return _materialize(list(selection), instance, key, resources)
        except Exception as exc:
            if fail_fast:
                bar.close()
                raise
            out.failures.append((shop, date, describe(exc)))
            return None
        finally:
            bar.update(1)

    for shop, dates in plan.items():
        if attempt(selections.CATALOG, shop, None) is None:
            bar.update(len(dates))
            continue
        out.catalogs += 1
        if on_partition:
            on_partition(shop, None)
        for date in dates:
            res = attempt(selections.EVENTS, shop, date)
            if res is None:
                continue
            md = res.asset_materializations_for_node("raw_events")[0].metadata
            out.partitions += 1
            out.rows_read += md["rows_read"].value
            out.rows_valid += md["rows_valid"].value
            out.rows_rejected += md["rows_rejected"].value
            for by, key in (
                (out.rows_valid_by_shop, "rows_valid"),
                (out.rows_read_by_shop, "rows_read"),
                (out.rows_rejected_by_shop, "rows_rejected"),
            ):
                by[shop] = by.get(shop, 0) + md[key].value
            if on_partition:
                on_partition(shop, date)
    _materialize(list(selections.QUARANTINE), instance, None, resources)
    bar.update(1)
    bar.close()
    out.seconds = time.perf_counter() - t0
    if out.failures:
        raise IngestionFailed(out)
    return out


class _RunBar:
    """A stage's bar over its runs (simpersona.progress), advanced and closed by the loops
    below, which close it early on a failure; it disappears when done."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        from simpersona.progress import progress_bar

        self._block = progress_bar(total, desc, unit="runs", enabled=enabled, transient=True)
        self._bar = self._block.__enter__()

    def update(self, n: int = 1) -> None:
        self._bar.advance(n)

    def close(self) -> None:
        if self._block is not None:
            self._block.__exit__(None, None, None)
            self._block = None


# The demo's simulation: small enough for 2 cores within the demo's 30 minutes (the
# assets' defaults are the paper-sized runs).
DEMO_SIMULATION = {
    "ops": {
        "population_simulation": {
            "config": {
                # Every policy: the Markov chains with and without the token and the labelled
                # in-sample oracle; the LLM with and without it, single-stage; Table 9's pair.
                "policies": list(POLICIES),
                # Equal agents per funnel stratum: purchasers are ~1 % of these shops, so a
                # draw from p̂_s leaves strata A–C with a handful of agents and Table 2 undecided.
                "sampling": "strata",
                "agents_per_shop": 20,
                # Markov agents cost no model: enough for an interval that decides the token
                # effect (docs/evaluation.md, "How many agents").
                "markov_agents_per_shop": 60,
                "ablation_agents_per_shop": 8,
            }
        },
        # n_tasks is a total over the evaluation shops (3 in the demo's split): 6 each.
        "instruction_following": {"config": {"n_tasks": 18, "repetitions": 2}},
    }
}


# The same demo with a real pretrained base (SmolLM2-135M-Instruct, the default) on 2 cores:
# a training step costs ~6 s an example and an agent step ~3 s instead of milliseconds, so
# stage 1 sees a quarter of the examples (it moves only the persona rows), the single-stage
# ablation and Table 9's pair are left out, and the LLM runs fewer agents and tasks — the
# demo's figures for them are small-sample (their intervals say so);
# benchmarks/persona_grounding.py and docs/llm.md have the measured sizes and times.
# Sized so `simpersona demo` stays within ~35 minutes on 2 cores (docs/llm.md, "The real
# base on 2 CPU cores": stage 2 costs ~7 s an example, an LLM agent step ~2 s);
# benchmarks/persona_grounding.py takes larger samples.
DEMO_TRACES_REAL_BASE = 6  # sessions replayed per training shop: ~80 stage-2 examples
DEMO_GROUNDING_REAL_BASE = {
    "ops": {"persona_model": {"config": {"train": {"stage1_epochs": 0.25}}}}
}
DEMO_SIMULATION_REAL_BASE = {
    "ops": {
        "population_simulation": {
            "config": {
                "policies": ["markov", "markov_notoken", "markov_oracle", "llm", "nopersona"],
                "sampling": "strata",
                "agents_per_shop": 2,
                "markov_agents_per_shop": 60,
                "max_steps": 12,
            }
        },
        "instruction_following": {
            "config": {
                "policies": ["markov", "llm"],
                "n_tasks": 6,  # two per evaluation shop: a cart task and a checkout task
                "repetitions": 1,
                "max_steps": 12,
            }
        },
        "persona_probe": {
            "config": {"sessions_per_shop": 6, "prompts": 10, "samples": 1, "max_new_tokens": 80}
        },
    }
}


def seed_hash_key(buyer_hash, seed: int) -> None:
    """Generated buyers have no real identity, so the demo may derive its buyer-hash key from
    the seed: the hashed ids, and every figure after ingestion, are then the same from run to
    run. A key that is configured, or a key file that exists, is left as it is."""
    from simpersona.ingest.ingest import HASH_KEY_ENV

    path = Path(buyer_hash.key_file)
    if buyer_hash.key or os.environ.get(HASH_KEY_ENV) or path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(hashlib.sha256(f"simpersona-demo-seed-{seed}".encode()).hexdigest())


def run_demo(
    data_dir: str | os.PathLike[str],
    n_shops: int = 6,
    n_buyers: int = 60_000,
    seed: int = 0,
    console=None,
    *,
    generator=None,
    instance: dg.DagsterInstance | None = None,
    resources: dict | None = None,
    persona_run_config: dict | None = None,
    traces_per_shop: int | None = None,
    grounding_run_config: dict | None = None,
    simulation_run_config: dict | None = None,
    simulate: bool = True,
    single_stage: bool | None = None,
    base_model: str | None = None,
) -> tuple[dict, Path]:
    """Generate shops, run every stage that exists, write reports/latest/summary.json.

    `generator` (a GeneratorConfig) replaces n_shops / n_buyers / seed; `instance`,
    `resources` and `persona_run_config` (Dagster run config of the personas assets) let
    tests run the demo small and in isolation; `traces_per_shop` sessions of each training
    shop are replayed in the browser for the SFT datasets (default 12; 8 with a real base;
    0: skip the traces stage and everything after it); `grounding_run_config` /
    `simulation_run_config` are Dagster run configs of the persona model and of the
    simulation assets (default: DEMO_SIMULATION);
    `simulate=False` stops after the traces; `single_stage` also trains the single-stage
    ablation (App. F) for the `llm_single` policy (default: with the tiny model only);
    `base_model` replaces the training resource's base (a packaged name, a folder, "tiny").
    A real base gets the DEMO_*_REAL_BASE configurations unless others are given."""
    from simpersona.reports import new_report_dir, update_summary
    from simpersona.synth import GeneratorConfig, generate_lake

    t_demo = time.perf_counter()
    data_dir = Path(data_dir)
    if data_dir.is_dir():
        sweep_temp_files(data_dir)  # what a killed earlier run left
    resources = dict(resources or default_resources())
    if base_model is not None:
        resources["training"] = resources["training"].model_copy(update={"base_model": base_model})
    tiny = resources["training"].uses_tiny()
    if single_stage is None:
        single_stage = tiny
    if traces_per_shop is None:
        traces_per_shop = 12 if tiny else DEMO_TRACES_REAL_BASE
    if not tiny:
        grounding_run_config = grounding_run_config or DEMO_GROUNDING_REAL_BASE
        simulation_run_config = simulation_run_config or DEMO_SIMULATION_REAL_BASE
    say = console.print if console is not None else print
    lake_root = data_dir / "lake"
    gen_cfg = generator or GeneratorConfig(n_shops=n_shops, n_buyers=n_buyers, seed=seed)
    seed_hash_key(resources["buyer_hash"], gen_cfg.seed)
    say(f"[1/7] generating {gen_cfg.n_shops} shops, {gen_cfg.n_buyers:,} buyers into {lake_root}")
    planted = data_dir / "ground_truth" / "planted_types.parquet"
    gen = generate_lake(lake_root, gen_cfg, ground_truth_path=planted, progress=False)
    say("[2/7] ingesting through the Dagster assets")
    instance = instance or dagster_instance(data_dir / "dagster_home")
    ing = run_ingestion(lake_root, instance=instance, resources=resources, progress=True)
    shops = Lake.at(lake_root).shops()
    say("[3/7] buyer representations: sessions, embeddings, features, transform, vectors")
    feats = run_features(instance, shops=shops, resources=resources, progress=True)
    say("[4/7] personas: VQ-VAE + k-means, codebook report, assignments, recovery, cards")
    ops = dict((persona_run_config or {}).get("ops", {}))
    for op in ("codebook_report", "distribution_recovery"):
        op_cfg = dict(ops.get(op, {}).get("config", {}))
        op_cfg.setdefault("planted_types_path", str(planted))
        ops[op] = {"config": op_cfg}
    pers = run_personas(
        instance, shops=shops, resources=resources, run_config={"ops": ops}, progress=True
    )
    print_personas(pers, console)
    traces = TracesRun()
    if traces_per_shop > 0:
        say(f"[5/7] traces: goals, {traces_per_shop} replays per training shop, SFT datasets")
        traces = run_traces(
            instance, resources=resources, sessions_per_shop=traces_per_shop, progress=True
        )
        say(
            f"      {traces.sessions} sessions replayed, keep rate {traces.keep_rate:.2f}; "
            f"stage-1 {traces.stage1_examples} / stage-2 {traces.stage2_examples} examples"
        )
    grounding, sim = GroundingRun(), SimulationRun()
    if traces_per_shop > 0 and simulate:
        say(
            "[6/7] persona grounding on "
            f"{resources['training'].base_model_name()}: stage 1 (persona embeddings), "
            "stage 2 (all weights)"
        )
        grounding = run_grounding(
            instance, resources, grounding_run_config, single_stage=single_stage
        )
        say(
            f"      model {grounding.version}: "
            + (
                f"base pretraining {grounding.figures['pretrain_seconds']:.0f} s, "
                if grounding.figures.get("pretrain_seconds")
                else ""
            )
            + "stage 1 "
            f"{grounding.figures.get('stage1_seconds', 0):.0f} s, stage 2 "
            f"{grounding.figures.get('stage2_seconds', 0):.0f} s"
            + (
                f"; single-stage ablation {grounding.figures['single_stage_stage2_seconds']:.0f} s"
                if "single_stage_stage2_seconds" in grounding.figures
                else ""
            )
        )
        say("[7/7] simulation: agents per evaluation shop and policy, instruction tasks, report")
        sim = run_simulation(
            instance,
            resources=resources,
            run_config=simulation_run_config or DEMO_SIMULATION,
            progress=True,
        )
        say(f"      report: {sim.report_html}")
        for i, sentence in enumerate(sim.verdict, 1):
            say(f"      {i}. " + re.sub(r"\*\*(.+?)\*\*", r"[bold]\1[/bold]", sentence))
    summary = {
        "seed": gen_cfg.seed,
        "generate_shops": gen_cfg.n_shops,
        "generate_buyers": gen.n_buyers,
        "generate_events": gen.n_events,
        "generate_seconds": round(gen.seconds, 2),
        **ing.summary(),
        **feats.summary(),
        **pers.summary(),
        **traces.summary(),
        **grounding.summary(),
        **sim.summary(),
        "demo_seconds": round(time.perf_counter() - t_demo, 1),
    }
    report_dir = new_report_dir(data_dir / "reports")
    update_summary(report_dir, summary)
    return summary, report_dir


@dataclass
class FeaturesRun:
    shops: int = 0
    buyers: int = 0
    strata: dict[str, int] = field(default_factory=dict)
    sample_rows: int = 0
    transform: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int | str]:
        n = sum(self.strata.values()) or 1
        out: dict[str, float | int | str] = {
            "features_shops": self.shops,
            "features_buyers": self.buyers,
            "training_sample_rows": self.sample_rows,
            "features_seconds": round(self.seconds, 2),
        }
        out |= {f"stratum_{k}_share": round(v / n, 4) for k, v in sorted(self.strata.items())}
        out |= self.transform
        return out


def run_features(
    instance: dg.DagsterInstance,
    shops: Iterable[str] | None = None,
    resources: dict | None = None,
    run_config: dict | None = None,
    progress: bool = False,
) -> FeaturesRun:
    """Per shop enriched sessions, embeddings and buyer features; then the training sample
    and feature transform; then per shop buyer vectors."""
    t0 = time.perf_counter()
    shops = sorted(shops or instance.get_dynamic_partitions(shop_partitions.name))
    bar = _RunBar(2 * len(shops) + 1, "features", progress)
    out = FeaturesRun(shops=len(shops))
    for shop in shops:
        _materialize(list(selections.FEATURES_SHOP), instance, shop, resources)
        bar.update(1)
    res = _materialize(list(selections.FEATURES_FIT), instance, None, resources, run_config)
    bar.update(1)
    md = res.asset_materializations_for_node("training_sample")[0].metadata
    out.sample_rows = md["rows"].value
    tmd = res.asset_materializations_for_node("feature_transform")[0].metadata
    out.transform = {"transform_version": tmd["version"].value} | {
        k: tmd[k].value for k in tmd if k.startswith("explained_variance_")
    }
    for shop in shops:
        r = _materialize(list(selections.VECTORS), instance, shop, resources)
        vmd = r.asset_materializations_for_node("buyer_vectors")[0].metadata
        n = vmd["buyers"].value
        out.buyers += n
        for k in ("A", "B", "C", "D", "E"):
            out.strata[k] = out.strata.get(k, 0) + round(vmd[f"stratum_{k}_share"].value * n)
        bar.update(1)
    bar.close()
    out.seconds = time.perf_counter() - t0
    return out


# Summary keys of the personas stage, in the order the demo prints them.
PERSONA_SUMMARY_KEYS = (
    "vqvae_purity",
    "kmeans_purity",
    "vqvae_incoherence_max",
    "kmeans_incoherence_max",
    "vqvae_ch",
    "kmeans_ch",
    "codebook_perplexity",
    "dead_codes",
    "ari_planted",
    "js_mean_heldout",
    "js_median_heldout",
    "r2_intent_strength_heldout",
    "r2_atc_rate_heldout",
    "r2_checkout_rate_heldout",
    "r2_browse_only_rate_heldout",
)


@dataclass
class PersonasRun:
    """What the personas stage produced: the codebook version, the Table-1 report's figures
    (flat `vqvae_*` / `kmeans_*` metadata of codebook_report), the recovery figures, the
    per-store JS table and the cards."""

    codebook_version: str = ""
    training_seconds: float = 0.0
    report: dict[str, float] = field(default_factory=dict)
    report_table: str = ""
    recovery: dict[str, float] = field(default_factory=dict)
    recovery_note: str = ""  # why a held-out figure is undefined (no or one held-out store)
    recovery_table: str = ""
    store_js: str = ""
    reports: dict[str, dict] = field(default_factory=dict)  # report.json: name → figures
    stores: list[dict] = field(default_factory=list)  # per store: split, JS held-out / in-sample
    buyers: int = 0
    cards: int = 0
    cards_html: str = ""
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int | str | None]:
        """The 15 issue-4 keys (None where a figure is undefined, e.g. ARI without planted
        types) plus a few run facts."""
        r, d = self.report, self.recovery
        heads = ("engagement", "exploration", "purchase")

        def inc_max(prefix: str) -> float | None:
            vals = [
                r[f"{prefix}_incoherent_{h}_pct"]
                for h in heads
                if f"{prefix}_incoherent_{h}_pct" in r
            ]
            return max(vals) if vals else None

        out: dict[str, float | int | str | None] = {
            "vqvae_purity": r.get("vqvae_stratum_purity_pct"),
            "kmeans_purity": r.get("kmeans_stratum_purity_pct"),
            "vqvae_incoherence_max": inc_max("vqvae"),
            "kmeans_incoherence_max": inc_max("kmeans"),
            "vqvae_ch": r.get("vqvae_calinski_harabasz"),
            "kmeans_ch": r.get("kmeans_calinski_harabasz"),
            "codebook_perplexity": r.get("vqvae_perplexity"),
            "dead_codes": r.get("vqvae_dead_codes"),
            "ari_planted": r.get("vqvae_planted_majority_ari"),
            # App. B on held-out stores (strata A–D), with intervals; in-sample as an extra.
            **{
                f"{n}{suffix}": d.get(f"{n}{suffix}")
                for n in (
                    "js_mean",
                    "js_median",
                    "r2_intent_strength",
                    "r2_atc_rate",
                    "r2_checkout_rate",
                    "r2_browse_only_rate",
                )
                for suffix in ("_heldout", "_insample")
            },
            # Intervals exist for the mean JS and the headline features' R².
            **{
                f"{n}_heldout{suffix}": d.get(f"{n}_heldout{suffix}")
                for n in (
                    "js_mean",
                    "r2_intent_strength",
                    "r2_atc_rate",
                    "r2_checkout_rate",
                    "r2_browse_only_rate",
                )
                for suffix in ("_ci_low", "_ci_high")
            },
            "n_stores_heldout": d.get("n_stores_heldout"),
            "e_share_real_heldout": d.get("e_share_real_heldout"),
            "e_share_recovered_heldout": d.get("e_share_recovered_heldout"),
            "recovery_note": self.recovery_note or None,
        }
        out |= {
            # Calinski–Harabasz on the 16 behavioural scalars (vqvae_ch / kmeans_ch: 403-d)
            "vqvae_ch_behaviour": r.get("vqvae_calinski_harabasz_behaviour"),
            "kmeans_ch_behaviour": r.get("kmeans_calinski_harabasz_behaviour"),
            # 403-d CH of the tightest strata-pure / strata×bins-pure codebooks
            "ch_pure_strata": r.get("ch_pure_strata"),
            "ch_pure_strata_bins": r.get("ch_pure_strata_bins"),
            "kmeans_ari_planted": r.get("kmeans_planted_majority_ari"),
            "ari_planted_all_buyers": d.get("planted_majority_ari_all"),
            "kmeans_ari_planted_all_buyers": d.get("kmeans_planted_majority_ari_all"),
            "js_under_0_10_heldout": d.get("js_under_0_10_heldout"),
            "persona_cards": self.cards,
            "codebook_version": self.codebook_version,
            "vqvae_training_seconds": round(self.training_seconds, 2),
            "personas_seconds": round(self.seconds, 2),
        }
        return out


def _metadata_values(md) -> dict:
    return {k: getattr(v, "value", v) for k, v in md.items()}


def run_personas(
    instance: dg.DagsterInstance,
    shops: Iterable[str] | None = None,
    resources: dict | None = None,
    run_config: dict | None = None,
    progress: bool = False,
) -> PersonasRun:
    """Train the codebook and write its report; per shop the persona assignments and token
    distribution; then distribution recovery and the persona cards. `run_config` is a
    Dagster run config (`{"ops": {"persona_codebook": {"config": {...}}, ...}}`); each
    run gets the ops it selects."""
    t0 = time.perf_counter()
    shops = sorted(shops or instance.get_dynamic_partitions(shop_partitions.name))
    bar = _RunBar(len(shops) + 2, "personas", progress)
    ops = (run_config or {}).get("ops", {})

    def cfg(*names: str) -> dict:
        return {"ops": {n: ops[n] for n in names if n in ops}}

    out = PersonasRun()
    fit = list(selections.PERSONAS_FIT)
    res = _materialize(fit, instance, None, resources, cfg(*fit))
    cmd = _metadata_values(res.asset_materializations_for_node("persona_codebook")[0].metadata)
    rmd = _metadata_values(res.asset_materializations_for_node("codebook_report")[0].metadata)
    out.codebook_version = cmd["version"]
    out.training_seconds = cmd.get("training_seconds", 0.0)
    out.report = {k: v for k, v in rmd.items() if k.startswith(("vqvae_", "kmeans_", "ch_pure_"))}
    out.report_table = rmd["table"]
    out.reports = json.loads(Path(rmd["path"]).with_name("report.json").read_text())
    bar.update(1)
    per_shop = list(selections.PERSONAS_SHOP)
    for shop in shops:
        r = _materialize(per_shop, instance, shop, resources, cfg(*per_shop))
        out.buyers += (
            r.asset_materializations_for_node("persona_assignments")[0].metadata["buyers"].value
        )
        bar.update(1)
    across = list(selections.PERSONAS_REPORT)
    res = _materialize(across, instance, None, resources, cfg(*across))
    dmd = _metadata_values(res.asset_materializations_for_node("distribution_recovery")[0].metadata)
    pmd = _metadata_values(res.asset_materializations_for_node("persona_cards")[0].metadata)
    out.recovery = {k: v for k, v in dmd.items() if isinstance(v, int | float)}
    out.recovery_note = str(dmd.get("recovery_note", ""))
    out.recovery_table = dmd["appendix_b"]
    out.store_js = dmd["store_js"]
    out.stores = pl.read_csv(Path(dmd["path"]) / "store_js.csv").to_dicts()
    out.cards = pmd["cards"]
    out.cards_html = pmd["html"]
    bar.update(1)
    bar.close()
    out.seconds = time.perf_counter() - t0
    return out


def print_personas(run: PersonasRun, console=None) -> None:
    """The Table-1 side-by-side table, the App. B recovery figures and per-store JS."""
    from rich.console import Console
    from rich.table import Table

    from simpersona.personas.quality import purity_ceilings_line
    from simpersona.personas.quality_table import print_reports

    console = console or Console()
    print_reports(run.reports, console=console)
    if "ch_pure_strata" in run.report:
        console.print(purity_ceilings_line(run.report))
    table = Table(title="Stratum recovery per store (JS divergence, base 2)")
    cols = ("store", "split", "buyers", "held-out JS (A–D)", "k-means", "in-sample JS", "k-means")
    for col in cols:
        table.add_column(col, justify="left" if col in ("store", "split") else "right")

    def js(v) -> str:
        return "–" if v is None or v != v else f"{v:.4f}"

    for r in run.stores:
        table.add_row(
            str(r["shop_id"]), r.get("split", ""), f"{r['n_buyers']:,}",
            js(r.get("js_heldout")), js(r.get("kmeans_js_heldout")),
            js(r.get("js_insample")), js(r.get("kmeans_js_insample")),
        )  # fmt: skip
    console.print(table)
    console.print(recovery_line(run.recovery, run.recovery_note))
    console.print(f"persona cards: {run.cards} ({run.cards_html})")


def recovery_line(rec: dict, note: str = "") -> str:
    """App. B in one line: held-out stores first (with the interval), in-sample after."""
    nan = float("nan")
    parts = []
    if rec.get("n_stores_heldout"):
        lo, hi = rec.get("js_mean_heldout_ci_low"), rec.get("js_mean_heldout_ci_high")
        ci = f" (95 % CI {lo:.4f}–{hi:.4f})" if lo is not None else ""
        parts.append(
            f"held-out stores (A–D): JS mean {rec.get('js_mean_heldout', nan):.4f}{ci}, median "
            f"{rec.get('js_median_heldout', nan):.4f}, {rec.get('js_under_0_10_heldout', 0)} of "
            f"{rec['n_stores_heldout']} stores < 0.10"
            + "".join(
                f"; R² {f} {rec[f'r2_{f}_heldout']:.3f}"
                for f in ("intent_strength", "atc_rate", "checkout_rate", "browse_only_rate")
                if f"r2_{f}_heldout" in rec
            )
        )
    parts.append(
        f"in-sample (all stores, A–E, fitted on the stores it scores): JS mean "
        f"{rec.get('js_mean_insample', nan):.4f}"
    )
    return "; ".join(parts) + (f". {note}" if note else "")


@dataclass
class TracesRun:
    shops: list[str] = field(default_factory=list)
    sessions: int = 0
    kept: int = 0
    detours: int = 0
    stage1_examples: int = 0
    stage2_examples: int = 0
    sft_sessions: int = 0
    tokens_in_use: int = 0
    seconds: float = 0.0

    @property
    def keep_rate(self) -> float:
        return self.kept / self.sessions if self.sessions else 0.0

    def summary(self) -> dict[str, float | int]:
        if not self.sessions:
            return {}
        return {
            "traces_sessions": self.sessions,
            "traces_keep_rate": round(self.keep_rate, 4),
            "traces_detours": self.detours,
            "sft_sessions": self.sft_sessions,
            "sft_tokens_in_use": self.tokens_in_use,
            "sft_stage1_examples": self.stage1_examples,
            "sft_stage2_examples": self.stage2_examples,
            "traces_seconds": round(self.seconds, 2),
        }


def run_traces(
    instance: dg.DagsterInstance,
    shops: Iterable[str] | None = None,
    resources: dict | None = None,
    sessions_per_shop: int = 90,
    run_config: dict | None = None,
    progress: bool = False,
) -> TracesRun:
    """Replay `sessions_per_shop` sessions of each shop (default: the training shops) and
    build the stage-1 and stage-2 SFT datasets."""
    from dagster_project.resources import WarehouseResource

    t0 = time.perf_counter()
    if shops is None:
        wh_res = (resources or {}).get("warehouse") or WarehouseResource()
        shops = wh_res.warehouse().shop_split()["train"]
    shops = sorted(shops)
    ops = dict((run_config or {}).get("ops", {}))
    rt = dict(ops.get("replayed_traces", {}).get("config", {}))
    rt.setdefault("sessions_per_shop", sessions_per_shop)
    out = TracesRun(shops=shops)
    bar = _RunBar(len(shops) + 1, "traces", progress)
    for shop in shops:
        r = _materialize(
            list(selections.TRACES_SHOP),
            instance,
            shop,
            resources,
            {"ops": {"replayed_traces": {"config": rt}}},
        )
        md = _metadata_values(r.asset_materializations_for_node("replayed_traces")[0].metadata)
        out.sessions += md["sessions"]
        out.kept += md["kept"]
        out.detours += md["detours"]
        bar.update(1)
    sft_cfg = {k: v for k, v in ops.items() if k in ("sft_stage1", "sft_stage2")}
    res = _materialize(list(selections.SFT), instance, None, resources, {"ops": sft_cfg})
    s1 = _metadata_values(res.asset_materializations_for_node("sft_stage1")[0].metadata)
    s2 = _metadata_values(res.asset_materializations_for_node("sft_stage2")[0].metadata)
    out.stage1_examples, out.stage2_examples = s1["examples"], s2["examples"]
    out.sft_sessions, out.tokens_in_use = s1["sessions"], s1["tokens_in_use"]
    bar.update(1)
    bar.close()
    out.seconds = time.perf_counter() - t0
    return out


@dataclass
class GroundingRun:
    """The persona model's training (persona_model asset)."""

    version: str = ""
    base_model: str = ""
    figures: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int | str]:
        if not self.version:
            return {}
        keep = ("stage1_seconds", "stage2_seconds", "stage1_loss", "stage2_loss", "stage1_steps",
                "stage2_steps", "train_examples", "pretrain_seconds", "pretrain_loss_last",
                "single_stage_stage2_seconds")  # fmt: skip
        out: dict[str, float | int | str] = {
            "persona_model_version": self.version,
            "base_model": self.base_model,
        }
        out |= {k: self.figures[k] for k in keep if isinstance(self.figures.get(k), int | float)}
        out["grounding_seconds"] = round(self.seconds, 2)
        return out


def run_grounding(
    instance: dg.DagsterInstance,
    resources: dict | None = None,
    run_config: dict | None = None,
    single_stage: bool = False,
) -> GroundingRun:
    """Train the persona model (stage 1, then stage 2) from the SFT datasets; with
    `single_stage`, also the single-stage ablation (App. F) on the same data and config."""
    t0 = time.perf_counter()
    assets = ["persona_model"] + (["persona_model_single_stage"] if single_stage else [])
    cfg = dict(run_config or {})
    if single_stage and "persona_model" in cfg.get("ops", {}):
        ops = dict(cfg["ops"])
        ops.setdefault("persona_model_single_stage", ops["persona_model"])
        cfg = {**cfg, "ops": ops}
    res = _materialize(assets, instance, None, resources, cfg)
    md = _metadata_values(res.asset_materializations_for_node("persona_model")[0].metadata)
    figures = {k: v for k, v in md.items() if isinstance(v, int | float)}
    if single_stage:
        smd = res.asset_materializations_for_node("persona_model_single_stage")[0].metadata
        sfig = _metadata_values(smd)
        figures["single_stage_stage2_seconds"] = sfig.get("stage2_seconds", 0.0)
        figures["single_stage_version"] = sfig.get("version", "")
    return GroundingRun(
        version=str(md.get("version", "")),
        base_model=str(md.get("base_model_name", "")),
        figures=figures,
        seconds=time.perf_counter() - t0,
    )


@dataclass
class SimulationRun:
    """Population simulation, instruction following and the evaluation report."""

    shops: list[str] = field(default_factory=list)
    markov_fit_shops: list[str] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)  # the report's three sentences
    agents: int = 0
    instruction_runs: int = 0
    headline: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    report_html: str = ""
    llm_ran: int = 0  # LLM-policy agents run (not resumed) and their wall time
    llm_wall_s: float = 0.0
    probe_seconds: float | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int | str | None]:
        if not self.shops:
            return {}
        out: dict[str, float | int | str | None] = {
            "simulation_shops": len(self.shops),
            "simulation_agents": self.agents,
            "instruction_runs": self.instruction_runs,
            **self.headline,
            "report_html": self.report_html,
            "simulation_seconds": round(self.seconds, 2),
        }
        if self.llm_wall_s:
            out["llm_agents_per_min"] = round(self.llm_ran / self.llm_wall_s * 60, 2)
        if self.probe_seconds is not None:
            out["probe_seconds"] = self.probe_seconds
        # The name docs/llm.md's targets use for the LLM policy's share of valid actions.
        if "valid_action_rate_llm" in self.figures:
            out["valid_action_rate"] = round(self.figures["valid_action_rate_llm"], 4)
        # ... and of its replies that were schema-valid JSON actions (executable or not).
        if "valid_json_rate_llm" in self.figures:
            out["valid_json_rate"] = round(self.figures["valid_json_rate_llm"], 4)
        return out


def run_simulation(
    instance: dg.DagsterInstance,
    shops: Iterable[str] | None = None,
    resources: dict | None = None,
    run_config: dict | None = None,
    instruction: bool = True,
    progress: bool = False,
    probe: bool = True,
) -> SimulationRun:
    """Per evaluation shop (default: the eval split) the population simulation and the
    instruction tasks, then (`probe`, when an LLM policy ran) the persona model's intent
    probe, then the evaluation report over them."""
    from dagster_project.resources import WarehouseResource

    t0 = time.perf_counter()
    if shops is None:
        wh_res = (resources or {}).get("warehouse") or WarehouseResource()
        shops = wh_res.warehouse().shop_split()["eval"]
    shops = sorted(shops)
    ops = (run_config or {}).get("ops", {})
    per_shop = ["population_simulation"] + (["instruction_following"] if instruction else [])
    out = SimulationRun(shops=shops)
    bar = _RunBar(len(shops) + 3, "simulation", progress)
    # The Markov policy is fitted on the training shops first (out of sample on these).
    fit = ops.get("markov_policy")
    r = _materialize(
        ["markov_policy"],
        instance,
        None,
        resources,
        {"ops": {"markov_policy": fit}} if fit else None,
    )
    mmd = _metadata_values(r.asset_materializations_for_node("markov_policy")[0].metadata)
    out.markov_fit_shops = list(mmd["fit_shops"])
    bar.update(1)
    for shop in shops:
        r = _materialize(
            per_shop, instance, shop, resources, {"ops": {n: ops[n] for n in per_shop if n in ops}}
        )
        pmd = r.asset_materializations_for_node("population_simulation")[0].metadata
        out.agents += pmd["agents"].value
        for name, run in pmd["runs"].value.items():
            if name in LLM_POLICIES and run.get("ran"):
                out.llm_ran += run["ran"]
                out.llm_wall_s += run["wall_s"]
        if instruction:
            imd = r.asset_materializations_for_node("instruction_following")[0].metadata
            out.instruction_runs += imd["runs"].value
        bar.update(1)
    pop = ops.get("population_simulation", {}).get("config", {})
    policies = pop.get("policies", SimulationConfig.model_fields["policies"].default)
    if probe and any(p in LLM_POLICIES for p in policies):
        # The persona model's intent and token probe on the evaluation shops' product pages.
        probe_cfg = (
            {"ops": {"persona_probe": ops["persona_probe"]}} if "persona_probe" in ops else None
        )
        r = _materialize(["persona_probe"], instance, None, resources, probe_cfg)
        out.probe_seconds = float(
            r.asset_materializations_for_node("persona_probe")[0].metadata["seconds"].value
        )
    bar.update(1)
    rep = ops.get("evaluation_report") or {"config": {"shops": shops}}
    rep_cfg = {"ops": {"evaluation_report": rep}}
    r = _materialize(list(selections.EVALUATION), instance, None, resources, rep_cfg)
    md = _metadata_values(r.asset_materializations_for_node("evaluation_report")[0].metadata)
    out.headline = dict(md["headline"])
    out.report_html = str(md["report_html"])
    out.verdict = list(md.get("verdict_sentences", []))
    out.figures = dict(md.get("figures", {}))
    bar.update(1)
    bar.close()
    out.seconds = time.perf_counter() - t0
    return out
