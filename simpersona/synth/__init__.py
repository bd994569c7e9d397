"""Synthetic multi-shop clickstreams with planted buyer types (`simpersona generate`).

    from simpersona.synth import GeneratorConfig, generate_lake
    res = generate_lake("data/lake", GeneratorConfig(n_buyers=10_000, seed=1))

See docs/generator.md for the types, the knobs and the calibration against a real store.
"""

from simpersona.synth.config import GeneratorConfig
from simpersona.synth.generate import (
    DEFAULT_GROUND_TRUTH,
    GenerateResult,
    ShopCounts,
    generate_lake,
    plan_shops,
)
from simpersona.synth.types import DEFAULT_TYPES, PROFILES, TYPE_NAMES, BuyerType, Profile

__all__ = [
    "DEFAULT_GROUND_TRUTH",
    "DEFAULT_TYPES",
    "PROFILES",
    "TYPE_NAMES",
    "BuyerType",
    "GenerateResult",
    "GeneratorConfig",
    "Profile",
    "ShopCounts",
    "generate_lake",
    "plan_shops",
]
