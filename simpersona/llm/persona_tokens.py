"""Persona tokens: K new special tokens <|persona_0|> … <|persona_{K-1}|>, one per codeword of
the VQ-VAE, whose embedding rows stage 1 of the grounding trains (paper §2.3).

    ids = add_persona_tokens(model, tokenizer, 256, init="mean")
    init_from_codebook(model, ids, codebook)            # optional: the paper's open idea

New tokens are always addressed by their ids. Vocabularies are padded (Qwen3: 151,669 tokens,
151,936 rows; the tiny model: to a multiple of 64), so new ids may land on padding rows that
already exist and "the last K rows" are not the new tokens (peft#2368).
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# One definition of the token text, shared with the agent prompt (which must not import torch).
from simpersona.agent.prompt import persona_token

PAD_MULTIPLE = 64


def persona_token_ids(tokenizer: PreTrainedTokenizerBase, k: int) -> list[int]:
    """Ids of <|persona_0|> … <|persona_{k-1}|> (KeyError when one is missing)."""
    vocab = tokenizer.get_vocab()
    return [vocab[persona_token(i)] for i in range(k)]


def is_tied(model: PreTrainedModel) -> bool:
    """Whether the input embeddings and lm_head share one matrix."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def _input_rows(model: PreTrainedModel) -> torch.Tensor:
    """The input embedding matrix: the weight of an nn.Embedding (transformers types the
    module as any nn.Module, whose attributes are Tensor | Module to a type checker)."""
    return cast(torch.Tensor, model.get_input_embeddings().weight)


@torch.no_grad()
def _fill_rows(weight: torch.Tensor, ids: list[int], n_old: int, init: str | torch.Tensor) -> None:
    """Write the rows `ids` of `weight`, with statistics taken from the `n_old` real rows."""
    old = weight[:n_old].float()
    if isinstance(init, torch.Tensor):
        rows = init.float()
    elif init == "mean":  # the mean embedding: a neutral start (what HF's mean_resizing centres on)
        rows = old.mean(0).expand(len(ids), -1)
    elif init == "random":  # same per-dimension spread as the real rows, so no row stands out
        rows = old.mean(0) + old.std(0) * torch.randn(len(ids), old.shape[1])
    else:
        raise ValueError(f"init must be 'mean', 'random' or a tensor, got {init!r}")
    if rows.shape != (len(ids), weight.shape[1]):
        raise ValueError(f"init rows must be {(len(ids), weight.shape[1])}, got {rows.shape}")
    weight[torch.tensor(ids)] = rows.to(weight.dtype)


def add_persona_tokens(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    k: int,
    init: Literal["random", "mean"] | torch.Tensor = "mean",
) -> list[int]:
    """Add <|persona_0|> … <|persona_{k-1}|> as special tokens (each one id, never split),
    grow the embeddings if the ids exceed them, initialise the new rows and return their ids.

    `init`: "mean" (every new row = the mean of the existing rows), "random" (normal with the
    existing rows' per-dimension mean and std; seed with torch.manual_seed) or a [k, hidden]
    tensor for the input rows. With tied embeddings one matrix serves input and output; an
    untied lm_head gets its own rows, the mean of its existing rows (a tensor `init` is an
    input-side embedding and says nothing about the output side). Rows of existing tokens are
    left bit-identical. Already-present persona tokens are an error: re-initialising trained
    rows by accident would be silent."""
    tokens = [persona_token(i) for i in range(k)]
    present = [t for t in tokens if t in tokenizer.get_vocab()]
    if present:
        raise ValueError(f"the tokenizer already has persona tokens ({present[0]} …)")
    n_old = len(tokenizer)
    tokenizer.add_special_tokens(
        {"extra_special_tokens": tokens}, replace_extra_special_tokens=False
    )
    ids = cast(list[int], tokenizer.convert_tokens_to_ids(tokens))  # a list for a list
    if ids != list(range(n_old, n_old + k)):
        raise RuntimeError(f"persona tokens got unexpected ids {ids[:3]} …")

    rows = _input_rows(model).shape[0]
    if max(ids) >= rows:
        # mean_resizing=False: our own init below writes every new id; the padding rows past
        # them are never produced by the tokenizer.
        model.resize_token_embeddings(
            len(tokenizer), pad_to_multiple_of=PAD_MULTIPLE, mean_resizing=False
        )
    _fill_rows(_input_rows(model), ids, n_old, init)
    if not is_tied(model) and model.get_output_embeddings() is not None:
        _fill_rows(model.get_output_embeddings().weight, ids, n_old, "mean")
    return ids


