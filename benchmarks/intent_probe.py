"""Does the persona model read its goal's intent and its persona token? (docs/llm.md)

    python benchmarks/intent_probe.py --root data               # the current persona model
    python benchmarks/intent_probe.py --model DIR --data stage2.jsonl
    python benchmarks/intent_probe.py --root data --quick       # 10 prompts x 2 samples
    python benchmarks/intent_probe.py --data stage2.jsonl --train-from DIR --epochs 3 --out m3

Samples the model's reply (temperature 0.7, the LLM policy's) on stage-2 prompts of product
pages taught with the intent-only goal, with the goal's intent rewritten to "buy" and to
"browse", each with and without the persona token (`simpersona.llm.probe`), and counts
add-to-carts. In the data a "browse" session never carts on such a page, so a model that
reads its goal has a large `intent_gap`; purchase-bin separation of simulated agents
(Cohen's d) cannot appear without it. No browser, no server: about a minute on 2 cores.

`--train-from DIR` first fine-tunes DIR (a stage-1 or stage-2 model folder) with stage 2
(`TrainConfig.cpu()`, `--epochs`) on the data less a held-out share of whole sessions
(`--holdout`, default 0.15), writes it to `--out`, and probes two prompt sets: prompts the model
was trained on (`train_*`) and prompts of held-out sessions (`held_*`). A model that memorises
which page got which reply, instead of reading its goal, shows no gap on either: the probe
rewrites the intent, and only a model that reads it can follow. Last line then:
`train_examples=… held_examples=… epochs=… train_seconds=… final_loss=… train_atc_buy=… …
held_intent_gap=… …`.

`--root` reads `<root>/artifacts/persona_model/current.json` and
`<root>/warehouse/sft/stage2.jsonl`. Last line: `prompts=… samples=… atc_buy=… atc_browse=…
intent_gap=… atc_buy_without_token=… token_gap=… truth_atc_buy=… truth_atc_browse=…
unparsed_rate=… seconds=…`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simpersona.artifacts import current_folder  # noqa: E402

FIGURES = [
    "prompts",
    "atc_buy",
    "atc_browse",
    "intent_gap",
    "atc_buy_without_token",
    "token_gap",
    "truth_atc_buy",
    "truth_atc_browse",
    "unparsed_rate",
]


def probe_config(args: argparse.Namespace):
    from simpersona.llm.probe import ProbeConfig

    return ProbeConfig(
        prompts=10 if args.quick else args.prompts,
        samples=2 if args.quick else args.samples,
        seed=args.seed,
        num_threads=args.threads,
    )


def resolve(args: argparse.Namespace) -> tuple[Path, Path]:
    """The model folder and the stage-2 dataset, from --model/--data or from --root."""
    model, data = args.model, args.data
    if model is None:
        model = current_folder(args.root / "artifacts", "persona_model")
        if model is None:
            raise SystemExit(
                "no current persona_model under --root: materialize it, or pass --model"
            )
    if data is None:
        data = args.root / "warehouse" / "sft" / "stage2.jsonl"
    for p in (model, data):
        if not p.exists():
            raise SystemExit(f"{p} not found")
    return model, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data"), help="data folder of a run")
    ap.add_argument("--model", type=Path, default=None, help="persona model folder")
    ap.add_argument("--data", type=Path, default=None, help="stage-2 SFT JSONL")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="10 prompts x 2 samples")
    ap.add_argument("--train-from", type=Path, default=None, help="fine-tune this model first")
    ap.add_argument("--epochs", type=float, default=3.0, help="--train-from: stage-2 epochs")
    ap.add_argument("--holdout", type=float, default=0.15, help="--train-from: sessions held out")
    ap.add_argument("--out", type=Path, default=None, help="--train-from: model folder written")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.train_from is not None:
        train_then_probe(args)
        return

    from simpersona.llm.probe import intent_probe
    from simpersona.traces.dataset import read_dataset

    model, data = resolve(args)
    rows = read_dataset(data)
    t0 = time.perf_counter()
    r = intent_probe(model, rows, probe_config(args), progress=True)
    seconds = time.perf_counter() - t0
    print(f"model: {model}")
    for key, n in r["actions"].items():
        print(f"  {key}: {n}")
    keys = ["prompts", "samples", *FIGURES[1:]]
    figures = {k: round(r[k], 3) if isinstance(r[k], float) else r[k] for k in keys}
    figures["seconds"] = round(seconds, 1)
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


def train_then_probe(args: argparse.Namespace) -> None:
    """--train-from: stage 2 on the training sessions, then the probe on trained and on
    held-out prompts."""
    from simpersona.llm.probe import intent_probe, split_sessions
    from simpersona.llm.train import train_stage2
    from simpersona.llm.train_config import TrainConfig
    from simpersona.traces.dataset import read_dataset

    if args.data is None or args.out is None:
        raise SystemExit("--train-from needs --data (stage-2 JSONL) and --out (model folder)")
    if not (args.train_from / "config.json").exists():
        raise SystemExit(f"{args.train_from} is not a model folder (no config.json)")
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found")
    from transformers import AutoTokenizer

    from simpersona.agent.prompt import persona_token

    if persona_token(0) not in AutoTokenizer.from_pretrained(args.train_from).get_vocab():
        raise SystemExit(
            f"{args.train_from} has no persona tokens: pass a stage-1 or stage-2 model folder"
        )
    train, held = split_sessions(read_dataset(args.data), args.holdout, args.seed)
    cfg = TrainConfig.cpu(epochs=args.epochs, seed=args.seed, num_threads=args.threads)
    result = train_stage2(args.train_from, train, args.out, cfg)
    probe = probe_config(args)
    figures = {
        "train_examples": len(train),
        "held_examples": len(held),
        "epochs": args.epochs,
        "train_seconds": round(result.seconds, 1),
        "final_loss": round(result.final_loss, 4),
    }
    for name, rows in (("train", train), ("held", held)):
        try:
            r = intent_probe(args.out, rows, probe, progress=True)
        except ValueError as exc:
            print(f"{name} prompts: {exc}", file=sys.stderr)
            r = {}
        for k in FIGURES:
            v = r.get(k)
            figures[f"{name}_{k}"] = round(v, 3) if isinstance(v, float) else v
    print(f"model: {args.out}")
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
