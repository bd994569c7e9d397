"""`simpersona run` as a Dagster job, for the UI: one op that runs the pipeline of
`dagster_project.pipeline` against this instance, so each stage's asset runs appear beside
it under Runs. (A single asset job cannot span the chain: its assets have three partitions
definitions — shop-days, shops and none.)"""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field


class SimpersonaRunConfig(dg.Config):
    shops: list[str] = Field(default=[], description="Only these shops of the lake; [] = all.")
    train_shops: list[str] = Field(default=[], description="Training shops; [] = the seeded split.")
    eval_shops: list[str] = Field(default=[], description="Evaluation shops held out of fits.")
    codes: int = Field(default=0, description="Persona tokens K; 0 = from the data.")
    max_reject_share: float = Field(
        default=0.05, description="Fail a partition above this share of rejected rows."
    )
    force: bool = Field(default=False, description="Rerun every stage, changed or not.")


@dg.op(
    description="Ingest → features → personas for the shops in the lake, skipping stages "
    "whose inputs did not change (docs/own-logs.md)."
)
def simpersona_run(context: dg.OpExecutionContext, config: SimpersonaRunConfig) -> dg.Output:
    from dagster_project.pipeline import run_pipeline

    data_dir = Path(os.environ.get("SIMPERSONA_DATA_DIR") or "data")
    res = run_pipeline(
        data_dir,
        shops=config.shops or None,
        train_shops=config.train_shops or None,
        eval_shops=config.eval_shops or None,
        codebook_size=config.codes,
        max_reject_share=config.max_reject_share,
        force=config.force,
        instance=context.instance,
        say=context.log.info,
        progress=False,
    )
    for w in res.warnings:
        context.log.warning(w)
    if res.ingest_failures:
        raise dg.Failure(
            f"{len(res.ingest_failures)} partition(s) failed at ingest; the other shops ran: "
            + "; ".join(f"{s} {d or 'catalog'}: {m}" for s, d, m in res.ingest_failures)
        )
    summary = res.summary()
    return dg.Output(
        None,
        metadata={
            "train_shops": dg.MetadataValue.json(res.train_shops),
            "eval_shops": dg.MetadataValue.json(res.eval_shops),
            "codebook_size": summary.get("codebook_size") or 0,
            "skipped": ", ".join(res.skipped) or "-",
            "warnings": dg.MetadataValue.json(res.warnings),
            "cards": dg.MetadataValue.path(res.outputs.get("persona cards", "")),
            "seconds": round(res.seconds, 1),
        },
    )


@dg.job(description="simpersona run: the shops in the lake from ingest to persona cards.")
def simpersona_run_job() -> None:
    simpersona_run()