def _pca_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[d_x, d_y] map sending x's principal directions onto y's, in order, keeping x's
    relative variances (no pairs needed: a geometry-preserving projection)."""
    _, sx, vx = np.linalg.svd(x - x.mean(0), full_matrices=False)
    _, _, vy = np.linalg.svd(y - y.mean(0), full_matrices=False)
    r = min(vx.shape[0], vy.shape[0])
    return vx[:r].T @ vy[:r]


def _ridge_map(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Least-squares map W ([d_x, d_y]) with ridge penalty alpha: (x - x̄) W ≈ y - ȳ."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    return np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)


@torch.no_grad()
def init_from_codebook(
    model: PreTrainedModel,
    ids: list[int],
    codebook: np.ndarray,
    fit_on: tuple[np.ndarray, np.ndarray] | None = None,
    alpha: float = 1.0,
) -> np.ndarray:
    """Initialise the input rows `ids` from the VQ-VAE codebook ([K, d_code], row k → ids[k]):
    the paper's open idea, so that personas close in behaviour start close in embedding space.

    The codebook is mapped into embedding space by a linear map W:
    - `fit_on=None`: W aligns the codebook's principal directions with those of the model's
      existing token embeddings (needs no paired data; keeps the codebook's geometry);
    - `fit_on=(X, Y)`: W is a ridge regression (penalty `alpha`) from paired examples, X in
      codebook space [n, d_code] and Y in embedding space [n, hidden], e.g. persona codewords
      and the mean token embedding of each persona's card (`text_embeddings`).
    The mapped rows are then centred on the mean embedding and scaled so their mean distance
    from it equals that of the existing rows: a persona row is neither an outlier nor a
    collapsed copy of the mean. Other rows are untouched; an untied lm_head is left as it is.
    Returns the rows written, [K, hidden]."""
    codebook = np.asarray(codebook, dtype=np.float64)
    if codebook.ndim != 2 or codebook.shape[0] != len(ids):
        raise ValueError(f"codebook must be [{len(ids)}, d], got {codebook.shape}")
    weight = _input_rows(model)
    persona = set(ids)
    real = [i for i in range(min(ids)) if i not in persona]  # the tokens before the personas
    emb = weight[real].double().cpu().numpy()
    mu = emb.mean(0)
    if fit_on is None:
        z = (codebook - codebook.mean(0)) @ _pca_map(codebook, emb)
    else:
        x, y = (np.asarray(a, dtype=np.float64) for a in fit_on)
        z = (codebook - x.mean(0)) @ _ridge_map(x, y, alpha) + y.mean(0) - mu
        z -= z.mean(0)
    target = np.linalg.norm(emb - mu, axis=1).mean()
    spread = np.linalg.norm(z, axis=1).mean()
    rows = mu + z * (target / spread if spread > 0 else 0.0)
    weight[torch.tensor(ids)] = torch.from_numpy(rows).to(weight.dtype)
    return rows


@torch.no_grad()
def text_embeddings(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str]
) -> np.ndarray:
    """Mean input embedding of each text's tokens, [len(texts), hidden]: targets in
    embedding space for `init_from_codebook(fit_on=...)`."""
    weight = _input_rows(model)
    out = []
    for text in texts:
        tid = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append(weight[torch.tensor(tid)].double().mean(0).cpu().numpy())
    return np.stack(out)
