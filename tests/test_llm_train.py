"""Two-stage persona grounding on the tiny model (simpersona.llm.train): stage 1 moves only the
persona rows, labels cover assistant turns only, save/reload is exact, stage 2 and LoRA."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpersona.agent.prompt import messages_for_step, persona_token
from simpersona.llm.persona_tokens import add_persona_tokens, is_tied, persona_token_ids
from simpersona.llm.row_delta import merge_rows, train_only_rows
from simpersona.llm.tiny import IM_END, build_tiny_model
from simpersona.llm.train import build_trainer, train_stage1, train_stage2, train_two_stage
from simpersona.llm.train_config import TrainConfig

K = 8
USED = (1, 3, 5)  # persona tokens that occur in the data; the others never do
STEPS = 3


def _examples(n: int = 12) -> list[dict]:
    """Short SFT examples in the dataset's format (system, user with the persona token in
    the profile, assistant JSON action), built with the agent's own prompt."""
    rows = []
    for i in range(n):
        token = USED[i % len(USED)]
        obs = {
            "url": f"http://127.0.0.1:8000/products/p{i:05d}",
            "kind": "product",
            "title": f"Trail Runner {i}",
            "text": f"Trail Runner {i} $49.00 Add to cart",
            "elements": [
                {"id": "add-to-cart-button", "kind": "button", "label": "Add to cart"},
                {"id": "search-input", "kind": "input", "label": "Search products"},
            ],
        }
        action = (
            {"action": "add_to_cart", "quantity": 1 + i % 3}
            if token == 1
            else {"action": "end_session", "reason": "just looking"}
        )
        action["reasoning"] = "I like these shoes." if token == 1 else "Nothing for me."
        rows.append(
            {
                "messages": messages_for_step(
                    "Find running shoes.", persona_token(token), [], obs, action
                ),
                "token": token,
                "shop_id": "shop-000",
            }
        )
    return rows


def _cfg(**kw) -> TrainConfig:
    base = dict(
        max_steps=STEPS, effective_batch=4, per_device_batch=4, warmup_steps=0, progress=False
    )
    return TrainConfig.cpu(**{**base, **kw})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_model(None, tmp_path_factory.mktemp("grounding") / "tiny", seed=0)


@pytest.fixture(scope="module")
def untied(base, tmp_path_factory):
    """The tiny model with a separate lm_head (as Qwen3-14B has)."""
    model = AutoModelForCausalLM.from_pretrained(base)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone())
    out = tmp_path_factory.mktemp("grounding") / "untied"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    assert not is_tied(AutoModelForCausalLM.from_pretrained(out))
    return out


