"""Planted buyer types: behavioural tendencies, not rules.

Every parameter of a type is the centre of a distribution. Each buyer draws its own session
rate, browsing rate, funnel probabilities (Beta), page mixes (Dirichlet), price sensitivity
and favourite category around its type's values, so buyers of different types overlap the
way real buyers do: a decisive buyer sometimes leaves without buying, a window shopper
sometimes carts, a bouncer sometimes clicks twice.

Event-mix weights are ordered as `MIX_KINDS` (page_view, collection_view, product_view,
search); page weights as `PAGE_KINDS` (home, blog, info page); price weights as
`PRICE_LEVELS` (premium, neutral, bargain).
"""

from __future__ import annotations

from dataclasses import dataclass

MIX_KINDS: tuple[str, ...] = ("page_view", "collection_view", "product_view", "search")
PAGE_KINDS: tuple[str, ...] = ("home", "blog", "info")
PRICE_LEVELS: tuple[str, ...] = ("premium", "neutral", "bargain")
# Exponent of the relative price in a buyer's product choice, per price level: weight of a
# product ∝ popularity × (price / category median) ** -gamma.
PRICE_GAMMA: tuple[float, ...] = (-0.5, 0.3, 1.6)

Mix4 = tuple[float, float, float, float]
Mix3 = tuple[float, float, float]


@dataclass(frozen=True)
class BuyerType:
    """One planted buyer type. Rates are per buyer (sessions) or per session (funnel)."""

    name: str
    description: str
    expected_stratum: str  # funnel stratum (A–E) most of its buyers land in, default profile
    sessions_mean: float  # mean number of sessions beyond the first in the window
    sessions_shape: float  # Gamma shape of the per-buyer session rate; small = heavy tail
    browse_mean: float  # mean browsing events per session beyond the landing event
    browse_sigma: float  # lognormal sigma of the per-buyer browsing rate
    landing: Mix4  # weights of a session's first event (MIX_KINDS order)
    browse: Mix4  # weights of later browsing events (MIX_KINDS order)
    pages: Mix3  # weights of page_view targets (PAGE_KINDS order)
    p_atc: float  # mean per-session probability of adding to cart
    p_checkout: float  # mean probability that a carting session starts checkout
    p_purchase: float  # mean probability that a started checkout completes
    funnel_kappa: float = 4.0  # Beta concentration of the buyer's funnel probabilities
    mix_concentration: float = 6.0  # Dirichlet concentration of the buyer's event mixes
    extra_carts: float = 0.3  # Poisson mean of further add_to_cart events in a carting session
    p_remove: float = 0.1  # probability that a cart line is removed again
    extra_quantity: float = 0.15  # Poisson mean of extra units per cart line
    price_levels: Mix3 = (0.25, 0.55, 0.2)  # buyer price sensitivity (PRICE_LEVELS order)
    sale_affinity: float = 0.1  # mean probability that a session shops the sale collection
    focus: float = 0.7  # mean probability that a session stays in the favourite category
    explore: float = 1.0  # mean distinct products considered per session beyond one
    dwell_s: float = 45.0  # median seconds between consecutive events
    line: str | None = None  # favourite product line (vocab.LINE_NAMES); None = no preference
    line_focus: float = 0.0  # mean probability that a session shops the favourite line
    min_browse: int = 0  # browsing events every session has beyond the landing event
    # every session views a product: when no browsing event was drawn as a product view,
    # the session's last one becomes one (as in a carting session)
    always_product_view: bool = False

    def __post_init__(self) -> None:
        from simpersona.synth.vocab import LINE_NAMES

        if self.line is not None and self.line not in LINE_NAMES:
            raise ValueError(
                f"buyer type {self.name!r}: unknown product line {self.line!r}; "
                f"choose one of {LINE_NAMES}"
            )


