"""How well do persona codes recover the generator's planted buyer types? (docs/personas.md)

    python benchmarks/planted_recovery.py --quick   # 4 shops, 40 K buyers
    python benchmarks/planted_recovery.py           # 16 shops, 80 K buyers (~8 training shops)
    python benchmarks/planted_recovery.py --preset paper    # the paper's VQ-VAE preset
    python benchmarks/planted_recovery.py --real ../shared/data/public --preset default paper

Generates the default (Puffy-calibrated) population, computes buyer features and 403-d
vectors with the pipeline's functions, draws the paper §3.1 training sample, trains the VQ-VAE
(`--preset`: "default", ours, or "paper", `VQVAEConfig.paper()`) and the k-means baseline on
its train split, assigns every buyer (`simpersona.personas.planted.run_planted_recovery`).
Prints Table 1 on the train split (purity, mixing, incoherence, Calinski–Harabasz on the
403-d vectors and on the 16 behavioural scalars, usage) and the majority-mapped ARI against
the planted types over the non-E buyers of all shops (stratum E, a single landing page,
carries no signal; `*_all` includes it), and the 403-d Calinski–Harabasz of the tightest
codebooks that keep strata (and strata × bins) apart: what behavioural purity costs on that
index.

Last line: `buyers=… train=… ari_vqvae=… ari_kmeans=… ari_vqvae_all=… ari_kmeans_all=…
purity=vq/km incoherence_max=vq/km ch=vq/km ch_behaviour=vq/km ch_pure=strata/strata_bins perplexity=… dead_codes=…
train_s=… steps=…` (the same for every preset).

`--real DIR` runs the real public logs instead (no planted types): the Puffy and REES46 logs
of DIR go through the Dagster pipeline as in tests/test_personas_pipeline.py's real-data test
(train shop puffy, files under a temporary folder), then each `--preset` trains the
persona_codebook asset on that same split and codebook_report computes Table 1. One table
and one line per preset: `preset=… train=… purity=vq/km incoherence_max=vq/km ch=vq/km
ch_behaviour=vq/km ch_pure=… perplexity=… dead_codes=… train_s=… steps=…`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simpersona.personas.config import PRESETS  # noqa: E402


def planted(args: argparse.Namespace) -> None:
    from simpersona.personas.config import VQVAEConfig
    from simpersona.personas.planted import run_planted_recovery

    shops, buyers = (4, 40_000) if args.quick else (args.shops, args.buyers)
    for preset in args.preset:
        cfg = VQVAEConfig.preset(preset, seed=args.seed)
        r = run_planted_recovery(n_shops=shops, n_buyers=buyers, seed=args.seed, config=cfg)
        print(
            f"preset {preset}: {r.buyers:,} buyers, {r.train:,} in the train split (data "
            f"{r.build_seconds:.1f} s, VQ-VAE {r.training_seconds:.1f} s / {r.training_steps} "
            f"steps, k-means {r.kmeans_seconds:.1f} s)\n"
        )
        print(r.table())
        print(r.line())


def real(args: argparse.Namespace) -> None:
    """Both presets on the real-data test's split: ingestion and features once, then the
    persona_codebook and codebook_report assets once per preset."""
    import dagster as dg

    from dagster_project.definitions import all_assets
    from dagster_project.resources import resources_under
    from dagster_project.run import run_features, run_ingestion
    from simpersona.ingest.importers import run_import
    from simpersona.personas.planted import incoherence_max
    from simpersona.personas.quality import print_reports, purity_ceilings_line

    public = Path(args.real)
    with tempfile.TemporaryDirectory(prefix="real-presets-") as tmp, dg.instance_for_test() as inst:
        lake = Path(tmp) / "lake"
        run_import("shopify-pixels", [public / "puffy-dtc-web-events-2025"], lake, shop_id="puffy")
        rees = public / "rees46-multicategory-store-sample" / "2019-Nov_head_noheader.csv"
        run_import("rees46", [rees], lake, shop_id="rees46-nov")
        # the real-data test's resources: its buyer-hash key (the training sample is drawn
        # over hashed buyer ids, so the same key gives the same split) and reject share
        res = resources_under(tmp, "test-key", max_reject_share=0.2, tiny_pretrain_steps=3)
        run_ingestion(lake, instance=inst, resources=res)
        split = {"train_shops": ["puffy"], "eval_shops": ["rees46-nov"]}
        run_features(
            inst, resources=res, run_config={"ops": {"training_sample": {"config": split}}}
        )
        for preset in args.preset:
            cfg = {"preset": preset, "seed": args.seed, "kmeans_n_init": 1, "device": "cpu"}
            out = dg.materialize(
                all_assets,
                selection=["persona_codebook", "codebook_report"],
                instance=inst,
                resources=res,
                run_config={"ops": {"persona_codebook": {"config": cfg}}},
            )
            cmd = out.asset_materializations_for_node("persona_codebook")[0].metadata
            rmd = out.asset_materializations_for_node("codebook_report")[0].metadata
            rep = json.loads(Path(rmd["path"].value).with_name("report.json").read_text())
            pure = {k: rmd[k].value for k in ("ch_pure_strata", "ch_pure_strata_bins")}
            v, k = rep["VQ-VAE"], rep["k-means"]
            print(f"\npreset {preset}:")
            print_reports(rep)
            print(purity_ceilings_line(pure))
            print(
                f"preset={preset} train={v['n_buyers']} "
                f"purity={v['stratum_purity_pct']:.2f}/{k['stratum_purity_pct']:.2f} "
                f"incoherence_max={incoherence_max(v):.2f}/{incoherence_max(k):.2f} "
                f"ch={v['calinski_harabasz']:.1f}/{k['calinski_harabasz']:.1f} "
                f"ch_behaviour={v['calinski_harabasz_behaviour']:.1f}/"
                f"{k['calinski_harabasz_behaviour']:.1f} "
                f"ch_pure={pure['ch_pure_strata']:.1f}/{pure['ch_pure_strata_bins']:.1f} "
                f"perplexity={v['perplexity']:.1f} dead_codes={v['dead_codes']} "
                f"train_s={cmd['training_seconds'].value:.1f} steps={cmd['train_steps'].value}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 shops, 40 K buyers")
    ap.add_argument("--shops", type=int, default=16)
    ap.add_argument("--buyers", type=int, default=80_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--preset",
        nargs="+",
        choices=PRESETS,
        default=["default"],
        help="VQ-VAE preset(s), run one after the other (default: default)",
    )
    ap.add_argument("--real", metavar="DIR", help="the real public logs (../shared/data/public)")
    args = ap.parse_args()
    real(args) if args.real else planted(args)


if __name__ == "__main__":
    main()
