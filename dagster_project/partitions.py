"""Partitions, defined once and imported everywhere.

Shops and days are both dynamic: the lake sensor registers a shop when its folder appears
and a day when a shop has files for it. Only days that have data exist as partitions, which
avoids the thousands of empty daily partitions that make the UI slow (dagster#23076).
Shop keys are sanitised (no commas: dagster#32183).
"""

from __future__ import annotations

import dagster as dg

SHOPS, DAYS = "shops", "days"  # the dynamic partitions' names, for the instance's calls
shop_partitions = dg.DynamicPartitionsDefinition(name=SHOPS)
day_partitions = dg.DynamicPartitionsDefinition(name=DAYS)
shop_day_partitions = dg.MultiPartitionsDefinition(
    {"shop": shop_partitions, "date": day_partitions}
)


def shop_day_key(shop: str, date: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"shop": shop, "date": date})