DEFAULT_TYPES: tuple[BuyerType, ...] = (
    BuyerType(
        name="bouncer",
        description="Lands on one page (often a blog post or an ad's product page) and leaves.",
        expected_stratum="E",
        sessions_mean=0.06,
        sessions_shape=0.5,
        browse_mean=0.03,
        browse_sigma=0.8,
        landing=(0.62, 0.02, 0.36, 0.0),
        browse=(0.45, 0.1, 0.4, 0.05),
        pages=(0.25, 0.62, 0.13),
        p_atc=0.004,
        p_checkout=0.2,
        p_purchase=0.3,
        funnel_kappa=3.0,
        explore=0.1,
        dwell_s=20.0,
        line="Limited Edition",
        line_focus=0.97,
    ),
    BuyerType(
        name="content_reader",
        description="Arrives on articles and info pages and reads; rarely looks at products.",
        expected_stratum="E",
        sessions_mean=0.18,
        sessions_shape=0.6,
        browse_mean=0.45,
        browse_sigma=0.9,
        landing=(1.0, 0.0, 0.0, 0.0),
        browse=(0.85, 0.03, 0.1, 0.02),
        pages=(0.15, 0.7, 0.15),
        p_atc=0.01,
        p_checkout=0.25,
        p_purchase=0.3,
        explore=0.3,
        dwell_s=150.0,
        line="Editor's Pick",
        line_focus=0.97,
    ),
    BuyerType(
        name="window_shopper",
        description="Looks at a product or two every visit, seldom a collection; seldom carts.",
        expected_stratum="D",
        sessions_mean=0.05,
        sessions_shape=0.6,
        browse_mean=0.2,
        browse_sigma=0.9,
        landing=(0.24, 0.02, 0.74, 0.0),
        browse=(0.23, 0.06, 0.69, 0.02),
        pages=(0.4, 0.4, 0.2),
        p_atc=0.02,
        p_checkout=0.25,
        p_purchase=0.3,
        explore=0.6,
        dwell_s=35.0,
        line="New Season",
        line_focus=0.97,
        min_browse=1,
        always_product_view=True,
    ),
    BuyerType(
        name="researcher",
        description="Compares many products of one category over several long sessions.",
        expected_stratum="D",
        sessions_mean=0.8,
        sessions_shape=0.8,
        browse_mean=3.5,
        browse_sigma=0.8,
        landing=(0.25, 0.1, 0.6, 0.05),
        browse=(0.15, 0.14, 0.62, 0.09),
        pages=(0.2, 0.55, 0.25),
        p_atc=0.06,
        p_checkout=0.3,
        p_purchase=0.35,
        price_levels=(0.35, 0.5, 0.15),
        focus=0.85,
        explore=4.0,
        dwell_s=75.0,
        min_browse=3,
        line="Signature",
        line_focus=0.97,
    ),
    BuyerType(
        name="searcher",
        description="Navigates by on-site search, views the results, carts now and then.",
        expected_stratum="D",
        sessions_mean=0.35,
        sessions_shape=0.8,
        browse_mean=2.0,
        browse_sigma=0.8,
        landing=(0.1, 0.03, 0.12, 0.75),
        browse=(0.08, 0.05, 0.47, 0.4),
        pages=(0.6, 0.2, 0.2),
        p_atc=0.1,
        p_checkout=0.35,
        p_purchase=0.4,
        focus=0.6,
        explore=2.0,
        dwell_s=30.0,
    ),
    BuyerType(
        name="bargain_hunter",
        description="Comes back for the sale, opens cheap deals from collections, buys in quantity.",
        expected_stratum="D",
        sessions_mean=1.2,
        sessions_shape=0.8,
        browse_mean=2.0,
        browse_sigma=0.8,
        landing=(0.05, 0.8, 0.13, 0.02),
        browse=(0.05, 0.5, 0.4, 0.05),
        pages=(0.55, 0.15, 0.3),
        p_atc=0.13,
        p_checkout=0.3,
        p_purchase=0.45,
        extra_carts=0.6,
        p_remove=0.2,
        extra_quantity=0.6,
        price_levels=(0.03, 0.27, 0.7),
        sale_affinity=0.6,
        focus=0.45,
        explore=2.5,
        dwell_s=35.0,
        min_browse=1,
        always_product_view=True,
        line="Essentials",
        line_focus=0.97,
    ),
    BuyerType(
        name="cart_abandoner",
        description="Adds to cart, sometimes removes again, and leaves before checkout.",
        expected_stratum="C",
        sessions_mean=0.3,
        sessions_shape=0.8,
        browse_mean=1.0,
        browse_sigma=0.8,
        landing=(0.25, 0.05, 0.68, 0.02),
        browse=(0.18, 0.12, 0.63, 0.07),
        pages=(0.45, 0.3, 0.25),
        p_atc=0.85,
        p_checkout=0.08,
        p_purchase=0.4,
        extra_carts=0.4,
        p_remove=0.25,
        explore=1.2,
        dwell_s=40.0,
        funnel_kappa=10.0,
    ),
    BuyerType(
        name="checkout_abandoner",
        description="Carts and starts checkout, then drops out (price, shipping, payment).",
        expected_stratum="B",
        sessions_mean=0.3,
        sessions_shape=0.8,
        browse_mean=1.0,
        browse_sigma=0.8,
        landing=(0.25, 0.05, 0.68, 0.02),
        browse=(0.2, 0.1, 0.63, 0.07),
        pages=(0.4, 0.2, 0.4),
        p_atc=0.85,
        p_checkout=0.85,
        p_purchase=0.05,
        explore=1.0,
        dwell_s=40.0,
        funnel_kappa=10.0,
    ),
    BuyerType(
        name="decisive_buyer",
        description="Goes straight to a product, carts it and checks out in one short session.",
        expected_stratum="A",
        sessions_mean=0.1,
        sessions_shape=0.6,
        browse_mean=0.8,
        browse_sigma=0.8,
        landing=(0.15, 0.05, 0.78, 0.02),
        browse=(0.15, 0.1, 0.68, 0.07),
        pages=(0.5, 0.1, 0.4),
        p_atc=0.9,
        p_checkout=0.9,
        p_purchase=0.9,
        funnel_kappa=10.0,
        price_levels=(0.4, 0.5, 0.1),
        focus=0.9,
        explore=0.3,
        dwell_s=25.0,
        line="Heritage Classic",
        line_focus=0.97,
    ),
    BuyerType(
        name="loyal_repeat_buyer",
        description="Returns often, knows the catalogue and buys repeatedly.",
        expected_stratum="A",
        sessions_mean=2.5,
        sessions_shape=1.2,
        browse_mean=1.5,
        browse_sigma=0.8,
        landing=(0.5, 0.15, 0.33, 0.02),
        browse=(0.15, 0.2, 0.58, 0.07),
        pages=(0.75, 0.05, 0.2),
        p_atc=0.6,
        p_checkout=0.6,
        p_purchase=0.75,
        funnel_kappa=10.0,
        extra_carts=0.5,
        extra_quantity=0.3,
        price_levels=(0.3, 0.55, 0.15),
        focus=0.8,
        explore=0.8,
        dwell_s=30.0,
        line="Heritage Classic",
        line_focus=0.97,
    ),
)

