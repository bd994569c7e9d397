"""Agent steps per minute through `serve-llm` with 1, 4 and 16 concurrent agents, on a real
base model (SmolLM2-135M-Instruct by default, converted from its wheel on first use).

Each agent is a thread that sends one step after another through the official `openai`
client, as the LLM policy does: a storefront prompt rendered by the agent's own renderer
(`agent.prompt.messages_for_step`: system prompt, goal, persona token, last steps, a page of a
generated shop — product, listing or cart, ~450-650 tokens in SmolLM2's tokens) and that
page's action schema as the response format (guided decoding), up to 48 reply tokens at
temperature 0.7. The server batches concurrent requests and computes their shared prompt
prefix once (simpersona.llm.server). The batched rate is compared with the single agent's,
measured in the same process on the same server.

    python benchmarks/bench_llm_serve.py            # 90 s per level
    python benchmarks/bench_llm_serve.py --quick    # 15 s per level, 1 and 16 agents

Prints one line per level and, last, `name=value` pairs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def storefront_prompts(n: int, seed: int = 0) -> list[tuple[list[dict], dict]]:
    """(messages, action schema) of `n` agent steps on pages of a generated shop."""
    from simpersona.agent.llm_policy import action_schema
    from simpersona.agent.observation import build_observation
    from simpersona.agent.prompt import messages_for_step, persona_token
    from simpersona.synth.vocab import CATEGORIES

    rng = random.Random(seed)
    cats = [c for c in CATEGORIES][:6]
    out = []
    for i in range(n):
        cat = rng.choice(cats)
        names = [f"{rng.choice(['Classic', 'Trail', 'Everyday', 'Premium'])} {cat.title} "
                 f"{rng.choice(['Black', 'Sand', 'Navy', 'Olive'])} {j}" for j in range(24)]  # fmt: skip
        kind = rng.choice(["product", "collection", "cart", "search"])
        elements = [{"id": "search-input", "kind": "input", "label": "Search products",
                     "region": "header"}]  # fmt: skip
        if kind == "product":
            elements += [
                {"id": "quantity-input", "kind": "input", "label": "Quantity", "value": "1"},
                {"id": "add-to-cart-button", "kind": "button", "label": "Add to cart"},
            ]
        if kind == "cart":
            elements += [{"id": "checkout-button", "kind": "button", "label": "Check out"}]
        elements += [{"id": f"product-link-p{j:05d}", "kind": "link", "label": names[j],
                      "product_id": f"p{j:05d}"} for j in range(rng.randint(4, 24))]  # fmt: skip
        elements += [{"id": f"nav-collection-{k}", "kind": "link", "label": c.title,
                      "region": "nav"} for k, c in enumerate(cats)]  # fmt: skip
        raw = {
            "url": f"http://127.0.0.1:8000/{kind}/{i}",
            "page": kind,
            "title": names[0],
            "heading": names[0],
            "price": f"${rng.randint(9, 199)}.99",
            "cart_count": str(rng.randint(0, 3)),
            "text": " ".join(names[:8]) + " Tax included. Free standard shipping.",
            "elements": elements,
        }
        obs = build_observation(raw)
        progress = [f"{k + 1}. clicked product-link-p{k:05d} -> product page “{names[k]}”"
                    for k in range(rng.randint(0, 6))]  # fmt: skip
        goal = f"You are here to {rng.choice(['buy', 'browse'])} {cat.title.lower()}."
        msgs = messages_for_step(goal, persona_token(rng.randrange(256)), progress, obs)
        out.append((msgs, action_schema(obs)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="15 s per level, 1 and 16 agents")
    ap.add_argument("--base", default="smollm2-135m-instruct", help="packaged name or folder")
    ap.add_argument("--models-dir", type=Path, default=Path("data/models"))
    ap.add_argument("--seconds", type=float, default=None, help="measured time per level")
    ap.add_argument("--levels", default=None, help="comma-separated agent counts")
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()

    from openai import OpenAI
    from transformers import AutoTokenizer

    from simpersona.llm.base import resolve_base
    from simpersona.llm.server import serve_in_background

    seconds = args.seconds or (15.0 if args.quick else 90.0)
    levels = [int(x) for x in (args.levels or ("1,16" if args.quick else "1,4,16")).split(",")]
    folder = resolve_base(args.base, args.models_dir)
    prompts = storefront_prompts(64)
    tok = AutoTokenizer.from_pretrained(folder)
    lengths = [len(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]) for m, _ in prompts]  # fmt: skip
    print(f"prompts: median {statistics.median(lengths):.0f} tokens "
          f"(min {min(lengths)}, max {max(lengths)}); {folder}")  # fmt: skip
    rates: dict[int, float] = {}
    with serve_in_background(folder) as url:
        client = OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=600)
        fmt = lambda schema: {"type": "json_schema",  # noqa: E731
                              "json_schema": {"name": "action", "schema": schema}}  # fmt: skip

        def step(i: int) -> int:
            msgs, schema = prompts[i % len(prompts)]
            r = client.chat.completions.create(
                model=folder.name, messages=msgs, max_tokens=args.max_tokens, temperature=0.7,
                seed=i, response_format=fmt(schema),
            )  # fmt: skip
            return r.usage.completion_tokens

        step(0)  # warm-up: first-call costs out of the measurement
        for agents in levels:
            done, tokens, lock = [0], [0], threading.Lock()
            stop_at = time.perf_counter() + seconds

            def agent(a: int, stop_at=stop_at, done=done, tokens=tokens, lock=lock) -> None:
                k = 0
                while time.perf_counter() < stop_at:
                    n = step(a * 1000 + k)
                    k += 1
                    with lock:
                        done[0] += 1
                        tokens[0] += n

            t0 = time.perf_counter()
            threads = [threading.Thread(target=agent, args=(a,)) for a in range(agents)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0  # the last steps finish after stop_at: counted
            rates[agents] = done[0] / wall * 60
            print(f"agents={agents:>2} steps={done[0]:>4} wall={wall:6.1f}s "
                  f"steps_per_min={rates[agents]:6.1f} reply_tokens={tokens[0] / max(done[0], 1):.1f}")  # fmt: skip
    one = rates[levels[0]]
    figures = {f"steps_per_min_{a}": round(r, 1) for a, r in rates.items()}
    figures |= {f"speedup_{a}": round(r / one, 2) for a, r in rates.items() if a != levels[0]}
    figures["prompt_tokens_median"] = int(statistics.median(lengths))
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
