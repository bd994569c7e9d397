"""What a storefront sells: one shop's products and collections, loaded from the warehouse
(validated) or straight from the lake's raw catalog files, with a search index.

The canonical catalog tables carry no currency; it is taken from the shop's events (the most
common `currency` of the latest day) unless given, and defaults to USD.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from simpersona.lake import Lake
from simpersona.schema import conform
from simpersona.store.search import SearchIndex
from simpersona.warehouse import Warehouse

DEFAULT_CURRENCY = "USD"
# Pseudo-collection of every product, like Shopify's /collections/all (unless the shop has a
# real collection with this id).
ALL_COLLECTION_ID = "all"


_VARIANT_SPLIT_RE = re.compile(r"\s+[–—-]\s+")

# Colour names a product title may end with, for the placeholder image.
COLOUR_SWATCHES: dict[str, str] = {
    "black": "#26272b",
    "navy": "#1f2f5a",
    "charcoal": "#3c4043",
    "graphite": "#4a4d52",
    "olive": "#6b6b2a",
    "sand": "#d8c39a",
    "white": "#f7f7f4",
    "ivory": "#f3ecd8",
    "cream": "#efe6cf",
    "natural": "#e6dcc6",
    "beige": "#e3d5b8",
    "tan": "#c9a77c",
    "forest green": "#2e5e3e",
    "green": "#3f7f4a",
    "sage": "#9cae8f",
    "burgundy": "#6e1f33",
    "red": "#b8322c",
    "rust": "#b4532a",
    "terracotta": "#c0643f",
    "coral": "#f07f6e",
    "blush": "#e8b8b5",
    "pink": "#e89bb5",
    "slate blue": "#5a6f9a",
    "sky blue": "#8cc4e8",
    "blue": "#2f5fa8",
    "teal": "#2f7f7f",
    "purple": "#6d4c91",
    "brown": "#6b4a2f",
    "grey": "#8a8d91",
    "gray": "#8a8d91",
    "silver": "#c0c4c8",
    "yellow": "#e8c547",
    "orange": "#e8833a",
    "gold": "#c9a23f",
}


@dataclass(frozen=True)
class Product:
    product_id: str
    title: str
    description: str
    price: float | None
    collection_ids: tuple[str, ...]
    position: int  # catalog order

    @property
    def head(self) -> str:
        """The title without a trailing variant ('Leather Sandal – Navy' -> 'Leather Sandal')."""
        return _VARIANT_SPLIT_RE.split(self.title, maxsplit=1)[0].strip() or self.title

    @property
    def variant(self) -> str | None:
        parts = _VARIANT_SPLIT_RE.split(self.title, maxsplit=1)
        return parts[1].strip() if len(parts) == 2 and parts[1].strip() else None

    @property
    def initials(self) -> str:
        """Two letters for the placeholder image: the first and last word of the title's head,
        skipping a leading possessive ("Women's", "Kids'") when words remain."""
        words = [w for w in self.head.split() if w[:1].isalnum()]
        while len(words) > 1 and (words[0].endswith(("'s", "'", "’s", "’"))):
            words = words[1:]
        if not words:
            return "?"
        last = next((w for w in reversed(words[1:]) if w[0].isalpha()), "")
        return (words[0][0] + last[:1]).upper()

    @property
    def hue(self) -> int:
        return stable_hue(self.product_id)

    @property
    def swatch(self) -> str | None:
        """A CSS colour when the title's variant names a colour ('– Forest Green')."""
        variant = (self.variant or "").lower()
        return COLOUR_SWATCHES.get(variant) or COLOUR_SWATCHES.get(variant.split(" ")[-1])

    @property
    def fill(self) -> str:
        """The placeholder's main colour: the variant's colour, else one from the id."""
        return self.swatch or f"hsl({self.hue}, 32%, 46%)"

    @property
    def ink(self) -> str:
        """Text colour readable on `fill`."""
        swatch = self.swatch
        if swatch is None:
            return "#ffffff"
        r, g, b = (int(swatch[i : i + 2], 16) / 255 for i in (1, 3, 5))
        return "#2b2b2e" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.6 else "#ffffff"


