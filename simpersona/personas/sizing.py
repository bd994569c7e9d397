"""How many persona tokens (K) a training set supports, and what to warn about.

The paper trains K = 256 codes on a large multi-shop sample (docs/vqvae.md). On a small log
the same K leaves most codes holding one or two buyers: the codebook memorises them
(training loss far below validation loss) and purity reaches 100 % as an artefact. The rule
here keeps about ten training buyers per code on average:

    K = min(256, max(2, n_train // 10))

so the paper's 256 is used from 2,560 training buyers on. A K given explicitly is kept, with
a warning when it breaks the rule.
"""

from __future__ import annotations

PAPER_K = 256
BUYERS_PER_CODE = 10
MIN_K = 2
# Validation reconstruction error this many times the training one: the codebook memorised
# its buyers. (Reconstruction, not the total loss: the contrastive and auxiliary terms depend
# on batch make-up and on head fit. The demo's 2,052 training buyers: 1.12.)
OVERFIT_RATIO = 1.5

RULE = (
    f"K = min({PAPER_K}, max({MIN_K}, training buyers // {BUYERS_PER_CODE})): about "
    f"{BUYERS_PER_CODE} training buyers per code, the paper's {PAPER_K} from "
    f"{PAPER_K * BUYERS_PER_CODE:,} training buyers"
)


def codebook_size_for(n_train: int, requested: int | None = None) -> tuple[int, str]:
    """(K, how it was chosen) for a training split of `n_train` buyers; `requested` (> 0)
    wins over the rule."""
    if requested:
        return int(requested), f"K = {requested}, as configured"
    k = min(PAPER_K, max(MIN_K, n_train // BUYERS_PER_CODE))
    return k, f"K = {k} from {n_train:,} training buyers ({RULE})"


def sizing_warnings(
    n_train: int,
    k: int,
    final_recon: float | None = None,
    final_val_recon: float | None = None,
) -> list[str]:
    """Sentences a data team should read before trusting the codebook, each with what to do."""
    out = []
    if n_train < k * BUYERS_PER_CODE:
        out.append(
            f"{n_train:,} training buyers for {k} codes (fewer than {BUYERS_PER_CODE} per "
            "code): many codes will hold a buyer or two and purity is an artefact; lower K "
            "(codebook_size) or train on more shops/days"
        )
    if n_train < 2 * MIN_K * BUYERS_PER_CODE:
        out.append(
            f"only {n_train} training buyers: too few to learn personas from; the figures "
            "below describe noise"
        )
    if (
        final_recon is not None
        and final_val_recon is not None
        and final_recon > 0
        and final_val_recon > OVERFIT_RATIO * final_recon
    ):
        out.append(
            f"validation reconstruction error {final_val_recon:.3f} is "
            f"{final_val_recon / final_recon:.1f}× the training one ({final_recon:.3f}): the "
            "codebook memorised its training buyers; lower K, or give it more buyers"
        )
    return out
