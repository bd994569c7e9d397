"""Counterfactual probe: does a persona model's next action depend on the goal's intent and
on its persona token?

Purchase-bin separation of simulated agents (#7's Cohen's d) takes a trained model, a
storefront, a browser and ~10 minutes. This asks the same question of the model alone, in
about a minute: take stage-2 prompts of product pages (where "add to cart" is one click
away) taught with the intent-only goal, rewrite the goal's intent to "buy" and to "browse"
(and the buyer-profile field with and without the persona token), sample replies at the
policy's temperature, and count add-to-carts. In the training data a "browse" session
never adds to the cart on such a page; a model that reads its goal carts far more under
"buy" than under "browse". Equal rates mean the intent (or the token) is ignored.

    from simpersona.llm.probe import ProbeConfig, intent_probe
    figures = intent_probe("data/artifacts/persona_model/<version>", rows, ProbeConfig())
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from simpersona.agent.actions import ActionError, parse_action
from simpersona.agent.prompt import NO_PROFILE
from simpersona.progress import track

INTENT = re.compile(r"\b(You are here to) (buy|browse)\b")
PROFILE = re.compile(r"^Buyer profile: .*$", re.MULTILINE)
PRODUCT_PAGE = re.compile(r"^Page: product\b", re.MULTILINE)  # Observation.render's first line


@dataclass(frozen=True)
class ProbeConfig:
    prompts: int = 40  # product-page prompts probed
    samples: int = 4  # replies sampled per prompt and variant
    temperature: float = 0.7  # the LLM policy's default
    max_new_tokens: int = 96  # a reply: reasoning, then the action's fields
    seed: int = 0
    num_threads: int | None = None  # torch CPU threads (None: torch's default)


def probe_prompts(rows: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[dict]:
    """Up to `n` stage-2 examples (seeded) of a product page with the intent-only goal."""
    pick = [
        r
        for r in rows
        if r.get("goal_kind") == "intent"
        and len(r.get("messages", ())) >= 2
        and PRODUCT_PAGE.search(r["messages"][1]["content"])
        and INTENT.search(r["messages"][1]["content"])
    ]
    random.Random(seed).shuffle(pick)
    return pick[:n]


def split_sessions(
    rows: Sequence[dict[str, Any]], holdout: float = 0.15, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows, whole sessions on one side: a seeded `holdout` share of the
    (shop_id, session_id) pairs is held out, so no held-out prompt's page history was trained
    on. Rows without a session id are their own session."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")

    of_row = [
        (r.get("shop_id"), r["session_id"]) if r.get("session_id") is not None else ("row", i)
        for i, r in enumerate(rows)
    ]
    keys = sorted(set(of_row), key=repr)
    random.Random(seed).shuffle(keys)
    held = set(keys[: max(1, round(len(keys) * holdout))])
    train = [r for r, k in zip(rows, of_row, strict=True) if k not in held]
    test = [r for r, k in zip(rows, of_row, strict=True) if k in held]
    return train, test


def with_intent(user: str, intent: str) -> str:
    """The user turn with its goal's intent set to `intent` ("buy" or "browse")."""
    return INTENT.sub(lambda m: f"{m.group(1)} {intent}", user, count=1)


def without_token(user: str) -> str:
    """The user turn with an empty buyer-profile field (the no-persona ablation's prompt)."""
    return PROFILE.sub(f"Buyer profile: {NO_PROFILE}", user, count=1)


def reply_action(text: str) -> str:
    """The action kind of a reply, validated as the runtime does (`parse_action`); "bad"
    for a reply the runtime would end as malformed."""
    try:
        # the kind as the runtime records it (`to_dict`): `_Action` itself has no `action`
        # field, each action class declares its own
        kind: str = parse_action(text).to_dict()["action"]
    except ActionError:
        return "bad"
    return kind


