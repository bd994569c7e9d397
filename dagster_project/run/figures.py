"""What each stage's in-process run hands back (dagster_project/run/stages.py): the facts its
assets recorded, and `summary()`, its flat keys of reports/latest/summary.json."""

from dataclasses import dataclass, field
from typing import Any

from simpersona.agent.policy_set import LLM_POLICIES

Recorded = dict[str, Any]  # what an asset recorded: its metadata, as plain values


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

    def add_partition(self, shop: str, events: Recorded) -> None:
        """One shop-day's raw_events."""
        self.partitions += 1
        for by, key in (
            (self.rows_read_by_shop, "rows_read"),
            (self.rows_valid_by_shop, "rows_valid"),
            (self.rows_rejected_by_shop, "rows_rejected"),
        ):
            setattr(self, key, getattr(self, key) + events[key])
            by[shop] = by.get(shop, 0) + events[key]

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


@dataclass
class FeaturesRun:
    shops: int = 0
    buyers: int = 0
    strata: dict[str, int] = field(default_factory=dict)
    sample_rows: int = 0
    transform: dict = field(default_factory=dict)
    seconds: float = 0.0

    def add_fit(self, sample: Recorded, transform: Recorded) -> None:
        self.sample_rows = sample["rows"]
        self.transform = {"transform_version": transform["version"]} | {
            k: v for k, v in transform.items() if k.startswith("explained_variance_")
        }

    def add_vectors(self, vectors: Recorded) -> None:
        """One shop's buyer_vectors: its buyers and their strata."""
        n = vectors["buyers"]
        self.buyers += n
        for k in ("A", "B", "C", "D", "E"):
            self.strata[k] = self.strata.get(k, 0) + round(vectors[f"stratum_{k}_share"] * n)

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

    def add_codebook(self, codebook: Recorded, report: Recorded, reports: dict) -> None:
        """persona_codebook and codebook_report (`reports`: its report.json)."""
        self.codebook_version = codebook["version"]
        self.training_seconds = codebook.get("training_seconds", 0.0)
        self.report = {
            k: v for k, v in report.items() if k.startswith(("vqvae_", "kmeans_", "ch_pure_"))
        }
        self.report_table = report["table"]
        self.reports = reports

    def add_recovery(self, recovery: Recorded, stores: list[dict], cards: Recorded) -> None:
        """distribution_recovery (`stores`: its store_js.csv) and persona_cards."""
        self.recovery = {k: v for k, v in recovery.items() if isinstance(v, int | float)}
        self.recovery_note = str(recovery.get("recovery_note", ""))
        self.recovery_table = recovery["appendix_b"]
        self.store_js = recovery["store_js"]
        self.stores = stores
        self.cards = cards["cards"]
        self.cards_html = cards["html"]

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
    walk_sessions: int = 0  # store_walk_traces: personas' own walks, and those kept
    walks_kept: int = 0
    seconds: float = 0.0

    @property
    def keep_rate(self) -> float:
        return self.kept / self.sessions if self.sessions else 0.0

    def add_replays(self, traces: Recorded) -> None:
        """One shop's replayed_traces."""
        self.sessions += traces["sessions"]
        self.kept += traces["kept"]
        self.detours += traces["detours"]

    def add_walks(self, walks: Recorded) -> None:
        """One shop's store_walk_traces."""
        self.walk_sessions += walks["sessions"]
        self.walks_kept += walks["kept"]

    def add_sft(self, stage1: Recorded, stage2: Recorded) -> None:
        self.stage1_examples, self.stage2_examples = stage1["examples"], stage2["examples"]
        self.sft_sessions, self.tokens_in_use = stage1["sessions"], stage1["tokens_in_use"]

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
        } | (
            {"store_walk_sessions": self.walk_sessions, "store_walks_kept": self.walks_kept}
            if self.walk_sessions
            else {}
        )


@dataclass
class GroundingRun:
    """The persona model's training (persona_model asset)."""

    version: str = ""
    base_model: str = ""
    figures: dict = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def of(cls, model: Recorded, single_stage: Recorded | None = None) -> "GroundingRun":
        """persona_model and, when trained, the single-stage ablation."""
        figures = {k: v for k, v in model.items() if isinstance(v, int | float)}
        if single_stage is not None:
            figures["single_stage_stage2_seconds"] = single_stage.get("stage2_seconds", 0.0)
            figures["single_stage_version"] = single_stage.get("version", "")
        return cls(
            version=str(model.get("version", "")),
            base_model=str(model.get("base_model_name", "")),
            figures=figures,
        )

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

    def add_shop(self, simulation: Recorded, instruction: Recorded | None = None) -> None:
        """One evaluation shop's population_simulation and instruction_following."""
        self.agents += simulation["agents"]
        for name, run in simulation["runs"].items():
            if name in LLM_POLICIES and run.get("ran"):
                self.llm_ran += run["ran"]
                self.llm_wall_s += run["wall_s"]
        if instruction is not None:
            self.instruction_runs += instruction["runs"]

    def add_report(self, report: Recorded) -> None:
        """evaluation_report: the headline figures, the report's page and its verdict."""
        self.headline = dict(report["headline"])
        self.report_html = str(report["report_html"])
        self.verdict = list(report.get("verdict_sentences", []))
        self.figures = dict(report.get("figures", {}))

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
