"""Declarative automation vs the refresh sensor: what `AutomationCondition.eager()` on the
per-shop refresh assets would request, and what one evaluation costs.

    python benchmarks/automation_trial.py --quick    # 6 shops x 7 days, < 1 min
    python benchmarks/automation_trial.py            # 20 shops x 28 days

Materializations are reported to a temporary instance (no data is computed) and the
conditions evaluated in process, as the automation daemon would every 30 s. Three questions,
the reasons `shop_refresh_sensor` (dagster_project/defs/refresh/sensors.py) exists:

1. After a shop's new day is ingested, is the shop's refresh requested?
2. After a refit of the feature transform, how many shops are refreshed?
3. How long does a quiet evaluation take once the lake has history?

The last line holds the figures as name=value pairs.
"""

import argparse
import time
import warnings

import dagster as dg

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 shops x 7 days")
    args = ap.parse_args()
    n_shops, n_days = (6, 7) if args.quick else (20, 28)

    from dagster_project.definitions import all_assets
    from dagster_project.partitions import shop_day_key
    from dagster_project.resources import default_resources
    from dagster_project.selections import SHOP_REFRESH_ASSETS

    eager = dg.AutomationCondition.eager()
    assets = [
        a.map_asset_specs(lambda s: s.replace_attributes(automation_condition=eager))
        if any(k.to_user_string() in SHOP_REFRESH_ASSETS for k in a.keys)
        else a
        for a in all_assets
    ]
    defs = dg.Definitions(assets=assets, resources=default_resources())
    keys = [k for a in all_assets for k in a.keys]
    shops = [f"s{i}" for i in range(n_shops)]
    days = [f"2026-01-{d:02d}" for d in range(1, n_days + 1)]

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shops", shops)
        instance.add_dynamic_partitions("days", days)
        cursor = None

        def tick() -> dict[str, int]:
            nonlocal cursor
            res = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = res.cursor
            return {k.to_user_string(): n for k in keys if (n := res.get_num_requested(k))}

        def report(key: str, partition: str | None = None) -> None:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=key, partition=partition)
            )

        tick()
        report("catalog", shops[0])
        report("raw_events", str(shop_day_key(shops[0], days[0])))
        after_ingest = tick()
        print(f"after {shops[0]}'s day 1 is ingested: {after_ingest or 'nothing'}")
        for shop in shops:
            for asset in ("enriched_sessions", "product_embeddings", "buyer_features"):
                report(asset, shop)
        tick()
        report("feature_transform")
        after_refit = tick()
        print(f"after a refit of feature_transform: {after_refit or 'nothing'}")
        for shop in shops:
            for day in days:
                report("raw_events", str(shop_day_key(shop, day)))
        tick()
        t0 = time.perf_counter()
        for _ in range(3):
            tick()
        seconds = (time.perf_counter() - t0) / 3
        print(f"a quiet evaluation with {n_shops} shops x {n_days} days: {seconds:.2f} s")
    print(
        f"shops={n_shops} days={n_days} "
        f"refresh_requested_after_ingest={int('enriched_sessions' in after_ingest)} "
        f"shops_refreshed_after_refit={after_refit.get('buyer_vectors', 0)} "
        f"quiet_tick_s={seconds:.2f}"
    )


if __name__ == "__main__":
    main()
