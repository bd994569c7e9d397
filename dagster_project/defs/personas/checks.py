"""Checks of the personas stage: `codebook_usage` on `persona_codebook` (used codes and
perplexity of the trained codebook above floors, the symptom of a collapsed VQ-VAE) and
`row_count` on the per-shop assignments and token distributions."""

import json

import dagster as dg
from pydantic import Field

from dagster_project.defs.checks_common import ERROR, shop_row_count_check
from dagster_project.defs.personas.assets import (
    CODEBOOK,
    persona_assignments,
    persona_codebook,
    store_token_distribution,
)
from dagster_project.resources import ArtifactsResource


class CodebookUsageConfig(dg.Config):
    min_used_codes: int = Field(default=8, description="Fewest codes in use at the end.")
    min_perplexity: float = Field(default=4.0, description="Lowest final code perplexity.")


@dg.asset_check(
    asset=persona_codebook,
    name="codebook_usage",
    description="Used codes and perplexity of the trained codebook above floors (collapse).",
)
def codebook_usage(
    config: CodebookUsageConfig, artifacts: ArtifactsResource
) -> dg.AssetCheckResult:
    from simpersona.artifacts import current_folder, pointer_path

    folder = current_folder(artifacts.root, CODEBOOK)
    if folder is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=ERROR,
            description=f"no current codebook ({pointer_path(artifacts.root, CODEBOOK)})",
        )
    final = json.loads((folder / "meta.json").read_text())["final"]
    used = int(final.get("used_codes", 0))
    perplexity = float(final.get("perplexity", 0.0))
    low = []
    if used < config.min_used_codes:
        low.append(f"used codes {used} < {config.min_used_codes}")
    if perplexity < config.min_perplexity:
        low.append(f"perplexity {perplexity:.2f} < {config.min_perplexity}")
    return dg.AssetCheckResult(
        passed=not low,
        severity=ERROR,
        description="; ".join(low) or None,
        metadata={
            "codebook_version": folder.name,
            "used_codes": used,
            "perplexity": round(perplexity, 3),
            "min_used_codes": config.min_used_codes,
            "min_perplexity": config.min_perplexity,
        },
    )


checks = [
    codebook_usage,
    shop_row_count_check(persona_assignments),
    shop_row_count_check(store_token_distribution),
]
