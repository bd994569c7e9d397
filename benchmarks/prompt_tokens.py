"""Prompt lengths of the SFT set, in a base model's tokens: every taught step of the replayed
traces rendered as the LLM policy renders it (agent.prompt.messages_for_step, the model's own
chat template with the generation prompt), old and new renderers alike measured the same way.

    python benchmarks/prompt_tokens.py --data data            # after `simpersona demo`
    python benchmarks/prompt_tokens.py --data data --quick    # the first 60 steps

Prints the percentiles by page kind and, last, one line of `name=value` pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"), help="a data folder with traces")
    ap.add_argument("--base", default="smollm2-135m-instruct", help="packaged name or folder")
    ap.add_argument("--quick", action="store_true", help="the first 60 steps only")
    args = ap.parse_args()

    import numpy as np
    from transformers import AutoTokenizer

    from simpersona.agent.prompt import messages_for_step, persona_token
    from simpersona.llm.base import resolve_base

    files = sorted((args.data / "warehouse" / "traces").glob("*.jsonl"))
    if not files:
        sys.exit(f"no replayed traces under {args.data}/warehouse/traces: run `simpersona demo`")
    tok = AutoTokenizer.from_pretrained(resolve_base(args.base, args.data / "models"))
    by_kind: dict[str, list[int]] = defaultdict(list)
    n = 0
    for f in files:
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            for s in rec["steps"]:
                if s.get("action") is None or s.get("error") or (args.quick and n >= 60):
                    continue
                action = {**s["action"], "reasoning": s.get("reasoning") or ""}
                msgs = messages_for_step(rec["goal_stage2"], persona_token(rec.get("token") or 0),
                                         s.get("memory") or [], s["observation"], action)  # fmt: skip
                ids = tok.apply_chat_template(
                    msgs[:-1], tokenize=True, add_generation_prompt=True, return_dict=True
                )["input_ids"]
                by_kind[s["observation"]["kind"]].append(len(ids))
                n += 1
    every = np.array([x for v in by_kind.values() for x in v])
    for kind, xs in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        print(f"{kind:<12} steps={len(xs):>4} median={int(np.median(xs)):>5} "
              f"p95={int(np.percentile(xs, 95)):>5}")  # fmt: skip
    p50, p95 = np.percentile(every, [50, 95])
    print(f"steps={every.size} median={int(p50)} p95={int(p95)} max={int(every.max())} "
          f"under_600={float((every <= 600).mean()):.3f} base={args.base}")  # fmt: skip


if __name__ == "__main__":
    main()
