"""Checks of the features stage: `row_count` on each shop's enriched sessions, buyer
features and buyer vectors."""

from dagster_project.defs.checks_common import shop_row_count_check
from dagster_project.defs.features.assets import buyer_features, buyer_vectors, enriched_sessions

checks = [shop_row_count_check(a) for a in (enriched_sessions, buyer_features, buyer_vectors)]
