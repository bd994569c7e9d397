"""Trainable persona rows: only the K persona-token rows of a frozen model's embedding (and
lm_head) train, as a row delta added through a parametrization, then merged into the weights
(docs/llm.md, "Training", stage 1)."""

from __future__ import annotations


def _row_delta_cls():
    import torch

    class _RowDelta(torch.nn.Module):
        """Parametrization W -> W + delta at rows `ids` (delta: [K, hidden], zeros at start).
        Registered on the input embedding and, for a tied model, with the same instance on
        the lm_head: one trainable delta serves both sides, as the tied matrix would. Rows
        outside `ids` are copies of the frozen W, so they stay bit-identical."""

        def __init__(self, ids: list[int], hidden: int, dtype, device) -> None:
            super().__init__()
            self.register_buffer("ids", torch.tensor(ids, dtype=torch.long, device=device))
            self.delta = torch.nn.Parameter(
                torch.zeros(len(ids), hidden, dtype=dtype, device=device)
            )

        def forward(self, weight):
            return weight.index_add(0, self.ids, self.delta.to(weight.dtype))

    return _RowDelta


def train_only_rows(model, ids: list[int]) -> list:
    """Freeze every parameter and make only the rows `ids` of the input embedding (and of an
    untied lm_head, its own rows) trainable, exactly: the frozen matrices are never written,
    the trained rows are a separate [K, hidden] parameter added at those ids.

    Why not PEFT TrainableTokens: with tied embeddings PEFT wraps the lm_head in a tied
    adapter, which TRL's fused LM head refuses (it reads `lm_head.weight` directly, so the
    output side of the adapter would never train). A parametrization is read through
    `.weight` like any matrix, so the fused head and the embedding both see W + delta.
    Returns the parametrizations; `merge_rows(model)` writes them into the weights."""
    from torch.nn.utils import parametrize

    from simpersona.llm.persona_tokens import is_tied

    tied = is_tied(model)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    for p in model.parameters():
        p.requires_grad_(False)
    w = emb.weight
    delta = _row_delta_cls()(ids, w.shape[1], w.dtype, w.device)
    parametrize.register_parametrization(emb, "weight", delta, unsafe=True)
    out = [delta]
    if head is not None:
        if tied:
            parametrize.register_parametrization(head, "weight", delta, unsafe=True)
        else:
            hw = head.weight
            hd = _row_delta_cls()(ids, hw.shape[1], hw.dtype, hw.device)
            parametrize.register_parametrization(head, "weight", hd, unsafe=True)
            out.append(hd)
    for d in out:
        d.delta.requires_grad_(True)
    return out


def merge_rows(model) -> None:
    """Write trained row deltas into the embedding (and lm_head) and remove the
    parametrizations; a tied model stays tied (one matrix, updated once)."""
    import torch
    from torch.nn.utils import parametrize

    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    done: set[int] = set()
    with torch.no_grad():
        for module in (emb, head):
            if module is None or not parametrize.is_parametrized(module, "weight"):
                continue
            plist = module.parametrizations.weight
            original, delta = plist.original, plist[0]
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            if id(original) not in done:  # the tied matrix: add the shared delta once
                original.index_add_(0, delta.ids, delta.delta.to(original.dtype))
                done.add(id(original))
    if head is not None and getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
