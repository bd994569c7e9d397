"""The storefront's URL scheme: the paths of one shop's pages, under the prefix the page was
reached by ('' for the root-mounted shop, `/s/<shop_id>` otherwise). Routes are listed in
`docs/storefront.md`; `app.create_app` serves them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from simpersona.store.catalog import ALL_COLLECTION_ID


def url_quote(value: str) -> str:
    """`value` as one path segment or query value (templates: the `urlq` filter)."""
    return quote(str(value), safe="")


@dataclass(frozen=True)
class Links:
    """Paths of one shop's pages, under its prefix ('' for the root-mounted shop)."""

    base: str

    def home(self) -> str:
        return self.base + "/" if self.base else "/"

    def collection(self, cid: str, page: int | None = None, sort: str | None = None) -> str:
        params = {k: v for k, v in (("sort", sort), ("page", page)) if v not in (None, "", 1)}
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.base}/collections/{url_quote(cid)}{query}"

    def all_products(self) -> str:
        return self.collection(ALL_COLLECTION_ID)

    def collections(self) -> str:
        return f"{self.base}/collections"

    def product(self, pid: str) -> str:
        return f"{self.base}/products/{url_quote(pid)}"

    def search(self, q: str | None = None, page: int | None = None) -> str:
        params = {k: v for k, v in (("q", q), ("page", page)) if v not in (None, "", 1)}
        return f"{self.base}/search" + (f"?{urlencode(params)}" if params else "")

    def cart(self) -> str:
        return f"{self.base}/cart"

    def cart_add(self) -> str:
        return f"{self.base}/cart/add"

    def cart_update(self) -> str:
        return f"{self.base}/cart/update"

    def cart_remove(self) -> str:
        return f"{self.base}/cart/remove"

    def checkout(self) -> str:
        return f"{self.base}/checkout"

    def checkout_info(self, token: str) -> str:
        return f"{self.base}/checkouts/c/{token}"

    def checkout_payment(self, token: str) -> str:
        return f"{self.base}/checkouts/c/{token}/payment"

    def thank_you(self, token: str) -> str:
        return f"{self.base}/checkouts/c/{token}/thank-you"

    def page(self, handle: str) -> str:
        return f"{self.base}/pages/{handle}"
