"""`simpersona run`: a team's own logs from the lake to persona cards in one command.

ingest → features (sessions, embeddings, buyer features, training sample, feature
transform, buyer vectors) → personas (codebook and its report, assignments, p̂_s, recovery,
cards), through the same Dagster assets and helpers as the demo and the UI, in-process
against the data dir's instance. A stage whose inputs and settings did not change since its
last success is skipped (`run_state.json` keeps a fingerprint per stage); `force` reruns all.
docs/own-logs.md is the user's page.
"""

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_project.run import (
    IngestionFailed,
    IngestRun,
    dagster_instance,
    run_features,
    run_ingestion,
    run_personas,
)
from simpersona.features.sample import SampleConfig, split_shops
from simpersona.lake import Lake, atomic_write_text
from simpersona.warehouse import Warehouse

STATE_FILE = "run_state.json"
STAGES = ("ingest", "features", "personas")


class RunError(RuntimeError):
    """`simpersona run` cannot go on; the message says why and what to do."""


@dataclass
class PipelineRun:
    data_dir: Path
    shops: list[str] = field(default_factory=list)
    train_shops: list[str] = field(default_factory=list)
    eval_shops: list[str] = field(default_factory=list)
    holdout_buyers: int = 0  # one shop: its buyers held out of training
    ingest: IngestRun = field(default_factory=IngestRun)
    ingest_failures: list[tuple[str, str | None, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # every stage's summary keys
    skipped: list[str] = field(default_factory=list)  # stages unchanged since their last run
    warnings: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def one_shop(self) -> bool:
        return len(self.shops) == 1

    def summary(self) -> dict[str, Any]:
        return {
            **self.figures,
            "run_shops": len(self.shops),
            "run_train_shops": ",".join(self.train_shops),
            "run_eval_shops": ",".join(self.eval_shops),
            "run_holdout_buyers": self.holdout_buyers,
            "run_cross_store_recovery": "undefined (one shop)"
            if self.one_shop
            else "held-out shops",
            "run_skipped_stages": ",".join(self.skipped),
            "run_warnings": self.warnings,
            "run_ingest_failed_partitions": len(self.ingest_failures),
            "run_seconds": round(self.seconds, 1),
        }


# ---- fingerprints ----------------------------------------------------------------------------
def _files_digest(roots: Iterable[Path], patterns: Sequence[str]) -> str:
    """Hash of the (path, size, mtime) of every file matching `patterns` under `roots`."""
    h = hashlib.sha256()
    for root in roots:
        for pattern in patterns:
            for f in sorted(root.glob(pattern)) if root.is_dir() else []:
                st = f.stat()
                h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunState:
    """Fingerprint and figures of each stage's last success, in <data-dir>/run_state.json."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.stages: dict[str, dict] = json.loads(path.read_text())["stages"]
        except (OSError, ValueError, KeyError):
            self.stages = {}

    def unchanged(self, stage: str, fingerprint: str, outputs: str) -> dict | None:
        """The stage's figures when its inputs and settings (`fingerprint`) and its outputs
        (`outputs`, a digest of the files it wrote: deleted or rebuilt ones count) are as
        at its last success; else None."""
        done = self.stages.get(stage)
        if done and done.get("fingerprint") == fingerprint and done.get("outputs") == outputs:
            return done["figures"]
        return None

    def record(self, stage: str, fingerprint: str, outputs: str, figures: dict) -> None:
        self.stages[stage] = {
            "fingerprint": fingerprint, "outputs": outputs, "figures": figures, "at": time.time()
        }  # fmt: skip
        # a stage rerun invalidates the ones after it
        for later in STAGES[STAGES.index(stage) + 1 :]:
            self.stages.pop(later, None)
        atomic_write_text(json.dumps({"stages": self.stages}, indent=2, default=str), self.path)


# ---- the run ---------------------------------------------------------------------------------
def plan_split(
    shops: Sequence[str], train_shops: Sequence[str] | None, eval_shops: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The training and evaluation shops the training sample will use (the same rule)."""
    cfg = SampleConfig(
        train_shops=list(train_shops) if train_shops else None,
        eval_shops=list(eval_shops) if eval_shops else None,
    )
    try:
        split = split_shops(shops, cfg)
    except ValueError as exc:
        raise RunError(f"--train-shops/--eval-shops: {exc} (shops: {', '.join(shops)})") from None
    return split.train, split.eval


def run_pipeline(
    data_dir: str | os.PathLike[str],
    *,
    shops: Sequence[str] | None = None,
    train_shops: Sequence[str] | None = None,
    eval_shops: Sequence[str] | None = None,
    codebook_size: int = 0,
    max_reject_share: float | None = None,
    fail_fast: bool = False,
    force: bool = False,
    resources: dict | None = None,
    persona_config: dict | None = None,
    instance=None,
    say: Callable[[str], None] = print,
    after_ingest: Callable[[IngestRun], None] | None = None,
    progress: bool = True,
) -> PipelineRun:
    """Run ingest → features → personas on the lake in `data_dir` (see the module doc).

    Shops whose ingestion failed are left out and listed (`fail_fast` stops at the first
    failure instead); `train_shops`/`eval_shops` fix the split (default: the seeded split,
    half the shops held out; one shop: half its buyers); `codebook_size` 0 lets the data
    choose K (simpersona/personas/sizing.py); `persona_config` adds Dagster op configs of the
    personas assets (e.g. `{"persona_codebook": {"epochs": 5}}`)."""
    from dagster_project.resources import IngestSettings, default_resources

    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    out = PipelineRun(data_dir=data_dir)
    lake = Lake.at(data_dir / "lake")
    lake_shops = lake.shops()
    if shops:
        unknown = sorted(set(shops) - set(lake_shops))
        if unknown:
            raise RunError(f"shops not in {lake.root}: {', '.join(unknown)}")
        lake_shops = sorted(shops)
    if not lake_shops:
        raise RunError(
            f"no shops in {lake.root}: import logs first (simpersona import --format ... "
            f"--data-dir {data_dir}), or generate some (simpersona generate)"
        )
    resources = dict(resources or default_resources())
    if max_reject_share is not None:
        resources["ingest_settings"] = IngestSettings(max_reject_share=max_reject_share)
    instance = instance or dagster_instance(data_dir / "dagster_home")
    state = RunState(data_dir / STATE_FILE)
    wh = Warehouse.at(data_dir / "warehouse", data_dir / "warehouse.duckdb")
    days = sum(len(lake.dates(s)) for s in lake_shops)
    say(f"lake {lake.root}: {len(lake_shops)} shop(s) ({', '.join(lake_shops)}), {days} shop-days")

    # 1. ingest
    fp = _fingerprint(
        _files_digest([lake.root], ["events/**/*.parquet", "events/**/*.csv", "products/**/*",
                                    "collections/**/*"]),
        lake_shops, max_reject_share,
    )  # fmt: skip

    # what ingestion writes: a deleted or rebuilt warehouse is not "unchanged"
    def ingest_outputs() -> str:
        return _files_digest([wh.root], ["raw_events/**/data.parquet", "products/**/data.parquet"])

    cached = None if force else state.unchanged("ingest", fp, ingest_outputs())
    if cached is not None:
        say("[1/4] ingest: the lake is unchanged since the last run, skipped")
        out.skipped.append("ingest")
        out.figures |= cached["figures"]
        ingested = cached["shops"]
    else:
        say("[1/4] ingest: validate, sessionize, de-identify (rejects go to the quarantine)")
        try:
            ing = run_ingestion(
                lake.root, instance=instance, shops=lake_shops, resources=resources,
                progress=progress, fail_fast=fail_fast,
            )  # fmt: skip
        except IngestionFailed as exc:
            ing = exc.run
            out.ingest_failures = list(ing.failures)
        out.ingest = ing
        ingested = sorted(s for s, n in ing.rows_valid_by_shop.items() if n > 0)
        out.figures |= ing.summary()
        if not out.ingest_failures:  # a failed partition is retried next time
            state.record(
                "ingest", fp, ingest_outputs(),
                {"figures": ing.summary(), "shops": ingested, "failures": []},
            )  # fmt: skip
    if after_ingest is not None and "ingest" not in out.skipped:
        after_ingest(out.ingest)
    for shop, date, message in out.ingest_failures:
        say(f"  failed shop={shop} {('date=' + date) if date else 'catalog'}: {message}")
    if not ingested:
        raise RunError(
            "no shop was ingested"
            + (f" ({len(out.ingest_failures)} partition(s) failed, listed above)" if
               out.ingest_failures else "")
            + f"; see simpersona quarantine --data-dir {data_dir}"
        )  # fmt: skip
    out.shops = ingested
    left_out = sorted(set(lake_shops) - set(ingested))
    if left_out:
        say(f"  left out (nothing ingested): {', '.join(left_out)}")

    # the split, said before anything is fitted
    out.train_shops, out.eval_shops = plan_split(ingested, train_shops, eval_shops)
    if out.one_shop:
        say(
            f"split: one shop ({ingested[0]}): half of its buyers train the codebook, the "
            "other half are held out; cross-store recovery is undefined (it needs a shop "
            "that was not trained on)"
        )
    else:
        say(
            f"split: training shops {', '.join(out.train_shops)}; evaluation shops "
            f"{', '.join(out.eval_shops) or '(none: every figure is in-sample)'}"
        )
    # both lists, always: shops of earlier runs still in the warehouse stay out
    sample_cfg = {"train_shops": out.train_shops, "eval_shops": out.eval_shops}

    # 2. features
    fp = _fingerprint(ingest_outputs(), ingested, sample_cfg)

    def features_outputs() -> str:
        return _files_digest(
            [wh.root], ["buyer_vectors/**/data.parquet", "training_sample/data.parquet"]
        )

    cached = None if force else state.unchanged("features", fp, features_outputs())
    if cached is not None:
        say("[2/4] features: validated events unchanged, skipped")
        out.skipped.append("features")
        out.figures |= cached
    else:
        say("[2/4] features: sessions, product embeddings, buyer features, transform, vectors")
        feats = run_features(
            instance, shops=ingested, resources=resources,
            run_config={"ops": {"training_sample": {"config": sample_cfg}}},
            progress=progress,
        )  # fmt: skip
        out.figures |= feats.summary()
        state.record("features", fp, features_outputs(), feats.summary())
    split_file = wh.root / "shop_split.json"
    if split_file.exists():
        out.holdout_buyers = (
            json.loads(split_file.read_text()).get("holdout_buyers", {}).get("buyers", 0)
        )

    # 3. personas
    ops: dict[str, dict] = {k: {"config": dict(v)} for k, v in (persona_config or {}).items()}

    def op_config(op: str) -> dict:
        return ops.setdefault(op, {"config": {}})["config"]

    if codebook_size:
        op_config("persona_codebook")["codebook_size"] = codebook_size
    for op in ("distribution_recovery", "persona_cards"):  # this run's shops only
        op_config(op).setdefault("shops", ingested)
    if out.one_shop:  # Table 1 on the held-out buyers: out of sample
        op_config("codebook_report").setdefault("splits", ["holdout"])
    fp = _fingerprint(features_outputs(), ops)

    def personas_outputs() -> str:
        return _files_digest(
            [wh.root, data_dir / "artifacts"],
            ["persona_assignments/**/data.parquet", "persona_cards/current.json",
             "persona_codebook/current.json"],
        )  # fmt: skip

    cached = None if force else state.unchanged("personas", fp, personas_outputs())
    cards_html = ""
    if cached is not None:
        say("[3/4] personas: buyer vectors unchanged, skipped")
        out.skipped.append("personas")
        out.figures |= cached
        cards_html = cached.get("cards_html", "")
    else:
        say("[3/4] personas: codebook (K from the data unless --codes), report, assignments, "
            "p̂_s, recovery, cards")  # fmt: skip
        pers = run_personas(
            instance, shops=ingested, resources=resources, run_config={"ops": ops},
            progress=progress,
        )  # fmt: skip
        cards_html = pers.cards_html
        figures = {**pers.summary(), "cards_html": cards_html}
        out.figures |= figures
        state.record("personas", fp, personas_outputs(), figures)

    # 4. what to read before trusting it
    say("[4/4] checks and report")
    codebook_meta = _current_codebook_meta(data_dir)
    out.figures["codebook_size"] = codebook_meta.get("codebook_size")
    out.figures["codebook_size_rule"] = codebook_meta.get("codebook_size_rule")
    # the codebook's and the data's warnings, as the persona_cards asset wrote them
    cards_json = Path(cards_html).with_name("cards.json") if cards_html else None
    if cards_json is not None and cards_json.exists():
        out.warnings = list(json.loads(cards_json.read_text())["meta"].get("warnings", []))
    if out.one_shop:
        out.warnings.append(
            "one shop: cross-store recovery (JS, R² of held-out shops) is undefined; the "
            "codebook report (Table 1) is on buyers held out of training (out of sample; "
            f"{out.holdout_buyers:,} held out); the in-sample JS is labelled so"
        )
    elif not out.eval_shops:
        out.warnings.append("no evaluation shop: every recovery figure is in-sample")
    out.seconds = time.perf_counter() - t0
    out.outputs = {
        "persona cards": cards_html,
        "codebook report": str(
            data_dir
            / "artifacts"
            / "codebook_report"
            / codebook_meta.get("version", "")
            / "report.md"
        ),
        "warehouse (DuckDB)": str(wh.duckdb_path),
        "split": str(split_file),
        "quarantine": f"simpersona quarantine --data-dir {data_dir}",
        "Dagster UI": f"make ui DATA_DIR={data_dir}",
    }
    return out


def _current_codebook_meta(data_dir: Path) -> dict:
    from simpersona.artifacts import current_folder

    folder = current_folder(data_dir / "artifacts", "persona_codebook")
    meta = folder / "meta.json" if folder is not None else None
    return json.loads(meta.read_text()) if meta is not None and meta.exists() else {}


def ingest_by_shop(run: IngestRun) -> dict[str, dict[str, int]]:
    """Rows read, valid and rejected per shop (JSON-ready)."""
    return {
        shop: {
            "read": run.rows_read_by_shop.get(shop, 0),
            "valid": run.rows_valid_by_shop.get(shop, 0),
            "rejected": run.rows_rejected_by_shop.get(shop, 0),
        }
        for shop in sorted(run.rows_read_by_shop)
    }