@dataclass(frozen=True)
class Collection:
    collection_id: str
    title: str
    product_ids: tuple[str, ...]

    @property
    def hue(self) -> int:
        return stable_hue("c:" + self.collection_id)


def stable_hue(key: str) -> int:
    """A colour hue (0-359) that depends only on `key`."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:6], 16) % 360


def pretty_shop_name(shop_id: str) -> str:
    """'shop-000' -> 'Shop 000', 'puffy' -> 'Puffy'."""
    words = shop_id.replace("_", " ").replace("-", " ").replace(".", " ").split()
    return " ".join(w[:1].upper() + w[1:] for w in words) or shop_id


@dataclass
class StoreCatalog:
    """One shop's catalog as the storefront serves it."""

    shop_id: str
    products: dict[str, Product]
    collections: dict[str, Collection]
    currency: str = DEFAULT_CURRENCY
    name: str = ""
    _index: SearchIndex | None = field(default=None, init=False, repr=False)
    _order: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = pretty_shop_name(self.shop_id)
        self._order = list(self.products)

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_frames(
        cls,
        shop_id: str,
        products: pl.DataFrame,
        collections: pl.DataFrame | None = None,
        *,
        currency: str | None = None,
        name: str | None = None,
    ) -> StoreCatalog:
        """Build from canonical `products` and `collections` frames (other shops' rows and
        duplicate ids after the first are ignored). Products whose title is missing are
        skipped; collection members are the products that list the collection."""
        prods = conform(products, "products", keep_provenance=False)
        if "shop_id" in products.columns:
            prods = prods.filter(pl.col("shop_id").is_null() | (pl.col("shop_id") == shop_id))
        prods = prods.filter(
            pl.col("product_id").is_not_null() & pl.col("title").is_not_null()
        ).unique(subset="product_id", keep="first", maintain_order=True)
        out_products: dict[str, Product] = {}
        for i, row in enumerate(prods.iter_rows(named=True)):
            pid = str(row["product_id"])
            price = row["price"]
            out_products[pid] = Product(
                product_id=pid,
                title=str(row["title"]).strip(),
                description=(row["description"] or "").strip(),
                price=float(price) if price is not None and price >= 0 else None,
                collection_ids=tuple(dict.fromkeys(c for c in (row["collection_ids"] or []) if c)),
                position=i,
            )
        members: dict[str, list[str]] = {}
        for pid, p in out_products.items():
            for cid in p.collection_ids:
                members.setdefault(cid, []).append(pid)
        out_collections: dict[str, Collection] = {}
        if collections is not None and not collections.is_empty():
            colls = conform(collections, "collections", keep_provenance=False)
            colls = colls.filter(
                pl.col("collection_id").is_not_null()
                & (pl.col("shop_id").is_null() | (pl.col("shop_id") == shop_id))
            ).unique(subset="collection_id", keep="first", maintain_order=True)
            for row in colls.iter_rows(named=True):
                cid = str(row["collection_id"])
                title = (row["title"] or "").strip() or pretty_shop_name(cid)
                out_collections[cid] = Collection(cid, title, tuple(members.get(cid, ())))
        # Collections that products name but the collections table lacks still get a page.
        for cid, pids in members.items():
            if cid not in out_collections:
                out_collections[cid] = Collection(cid, pretty_shop_name(cid), tuple(pids))
        return cls(
            shop_id=shop_id,
            products=out_products,
            collections=out_collections,
            currency=(currency or DEFAULT_CURRENCY).upper(),
            name=name or "",
        )

    @classmethod
    def from_warehouse(
        cls,
        wh: Warehouse | str | os.PathLike[str],
        shop: str,
        *,
        currency: str | None = None,
        name: str | None = None,
    ) -> StoreCatalog:
        """The validated catalog of `shop` (products and, if materialized, collections)."""
        if not isinstance(wh, Warehouse):
            wh = Warehouse.at(wh)
        products = wh.read_partition("products", shop)
        collections = (
            wh.read_partition("collections", shop)
            if wh.has_partition("collections", shop)
            else None
        )
        if currency is None:
            files = sorted((wh.root / "raw_events" / f"shop={shop}").glob("date=*/data.parquet"))
            currency = _common_currency(files[-1:])
        return cls.from_frames(shop, products, collections, currency=currency, name=name)

    @classmethod
    def from_lake(
        cls,
        lake_root: str | os.PathLike[str] | Lake,
        shop: str,
        *,
        currency: str | None = None,
        name: str | None = None,
    ) -> StoreCatalog:
        """The raw catalog files of `shop` in the lake (Parquet or CSV), validated with the
        ingestion rules (rejected rows are skipped; the first occurrence of an id wins)."""
        from simpersona.ingest.validate import validate_catalog

        lake = lake_root if isinstance(lake_root, Lake) else Lake.at(lake_root)
        frames: dict[str, pl.DataFrame | None] = {}
        for table in ("products", "collections"):
            valid = [
                validate_catalog(_read_raw(f), table, shop).valid
                for f in lake.raw_files(lake.catalog_dir(table, shop))
            ]
            frames[table] = pl.concat(valid, how="vertical_relaxed") if valid else None
        if frames["products"] is None:
            raise FileNotFoundError(
                f"no products for shop {shop!r} in the lake at {lake.root} "
                f"(expected files in {lake.catalog_dir('products', shop)})"
            )
        if currency is None:
            dates = lake.dates(shop)
            currency = _common_currency(
                [
                    f
                    for f in lake.raw_files(lake.events_dir(shop, dates[-1]))
                    if f.suffix == ".parquet"
                ]
                if dates
                else []
            )
        return cls.from_frames(
            shop, frames["products"], frames["collections"], currency=currency, name=name
        )

    # ---- queries -----------------------------------------------------------------------
    def product(self, product_id: str) -> Product | None:
        return self.products.get(product_id)

    def collection(self, collection_id: str) -> Collection | None:
        found = self.collections.get(collection_id)
        if found is None and collection_id == ALL_COLLECTION_ID:
            return Collection(ALL_COLLECTION_ID, "All products", tuple(self._order))
        return found

    def products_of(self, ids: Iterable[str]) -> list[Product]:
        return [self.products[i] for i in ids if i in self.products]

    @property
    def index(self) -> SearchIndex:
        if self._index is None:
            self._index = SearchIndex(
                [(p.title, p.description) for p in (self.products[i] for i in self._order)]
            )
        return self._index

    def search(self, query: str) -> list[Product]:
        """Products matching `query`, best first (deterministic)."""
        return [self.products[self._order[i]] for i, _ in self.index.search(query)]

    def nav_collections(self, n: int = 6) -> list[Collection]:
        """The `n` collections with the most products, in catalog order (header menu)."""
        ranked = sorted(
            (c for c in self.collections.values() if c.product_ids),
            key=lambda c: -len(c.product_ids),
        )[:n]
        keep = {c.collection_id for c in ranked}
        return [c for c in self.collections.values() if c.collection_id in keep]

    def featured_products(self, n: int = 8, exclude: Iterable[str] = ()) -> list[Product]:
        """Best sellers when the shop has that collection, else the first products."""
        skip = set(exclude)
        for cid in ("best-sellers", "featured", "frontpage"):
            coll = self.collections.get(cid)
            if coll and coll.product_ids:
                pool = list(coll.product_ids)
                break
        else:
            pool = self._order
        return [self.products[p] for p in pool if p not in skip][:n]


def _read_raw(path: Path) -> pl.DataFrame:
    if path.suffix.lower() == ".csv":
        return pl.read_csv(path, infer_schema=False)
    return pl.read_parquet(path)


def _common_currency(files: list[Path]) -> str | None:
    """The most common non-null currency in some events files (None if none)."""
    files = [f for f in files if f.suffix.lower() == ".parquet"]
    if not files:
        return None
    try:
        cur = (
            pl.scan_parquet(files)
            .select("currency")
            .drop_nulls()
            .group_by("currency")
            .len()
            .sort(["len", "currency"], descending=[True, False])
            .head(1)
            .collect()
        )
    except (pl.exceptions.PolarsError, OSError):
        return None
    return str(cur["currency"][0]) if cur.height else None