@pytest.fixture(scope="module")
def stage1(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("grounding") / "stage1"
    return train_stage1(base, _examples(), out, _cfg(), k=K), out


def _reference(model_dir):
    """The base model with persona tokens added as stage 1 adds them (mean init)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = add_persona_tokens(model, tok, K, init="mean")
    return model, ids


def _assert_only_persona_rows_moved(ref, trained, ids) -> None:
    ref_sd, new_sd = ref.state_dict(), trained.state_dict()
    assert ref_sd.keys() == new_sd.keys()
    persona = torch.tensor(ids)
    used = torch.tensor([ids[t] for t in USED])
    unused = torch.tensor([ids[t] for t in range(K) if t not in USED])
    rows_seen = 0
    for name, before in ref_sd.items():
        after = new_sd[name]
        assert after.dtype == before.dtype and after.shape == before.shape, name
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            keep = torch.ones(before.shape[0], dtype=torch.bool)
            keep[persona] = False
            assert torch.equal(after[keep], before[keep]), f"{name}: a non-persona row changed"
            if name.endswith("embed_tokens.weight"):  # tokens in the data moved
                assert not torch.equal(after[used], before[used])
                for i in used:
                    assert not torch.equal(after[i], before[i]), f"{name}: row {int(i)} unchanged"
                if not is_tied(trained):  # input rows of absent tokens get no gradient
                    assert torch.equal(after[unused], before[unused])
            rows_seen += 1
        else:
            assert torch.equal(after, before), f"{name} changed in stage 1"
    assert rows_seen >= 1


def test_stage1_trains_only_persona_rows(base, stage1):
    result, out = stage1
    trained = AutoModelForCausalLM.from_pretrained(out)
    ref, ids = _reference(base)
    assert is_tied(trained)
    _assert_only_persona_rows_moved(ref, trained, ids)
    assert result.steps == STEPS and result.n_examples == 12 and result.n_dropped == 0
    assert result.trainable_params == K * trained.config.hidden_size  # K rows, nothing else
    assert result.tokens > result.loss_tokens > 0
    assert json.loads((out / "train_result.json").read_text())["steps"] == STEPS


def test_stage1_untied_moves_input_and_output_rows(untied, tmp_path):
    out = tmp_path / "s1"
    result = train_stage1(untied, _examples(), out, _cfg(), k=K)
    trained = AutoModelForCausalLM.from_pretrained(out)
    ref, ids = _reference(untied)
    assert not is_tied(trained)
    _assert_only_persona_rows_moved(ref, trained, ids)
    # the output side has its own trainable rows (softmax gradient reaches every row)
    head = trained.lm_head.weight[torch.tensor(ids)]
    assert not torch.equal(head, ref.lm_head.weight[torch.tensor(ids)])
    assert result.trainable_params == 2 * K * trained.config.hidden_size


def test_labels_only_on_assistant_turns_with_end_of_turn(base, tmp_path):
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    add_persona_tokens(model, tok, K)
    rows = _examples(4)
    trainer, keep, lengths = build_trainer(model, tok, rows, _cfg(), tmp_path / "w")
    assert keep == [0, 1, 2, 3]
    for i, ex in enumerate(trainer.train_dataset):
        ids, labels = ex["input_ids"], ex["labels"]
        assert len(ids) == len(labels) == lengths[i]
        on = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert all(lab in (-100, t) for t, lab in zip(ids, labels, strict=True))
        # exactly the assistant content and its <|im_end|>: the model learns to stop
        assert tok.decode(on) == rows[i]["messages"][-1]["content"] + IM_END
        assert on[-1] == tok.convert_tokens_to_ids(IM_END)
        # nothing of the system or user turns (persona token included) is a target
        first = next(j for j, lab in enumerate(labels) if lab != -100)
        prompt = tok.decode(ids[:first])
        assert prompt.endswith("<|im_start|>assistant\n") and "<|persona_" in prompt
        assert all(lab == -100 for lab in labels[:first])
    # padded batches: the padding is masked too
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_overlong_examples_are_dropped_not_cut(base, tmp_path):
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    add_persona_tokens(model, tok, K)
    rows = _examples(3)
    rows[1]["messages"][1]["content"] += " filler" * 2000
    trainer, keep, lengths = build_trainer(model, tok, rows, _cfg(max_length=1024), tmp_path)
    assert keep == [0, 2] and lengths[1] > 1024 and len(trainer.train_dataset) == 2


def test_persona_tokens_round_trip_after_save(stage1):
    _, out = stage1
    tok = AutoTokenizer.from_pretrained(out)
    ids = persona_token_ids(tok, K)
    assert len(set(ids)) == K
    for k, i in enumerate(ids):
        text = f"Buyer profile: {persona_token(k)}\nProgress"
        enc = tok(text, add_special_tokens=False)["input_ids"]
        assert enc.count(i) == 1 and tok.convert_ids_to_tokens(i) == persona_token(k)
        assert tok.decode(enc) == text


def test_merge_and_reload_give_identical_logits(base, tmp_path):
    """Logits of the model training (W + delta read through the parametrization) equal
    those of the merged, saved and reloaded folder, bit for bit; tied stays tied."""
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    ids = add_persona_tokens(model, tok, K)
    (delta,) = train_only_rows(model, ids)
    with torch.no_grad():
        delta.delta.copy_(torch.randn_like(delta.delta) * 0.05)
    text = tok.apply_chat_template(_examples(1)[0]["messages"], tokenize=False)
    x = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        during = model(input_ids=x).logits
        merge_rows(model)
        merged = model(input_ids=x).logits
    assert is_tied(model)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        reloaded = again(input_ids=x).logits
    assert torch.equal(during, merged) and torch.equal(merged, reloaded)
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert not any("parametrizations" in k or "delta" in k for k in weights)


def test_stage2_changes_backbone(stage1, tmp_path):
    _, s1 = stage1
    result = train_stage2(s1, _examples(), tmp_path / "s2", _cfg(), k=K)
    before = AutoModelForCausalLM.from_pretrained(s1).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "s2").state_dict()
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert "model.layers.0.mlp.up_proj.weight" in changed
    assert "model.layers.1.self_attn.q_proj.weight" in changed
    assert all(torch.isfinite(v).all() for v in after.values())
    assert result.extra["persona_tokens_added"] is False  # stage 1 added them
    assert result.trainable_params > 500_000


def test_lora_single_stage_runs_and_merges(base, tmp_path):
    """The single-stage ablation with LoRA: persona tokens added in stage 2, adapters and
    persona rows trained, merged into a plain model folder."""
    r1, r2 = train_two_stage(
        base, _examples(), _examples(), tmp_path, _cfg(), k=K, single_stage=True, lora=True
    )
    assert r1 is None and not (tmp_path / "stage1").exists()
    assert r2.extra["persona_tokens_added"] is True and r2.extra["lora"] is True
    out = tmp_path / "stage2"
    weights = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k or "delta" in k for k in weights)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert type(merged).__name__ == "Qwen3ForCausalLM" and is_tied(merged)
    ref, ids = _reference(base)
    assert not torch.equal(
        merged.model.layers[0].self_attn.q_proj.weight, ref.model.layers[0].self_attn.q_proj.weight
    )
    used = torch.tensor([ids[t] for t in USED])
    assert not torch.equal(
        merged.model.embed_tokens.weight[used], ref.model.embed_tokens.weight[used]
    )
    assert persona_token_ids(AutoTokenizer.from_pretrained(out), K) == ids
    assert 0 < r2.trainable_params < 100_000  # adapters + K rows, not the model


def test_production_config_is_the_papers():
    c = TrainConfig()
    assert (c.lr, c.scheduler, c.warmup_steps, c.weight_decay) == (1e-5, "cosine", 50, 0.01)
    assert (c.effective_batch, c.max_length, c.bf16, c.epochs) == (64, 16384, True, 1.0)
    cpu = TrainConfig.cpu()
    assert not cpu.bf16 and not cpu.gradient_checkpointing and cpu.device == "cpu"
    assert TrainConfig.from_dict(cpu.to_dict()) == cpu
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def _chatml(rows: list[dict]) -> list[str]:
    return [
        "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in r["messages"])
        for r in rows
    ]


def test_pretraining_corpus_drops_persona_markers_and_duplicates(base):
    from simpersona.llm.pretrain import corpus_stream

    tok = AutoTokenizer.from_pretrained(base)
    texts = _chatml(_examples(6))
    assert all("<|persona_" in t for t in texts)
    stream = corpus_stream(tok, texts + texts)  # every text twice: kept once
    plain = [t.replace(persona_token(u), "") for t in texts for u in USED if persona_token(u) in t]
    expected = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in set(plain))
    assert stream.numel() == expected
    assert int((stream == tok.convert_tokens_to_ids("<|endoftext|>")).sum()) == len(set(plain))


def test_pretraining_lowers_the_loss_and_build_records_it(tmp_path):
    from simpersona.llm.pretrain import PretrainConfig, lr_at, pretrain_base

    cfg = PretrainConfig(steps=40, block_size=128, batch_size=4, warmup_steps=5, log_every=10)
    assert lr_at(0, cfg) == pytest.approx(cfg.lr / 5) and lr_at(4, cfg) == pytest.approx(cfg.lr)
    assert lr_at(cfg.steps, cfg) == pytest.approx(cfg.lr * cfg.min_lr_ratio)
    texts = _chatml(_examples(12))
    path = build_tiny_model(texts, tmp_path / "tiny", seed=0, pretrain=cfg)
    stats = json.loads((path / "pretrain.json").read_text())
    assert stats["steps"] == 40 and stats["tokens_seen"] == 40 * 4 * 128
    # from about ln(vocab) on random weights to a model of this small, repetitive corpus
    vocab = len(AutoTokenizer.from_pretrained(path))
    assert stats["loss_first"] > math.log(vocab) - 0.5, (stats, vocab)
    assert stats["loss_last"] < stats["loss_first"] - 3.0, stats
    # the saved weights are the pretrained ones: their loss on the corpus is the low one
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(texts[0].replace(persona_token(USED[0]), ""), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = float(model(input_ids=ids[:, :128], labels=ids[:, :128]).loss)
    assert loss < stats["loss_first"] - 3.0
    # seeded: the same corpus and config give the same weights
    again = build_tiny_model(texts, tmp_path / "again", seed=0, pretrain=cfg)
    w1, w2 = load_file(path / "model.safetensors"), load_file(again / "model.safetensors")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    with pytest.raises(ValueError, match="at least 16 are needed"):
        pretrain_base(model, tok, ["too short"], cfg, progress=False)
    # a corpus shorter than one block trains on shorter windows
    short = pretrain_base(model, tok, texts[:1], replace(cfg, steps=2, block_size=4096), False)
    assert short["tokens_seen"] < 2 * 4 * 4096


def test_build_tiny_llm_command_pretrains_on_its_corpus(tmp_path):
    from typer.testing import CliRunner

    from simpersona.cli import app

    corpus = tmp_path / "sft.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in _examples(12)))
    out = tmp_path / "tiny"
    args = ["build-tiny-llm", "--out", str(out), "--corpus", str(corpus), "--pretrain-steps", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pretrained 3 steps" in result.output
    assert json.loads((out / "pretrain.json").read_text())["steps"] == 3
    # pretraining without a corpus is refused, naming the option
    bad = CliRunner().invoke(
        app, ["build-tiny-llm", "--out", str(tmp_path / "x"), "--pretrain-steps", "3"]
    )
    assert bad.exit_code != 0 and "--pretrain-steps needs --corpus" in bad.output
