"""The embedded default language model: a byte-level BPE tokenizer and a small Qwen3, built
from scratch on a local corpus (nothing is downloaded).

    path = build_tiny_model(texts, "models/tiny")        # or: simpersona build-tiny-llm
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)

It has the architecture, special tokens and chat format of Qwen3 (ChatML), so everything
written against it (persona tokens, SFT with assistant-only loss, the server) runs unchanged
on a real local checkpoint such as Qwen3-14B-Base. Its weights are random until trained; it
exists so the whole pipeline runs and is tested on a CPU in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from simpersona.lake import shareable
from simpersona.llm.pretrain import PretrainConfig, pretrain_base

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)  # ids 0, 1, 2 in the tiny tokenizer
PRETRAIN_STATS = "pretrain.json"  # the base's pretraining figures, beside its weights

# ChatML, as Qwen writes it. The `{% generation %}` block marks what an assistant wrote, for
# `return_assistant_tokens_mask` and TRL's assistant_only_loss (trl#3586). <|im_end|> sits
# inside the block: a model never trained on its end-of-turn token never stops (trl#5988).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class TinyModelConfig:
    """Size of the tiny Qwen3. With the default corpus (3,726 BPE tokens, 3,776 rows) the
    defaults make 877,312 parameters: tied embeddings 483 k, two layers of 197 k. Measured on
    one CPU thread: ~0.12 s per AdamW step at batch 4 × 256 tokens, ~3 ms per generated token;
    the safetensors file is 3.5 MB."""

    vocab_size: int = 4096  # BPE vocabulary incl. the 3 special tokens
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2  # grouped-query attention, as in Qwen3
    head_dim: int = 32
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = True
    pad_vocab_to_multiple_of: int = 64  # embedding rows; ids past the tokenizer are unused


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (the GPT-2/Qwen scheme: any byte string round-trips) on `texts`,
    with Qwen's special tokens and a ChatML chat template with generation markers.

    eos is <|im_end|> (a chat model stops at the end of its turn), pad is <|endoftext|>."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        clean_up_tokenization_spaces=False,
        model_max_length=TinyModelConfig.max_position_embeddings,
    )
    fast.add_special_tokens(
        {"extra_special_tokens": [IM_START]}, replace_extra_special_tokens=False
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def default_corpus(seed: int = 0, n_examples: int = 3000) -> Iterator[str]:
    """Text for the tokenizer when no trace corpus is given: the generator's product words and
    titles, the agent's action schema, and chat-formatted JSON actions, so that JSON
    punctuation, the action names and the shop vocabulary become single tokens."""
    import numpy as np

    from simpersona.agent.actions import ACTION_KINDS, schema_text
    from simpersona.synth.vocab import CATEGORIES, INFO_PAGES, PRODUCT_LINES

    rng = np.random.default_rng(seed)
    schema = schema_text()
    yield schema
    yield " ".join(ACTION_KINDS)
    yield " ".join(str(p) for p in INFO_PAGES)
    titles: list[str] = []
    for cat in CATEGORIES:
        yield f"{cat.title} {cat.key} " + " ".join(cat.blog_topics)
        for noun in cat.nouns:
            for _ in range(8):
                feats = noun.features or cat.features
                uses = cat.uses if noun.uses is None else noun.uses
                words = [
                    rng.choice(cat.audiences) if cat.audiences else "",
                    rng.choice(feats),
                    rng.choice(uses) if uses else "",
                    noun.singular if rng.random() < 0.7 else noun.plural,
                ]
                line = PRODUCT_LINES[int(rng.integers(len(PRODUCT_LINES)))][0]
                title = f"{line} " + " ".join(str(w) for w in words if w)
                if cat.variants:
                    title += f" – {rng.choice(cat.variants)}"
                titles.append(title)
                yield title
    for _ in range(n_examples):
        title = titles[int(rng.integers(len(titles)))]
        kind = ACTION_KINDS[int(rng.integers(len(ACTION_KINDS)))]
        action: dict[str, object] = {"action": kind}
        if kind == "search":
            action["query"] = " ".join(title.split()[-3:]).lower()
        elif kind in ("click", "type", "select"):
            action["id"] = f"product-link-p{int(rng.integers(100000)):05d}"
            if kind == "type":
                action["text"] = "ann@example.com"
            if kind == "select":
                action["value"] = str(rng.choice(["US", "DE", "M", "L", "Navy"]))
        elif kind == "add_to_cart":
            action["quantity"] = int(rng.integers(1, 5))
        elif kind == "scroll":
            action["direction"] = str(rng.choice(["down", "up"]))
        elif kind == "end_session":
            action["reason"] = "found nothing I like"
        if rng.random() < 0.5:
            action = {"reasoning": f"I am looking for {title.lower()}.", **action}
        yield (
            f"{IM_START}system\nYou are a shopper. Reply with one JSON action:\n{schema}{IM_END}\n"
            f"{IM_START}user\nPage: {title}{IM_END}\n"
            f"{IM_START}assistant\n{json.dumps(action)}{IM_END}\n"
        )
        yield json.dumps({"goal": f"buy {title}", "category": title.split()[-1]}, indent=2)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def tiny_qwen3_config(tokenizer: PreTrainedTokenizerFast, config: TinyModelConfig) -> Qwen3Config:
    """The Qwen3Config of the tiny model for `tokenizer`."""
    return Qwen3Config(
        vocab_size=_round_up(len(tokenizer), config.pad_vocab_to_multiple_of),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_model(
    texts: Iterable[str] | None,
    out_dir: str | os.PathLike[str],
    config: TinyModelConfig | None = None,
    seed: int = 0,
    pretrain: PretrainConfig | None = None,
) -> Path:
    """Train the tokenizer on `texts` (default: `default_corpus()`), create a randomly
    initialised Qwen3ForCausalLM (seeded) and save both to `out_dir`, which
    `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` then load.
    With `pretrain` (and `texts`), the model then reads the same texts as a causal LM
    (`simpersona.llm.pretrain`); its figures go to `pretrain.json` in the folder
    (`pretrain_stats`).

    Built in a temporary folder beside `out_dir` and renamed into place, so a crash never
    leaves a half-written model; an existing `out_dir` is replaced."""
    config = config or TinyModelConfig()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    if texts is not None:
        texts = list(texts)  # read twice: the tokenizer, then pretraining
    tokenizer = train_tokenizer(default_corpus(seed) if texts is None else texts, config.vocab_size)
    tokenizer.model_max_length = config.max_position_embeddings
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(tiny_qwen3_config(tokenizer, config))
    model.generation_config.eos_token_id = [
        tokenizer.convert_tokens_to_ids(IM_END),
        tokenizer.convert_tokens_to_ids(ENDOFTEXT),
    ]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    stats = None
    if pretrain is not None and pretrain.steps > 0 and texts:
        stats = pretrain_base(model, tokenizer, texts, pretrain)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    shareable(tmp)  # mkdtemp makes it private (0o700)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "tiny_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        if stats is not None:
            (tmp / PRETRAIN_STATS).write_text(json.dumps(stats, indent=2) + "\n")
        old = None
        if out.exists():  # move the old one aside first: os.replace can't replace a folder
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def pretrain_stats(model_dir: str | os.PathLike[str]) -> dict | None:
    """The pretraining figures `build_tiny_model` saved with the model; None: not pretrained."""
    path = Path(model_dir) / PRETRAIN_STATS
    return json.loads(path.read_text()) if path.exists() else None


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())
