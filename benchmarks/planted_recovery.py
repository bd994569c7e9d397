"""How well do persona codes recover the generator's planted buyer types? (issue 4 acceptance)

    python benchmarks/planted_recovery.py --quick   # 4 shops, 40 K buyers
    python benchmarks/planted_recovery.py           # 16 shops, 80 K buyers (~8 training shops)

Generates the default (Puffy-calibrated) population, computes buyer features and 403-d
vectors with the pipeline's functions, draws the SPEC §5 training sample, trains the VQ-VAE
(paper defaults) and the k-means baseline on its train split, assigns every buyer
(`simpersona.personas.planted.run_planted_recovery`). Prints Table 1 on the train split
(purity, mixing, incoherence, Calinski–Harabasz on the 403-d vectors and on the 16
behavioural scalars, usage) and the majority-mapped ARI against the planted types over the
non-E buyers of all shops (stratum E, a single landing page, carries no signal; `*_all`
includes it), and the 403-d Calinski–Harabasz of the tightest codebooks that keep strata
(and strata × bins) apart: what behavioural purity costs on that index.

Last line: `buyers=… train=… ari_vqvae=… ari_kmeans=… ari_vqvae_all=… ari_kmeans_all=…
purity=vq/km incoherence_max=vq/km ch=vq/km ch_behaviour=vq/km ch_pure=strata/strata_bins perplexity=… dead_codes=…
train_s=… steps=…`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simpersona.personas.planted import run_planted_recovery  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 shops, 40 K buyers")
    ap.add_argument("--shops", type=int, default=16)
    ap.add_argument("--buyers", type=int, default=80_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shops, buyers = (4, 40_000) if args.quick else (args.shops, args.buyers)

    r = run_planted_recovery(n_shops=shops, n_buyers=buyers, seed=args.seed)
    print(
        f"{r.buyers:,} buyers, {r.train:,} in the train split (data {r.build_seconds:.1f} s, "
        f"VQ-VAE {r.training_seconds:.1f} s / {r.training_steps} steps, "
        f"k-means {r.kmeans_seconds:.1f} s)\n"
    )
    print(r.table())
    print(r.line())


if __name__ == "__main__":
    main()
