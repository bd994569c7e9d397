"""Site profiles: what a store's pages say that the generic page reading misses.

The agents read any store generically (`simpersona.agent.page_reading`: URL patterns,
JSON-LD and microdata `Product`/`Offer`, Open Graph, common cart forms, labels). A profile is
an optional YAML file that adds CSS selectors and URL patterns for one store:

```yaml
name: my-shop
match:                                  # when it applies (any of)
  hosts: [staging.my-shop.example]
  generator: my-shop-theme              # <meta name="generator" content="my-shop-theme">
page_kind:
  attribute: {selector: body, name: data-template}   # a page-kind value, if the theme has one
  urls:                                 # regular expressions on the URL path, tried in order
    product: ['^/item/\\d+']
    collection: ['^/aisle/']
facts:                                  # text (or an attribute) of the first match
  price: {selector: '.price-now'}
  cart_count: {selector: '#mini-cart .count'}
  product_id: {selector: body, attribute: data-sku}
controls:
  add_to_cart: 'button.buy'
  quantity: 'input.qty'
  search: '#site-search'
elements:
  product_id_attribute: data-sku        # links carrying it are product links
  collection_id_attribute: data-aisle
guess: true                             # false: this profile says everything; no guessing
```

Everything is optional. `load_profile` validates a file with pydantic and raises
`ProfileError` naming the file and the field, like the import mappings do. The project's own
storefront is read through `STOREFRONT_PROFILE`, the same mechanism: the agents need no
private knowledge of it.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simpersona.agent.page_reading import FACT_KEYS, PAGE_KINDS


class ProfileError(ValueError):
    """A site profile that cannot be used (bad YAML, unknown field, bad selector or pattern)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Read(_Strict):
    """Where a value is: the first element matching `selector`, its `attribute` or its text."""

    selector: str = Field(min_length=1)
    attribute: str | None = None


class KindAttribute(_Strict):
    selector: str = Field(default="body", min_length=1)
    name: str = Field(min_length=1)


class PageKindRules(_Strict):
    attribute: KindAttribute | None = None
    meta: str | None = None  # <meta name=...> whose content is a page kind
    urls: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("urls")
    @classmethod
    def _kinds_and_patterns(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for kind, patterns in v.items():
            if kind not in PAGE_KINDS:
                raise ValueError(
                    f"unknown page kind {kind!r}; expected one of {', '.join(PAGE_KINDS)}"
                )
            for p in patterns:
                try:
                    re.compile(p)
                except re.error as exc:
                    raise ValueError(f"bad regular expression {p!r} for {kind}: {exc}") from None
        return v


class Controls(_Strict):
    add_to_cart: str | None = None
    quantity: str | None = None
    search: str | None = None


class ElementIds(_Strict):
    product_id_attribute: str | None = None
    collection_id_attribute: str | None = None


class Match(_Strict):
    hosts: list[str] = Field(default_factory=list)
    generator: str | None = None


class SiteProfile(_Strict):
    """One store's additions to the generic page reading (see the module docstring)."""

    name: str = Field(min_length=1)
    match: Match = Field(default_factory=Match)
    page_kind: PageKindRules = Field(default_factory=PageKindRules)
    facts: dict[str, Read] = Field(default_factory=dict)
    controls: Controls = Field(default_factory=Controls)
    elements: ElementIds = Field(default_factory=ElementIds)
    form_error: str | None = None  # selector of a form's error message
    # False: the profile says everything there is to read; the conventions add no facts.
    guess: bool = True

    @field_validator("facts")
    @classmethod
    def _known_facts(cls, v: dict[str, Read]) -> dict[str, Read]:
        for key in v:
            if key not in FACT_KEYS:
                raise ValueError(f"unknown fact {key!r}; expected one of {', '.join(FACT_KEYS)}")
        return v

    def applies_to(self, host: str, generator: str | None) -> bool:
        host = host.lower()
        if any(host == h.lower() or host.endswith("." + h.lower()) for h in self.match.hosts):
            return True
        return bool(self.match.generator and generator == self.match.generator)

    @cached_property
    def js(self) -> dict[str, Any]:
        """What the in-page extraction script needs of the profile: how it matches a page
        and what it reads there (built once; the script runs at every step)."""
        return {
            "name": self.name,
            "hosts": [h.lower() for h in self.match.hosts],
            "generator": self.match.generator,
            "kind_attr": self.page_kind.attribute.model_dump()
            if self.page_kind.attribute
            else None,
            "kind_meta": self.page_kind.meta,
            "facts": {k: r.model_dump() for k, r in self.facts.items()},
            "product_attr": self.elements.product_id_attribute,
            "collection_attr": self.elements.collection_id_attribute,
            "form_error": self.form_error,
            "guess": self.guess,
        }


def load_profile(path: str | Path) -> SiteProfile:
    """A site profile from a YAML file; `ProfileError` names the file and the bad field."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{p}: no such site profile") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{p}: a site profile is a YAML mapping (name, match, page_kind, …)")
    try:
        return SiteProfile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"])
            lines.append(f"{p}: field {where}: {err['msg']}")
        raise ProfileError("\n".join(lines)) from None


# The project's storefront (simpersona/store): its pages carry their kind, ids and facts as
# data attributes, which its own tests use. The agents read them through this profile, the
# way they would read any store's profile.
STOREFRONT_PROFILE = SiteProfile(
    name="simpersona-storefront",
    match=Match(generator="simpersona-storefront"),
    page_kind=PageKindRules(
        attribute=KindAttribute(selector="body", name="data-page"), meta="sp:page"
    ),
    facts={
        "checkout_step": Read(selector="body", attribute="data-checkout-step"),
        "product_id": Read(selector="body", attribute="data-product-id"),
        "order_number": Read(selector="body", attribute="data-order-number"),
        "status": Read(selector="#error-page", attribute="data-status"),
        "price": Read(selector="#product-price"),
        "cart_count": Read(selector="#cart-count"),
        "subtotal": Read(selector="#cart-subtotal"),
        "notice": Read(selector="#cart-notice"),
    },
    controls=Controls(
        add_to_cart="#add-to-cart-button", quantity="#quantity-input", search="#search-input"
    ),
    elements=ElementIds(
        product_id_attribute="data-product-id", collection_id_attribute="data-collection-id"
    ),
    form_error="#form-error",
    guess=False,
)
BUILTIN_PROFILES: tuple[SiteProfile, ...] = (STOREFRONT_PROFILE,)


def choose_profile(
    host: str, generator: str | None, profiles: tuple[SiteProfile, ...] = ()
) -> SiteProfile | None:
    """The first of `profiles` (then the built-in ones) that applies to the page."""
    for prof in (*profiles, *BUILTIN_PROFILES):
        if prof.applies_to(host, generator):
            return prof
    return None
