"""Grounding: the persona model's fine-tunes and the persona probe."""

import dagster as dg

from dagster_project.defs.grounding import assets, probe

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets, probe]),
)