TYPE_NAMES: tuple[str, ...] = tuple(t.name for t in DEFAULT_TYPES)


@dataclass(frozen=True)
class Profile:
    """A preset population: the base type mixture and the activity multipliers."""

    name: str
    description: str
    shares: dict[str, float]  # base type mixture (normalised when used)
    sessions_scale: float  # multiplies every type's sessions_mean
    events_scale: float  # multiplies every type's browse_mean


PROFILES: dict[str, Profile] = {
    "puffy": Profile(
        name="puffy",
        description=(
            "Calibrated to the real Puffy store: very sparse, ~85 % single-event buyers, "
            "~1.3 events per buyer."
        ),
        shares={
            "bouncer": 0.54,
            "content_reader": 0.13,
            "window_shopper": 0.19,
            "researcher": 0.03,
            "searcher": 0.022,
            "bargain_hunter": 0.027,
            "cart_abandoner": 0.03,
            "checkout_abandoner": 0.016,
            "decisive_buyer": 0.006,
            "loyal_repeat_buyer": 0.005,
        },
        sessions_scale=0.5,
        events_scale=0.3,
    ),
    "dense": Profile(
        name="dense",
        description=(
            "Engaged population for scale tests and training: ~20 events per buyer, every "
            "type well represented, still a few bouncers."
        ),
        shares={
            "bouncer": 0.05,
            "content_reader": 0.07,
            "window_shopper": 0.12,
            "researcher": 0.15,
            "searcher": 0.12,
            "bargain_hunter": 0.12,
            "cart_abandoner": 0.1,
            "checkout_abandoner": 0.08,
            "decisive_buyer": 0.08,
            "loyal_repeat_buyer": 0.11,
        },
        sessions_scale=4.0,
        events_scale=2.3,
    ),
}
