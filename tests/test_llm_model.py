"""The tiny model, its tokenizer and chat template, and persona tokens (simpersona.llm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3ForCausalLM

from simpersona.llm.persona_tokens import (
    add_persona_tokens,
    init_from_codebook,
    is_tied,
    persona_token,
    persona_token_ids,
    text_embeddings,
)
from simpersona.llm.tiny import (
    IM_END,
    TinyModelConfig,
    build_tiny_model,
    count_parameters,
    tiny_qwen3_config,
)

PROMPT = '<|im_start|>user\nfind trail shoes<|im_end|>\n<|im_start|>assistant\n{"action": "'


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return build_tiny_model(None, tmp_path_factory.mktemp("llm") / "tiny", seed=0)


@pytest.fixture()
def tokenizer(tiny_path):
    return AutoTokenizer.from_pretrained(tiny_path)


def fresh_model(tokenizer, tied: bool) -> Qwen3ForCausalLM:
    torch.manual_seed(1)
    cfg = TinyModelConfig(tie_word_embeddings=tied)
    return Qwen3ForCausalLM(tiny_qwen3_config(tokenizer, cfg)).eval()


def logits_of(model, tokenizer, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_tiny_model_reloads_with_qwen_specials(tiny_path, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 1
    # the vocabulary is padded: rows past the tokenizer exist but are no tokens
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(tokenizer)
    assert 0.5e6 < count_parameters(model) < 1.5e6
    # JSON punctuation and action names became tokens (the default corpus did its job)
    tokens = tokenizer.tokenize('{"action": "add_to_cart", "quantity": 2}')
    assert {'{"', "action", "quantity"} <= set(tokens) and len(tokens) <= 16


def test_save_reload_gives_identical_logits(tiny_path, tokenizer, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path).eval()
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again").eval()
    assert torch.equal(logits_of(model, tokenizer), logits_of(again, tokenizer))
    # the same seed builds the same model, atomically replacing the old folder
    rebuilt = build_tiny_model(None, tmp_path / "rebuilt", seed=0)
    rebuilt = build_tiny_model(None, tmp_path / "rebuilt", seed=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "rebuilt"]
    other = AutoModelForCausalLM.from_pretrained(rebuilt).eval()
    assert torch.equal(logits_of(model, tokenizer), logits_of(other, tokenizer))


def test_chat_template_marks_assistant_turns_and_their_end(tokenizer):
    messages = [
        {"role": "system", "content": "You are a shopper."},
        {"role": "user", "content": "Page: trail shoes"},
        {"role": "assistant", "content": '{"action": "scroll", "direction": "down"}'},
        {"role": "user", "content": "Page: more shoes"},
        {"role": "assistant", "content": '{"action": "go_back"}'},
    ]
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = np.array(out["input_ids"]), np.array(out["assistant_masks"], dtype=bool)
    # the masked tokens are exactly the assistant contents, each followed by <|im_end|>
    assert tokenizer.decode(ids[mask]) == (
        '{"action": "scroll", "direction": "down"}<|im_end|>{"action": "go_back"}<|im_end|>'
    )
    unmasked = tokenizer.decode(ids[~mask])
    assert "shopper" in unmasked and "trail shoes" in unmasked and "more shoes" in unmasked
    assert "action" not in unmasked
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("k", [10, 200])  # 10 fit into the padding rows, 200 need a resize
def test_add_persona_tokens_keeps_old_rows_and_addresses_new_by_id(tokenizer, tied, k):
    model = fresh_model(tokenizer, tied)
    n_old, rows_before = len(tokenizer), model.get_input_embeddings().weight.shape[0]
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    logits0 = logits_of(model, tokenizer)
    init = torch.randn(k, emb0.shape[1])

    ids = add_persona_tokens(model, tokenizer, k, init=init)

    assert ids == list(range(n_old, n_old + k)) == persona_token_ids(tokenizer, k)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    assert is_tied(model) == tied
    assert (emb.shape[0] > rows_before) == (n_old + k > rows_before)
    assert emb.shape[0] % 64 == 0 and emb.shape[0] >= len(tokenizer)
    assert torch.equal(emb[:n_old], emb0[:n_old])
    assert torch.equal(head[:n_old], head0[:n_old])
    assert torch.equal(emb[ids], init)
    if not tied:  # the untied output rows are initialised too: the mean of the old ones
        assert torch.allclose(head[ids], head0[:n_old].mean(0).expand(k, -1), atol=1e-6)
    # what the model did before, it still does: old logits are unchanged bit for bit
    assert torch.equal(logits_of(model, tokenizer)[..., :n_old], logits0[..., :n_old])
    # each persona token is one id, also inside text, and round-trips
    text = f"{persona_token(0)} likes {persona_token(k - 1)}"
    enc = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert enc[0] == ids[0] and enc[-1] == ids[-1]
    assert tokenizer.decode(enc) == text
    with pytest.raises(ValueError, match="already has persona tokens"):
        add_persona_tokens(model, tokenizer, k)


def test_persona_tokens_survive_save_and_reload(tiny_path, tokenizer, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    ids = add_persona_tokens(model, tokenizer, 100, init="random")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert persona_token_ids(tok2, 100) == ids
    assert tok2.convert_ids_to_tokens(ids[42]) == "<|persona_42|>"
    w1, w2 = model.get_input_embeddings().weight, model2.get_input_embeddings().weight
    assert torch.equal(w1, w2) and is_tied(model2)


def test_init_from_codebook_keeps_geometry_and_other_rows(tokenizer):
    model = fresh_model(tokenizer, tied=True)
    ids = add_persona_tokens(model, tokenizer, 16, init="mean")
    before = model.get_input_embeddings().weight.detach().clone()
    codebook = np.random.default_rng(0).normal(size=(16, 8))

    rows = init_from_codebook(model, ids, codebook)

    after = model.get_input_embeddings().weight
    others = [i for i in range(after.shape[0]) if i not in set(ids)]
    assert torch.equal(after[others], before[others])
    assert torch.allclose(after[ids].double(), torch.from_numpy(rows), atol=1e-6)
    assert not torch.equal(after[ids], before[ids])
    # the map is an isometry up to scale: persona distances follow codebook distances
    d_code = np.linalg.norm(codebook[:, None] - codebook[None], axis=-1)[np.triu_indices(16, 1)]
    d_emb = np.linalg.norm(rows[:, None] - rows[None], axis=-1)[np.triu_indices(16, 1)]
    assert np.allclose(d_emb / d_code, (d_emb / d_code).mean(), rtol=1e-4)
    # persona rows sit as far from the mean embedding as real tokens do on average
    emb = before[: ids[0]].double().numpy()
    spread = np.linalg.norm(emb - emb.mean(0), axis=1).mean()
    assert np.linalg.norm(rows - emb.mean(0), axis=1).mean() == pytest.approx(spread, rel=1e-6)


def test_init_from_codebook_with_paired_examples(tokenizer):
    model = fresh_model(tokenizer, tied=False)
    ids = add_persona_tokens(model, tokenizer, 4)
    head = model.get_output_embeddings().weight.detach().clone()
    cards = ["trail running shoes", "cooling mattress", "leather boots", "yoga mat"]
    targets = text_embeddings(model, tokenizer, cards)
    codebook = np.random.default_rng(1).normal(size=(4, 3))

    rows = init_from_codebook(model, ids, codebook, fit_on=(codebook, targets), alpha=1e-6)

    # with pairs on the codebook itself, each persona lands in the direction of its card
    centred = targets - targets.mean(0)
    cos = np.sum((rows - rows.mean(0)) * centred, 1) / (
        np.linalg.norm(rows - rows.mean(0), axis=1) * np.linalg.norm(centred, axis=1)
    )
    assert np.all(cos > 0.99)
    assert torch.equal(model.get_output_embeddings().weight, head)  # untied head untouched