def intent_probe(
    model_dir: str | os.PathLike[str],
    rows: Sequence[dict[str, Any]],
    cfg: ProbeConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Add-to-cart rates of sampled replies under each intent, with and without the persona
    token, and in the data (`truth_*`, the taught action of the same prompts). `intent_gap`
    = atc_buy − atc_browse with the token; `token_gap` = atc_buy − atc_buy_without_token.
    Both carry a 95 % bootstrap interval over prompts, paired (each prompt's own difference
    is resampled: `*_ci_low`, `*_ci_high`).

    A prompt's four variants and their samples are one left-padded batch: prefill, the
    dominant cost on a CPU, runs once per variant rather than once per sample."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = cfg or ProbeConfig()
    prompts = probe_prompts(rows, cfg.prompts, cfg.seed)
    if not prompts:
        raise ValueError(
            "no stage-2 example of a product page with the intent-only goal to probe "
            "(goal_kind 'intent', 'Page: product', 'You are here to buy|browse')"
        )
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    counts: Counter[tuple[str, str, str]] = Counter()
    truth: Counter[tuple[str, bool]] = Counter()
    variants = [(i, p) for i in ("buy", "browse") for p in ("token", "none")]
    per_prompt: list[dict[tuple[str, str], float]] = []
    for row in track(prompts, "intent probe", unit="prompts", enabled=progress):
        system, user = row["messages"][0], row["messages"][1]["content"]
        taught = reply_action(row["messages"][2]["content"])
        intent_line = INTENT.search(user)
        assert intent_line is not None  # probe_prompts keeps only prompts that state it
        truth[(intent_line.group(2), taught == "add_to_cart")] += 1
        texts = []
        for intent, profile in variants:
            text = with_intent(user, intent)
            if profile == "none":
                text = without_token(text)
            texts.append(
                tok.apply_chat_template(
                    [system, {"role": "user", "content": text}],
                    add_generation_prompt=True,
                    tokenize=False,
                )
            )
        ids = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        with torch.no_grad():
            out = model.generate(
                **ids,
                do_sample=True,
                temperature=cfg.temperature,
                num_return_sequences=cfg.samples,
                max_new_tokens=cfg.max_new_tokens,
                pad_token_id=pad,
            )
        n = ids["input_ids"].shape[1]
        carts: Counter[tuple[str, str]] = Counter()
        for j, seq in enumerate(out):  # variant-major: samples of a variant are adjacent
            key = variants[j // cfg.samples]
            # one sequence of ids decodes to one string (a batch would give a list)
            kind = reply_action(cast(str, tok.decode(seq[n:], skip_special_tokens=True)))
            counts[(*key, kind)] += 1
            carts[key] += kind == "add_to_cart"
        per_prompt.append({k: carts[k] / cfg.samples for k in variants})

    def rate(intent: str, profile: str) -> float:
        total = sum(v for (i, p, _), v in counts.items() if (i, p) == (intent, profile))
        return counts[(intent, profile, "add_to_cart")] / total if total else float("nan")

    def truth_rate(intent: str) -> float:
        total = truth[(intent, True)] + truth[(intent, False)]
        return truth[(intent, True)] / total if total else float("nan")

    def paired_ci(a: tuple[str, str], b: tuple[str, str]) -> tuple[float, float]:
        diffs = np.array([p[a] - p[b] for p in per_prompt])
        if len(diffs) < 2 or np.all(diffs == diffs[0]):
            return float(diffs.mean()), float(diffs.mean())
        from scipy.stats import bootstrap

        res = bootstrap(
            (diffs,), np.mean, n_resamples=2000, method="percentile", random_state=cfg.seed
        )
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    atc = {f"atc_{i}{'' if p == 'token' else '_without_token'}": rate(i, p) for i, p in variants}
    replies = sum(counts.values())
    intent_ci = paired_ci(("buy", "token"), ("browse", "token"))
    token_ci = paired_ci(("buy", "token"), ("buy", "none"))
    return {
        "prompts": len(prompts),
        "samples": cfg.samples,
        **atc,
        "intent_gap": atc["atc_buy"] - atc["atc_browse"],
        "intent_gap_ci_low": intent_ci[0],
        "intent_gap_ci_high": intent_ci[1],
        "token_gap": atc["atc_buy"] - atc["atc_buy_without_token"],
        "token_gap_ci_low": token_ci[0],
        "token_gap_ci_high": token_ci[1],
        "truth_atc_buy": truth_rate("buy"),
        "truth_atc_browse": truth_rate("browse"),
        "unparsed_rate": sum(v for (_, _, k), v in counts.items() if k == "bad") / replies,
        "actions": {f"{i}/{p}/{k}": v for (i, p, k), v in sorted(counts.items())},
    }
