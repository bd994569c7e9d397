"""Product vocabulary of the synthetic shops: categories, the words their titles are composed
of, and content pages. Titles read like real listings, e.g.
"Men's Waterproof Trail Running Shoe – Navy" or "Cooling Hybrid Mattress – Queen".

Each category lists product nouns with a base price (in the shop's currency) and the
qualifier words that fit them. A title is `[audience] [feature] [use] noun – variant`, where
audience and use are optional per category.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Noun:
    singular: str
    plural: str
    base_price: float
    features: tuple[str, ...] = ()  # overrides the category's features when given
    uses: tuple[str, ...] | None = None  # overrides the category's uses when given


@dataclass(frozen=True)
class Category:
    key: str  # handle-safe key, also the category collection handle
    title: str  # collection title of the whole category
    nouns: tuple[Noun, ...]
    features: tuple[str, ...]  # adjectives / materials
    uses: tuple[str, ...] = ()  # activity or purpose qualifiers ("Trail Running")
    audiences: tuple[str, ...] = ()  # "Men's", "Women's", ...
    variants: tuple[str, ...] = ()  # colours or sizes, after the dash
    blog_topics: tuple[str, ...] = ()  # slugs of content pages about the category


COLORS = (
    "Black",
    "Navy",
    "Charcoal",
    "Olive",
    "Sand",
    "White",
    "Forest Green",
    "Burgundy",
    "Slate Blue",
    "Rust",
)

CATEGORIES: tuple[Category, ...] = (
    Category(
        key="footwear",
        title="Footwear",
        nouns=(
            Noun("Shoe", "Shoes", 95.0),
            Noun("Sneaker", "Sneakers", 85.0),
            Noun("Boot", "Boots", 140.0),
            Noun(
                "Sandal",
                "Sandals",
                45.0,
                ("Lightweight", "Cushioned", "Leather", "Waterproof"),
                ("Hiking", "Walking", "Everyday"),
            ),
            Noun(
                "Slip-On",
                "Slip-Ons",
                60.0,
                ("Lightweight", "Cushioned", "Leather", "Breathable"),
                ("Walking", "Everyday"),
            ),
        ),
        features=("Waterproof", "Lightweight", "Cushioned", "Breathable", "Leather", "Insulated"),
        uses=("Trail Running", "Road Running", "Hiking", "Walking", "Training", "Everyday"),
        audiences=("Men's", "Women's", "Kids'"),
        variants=COLORS,
        blog_topics=(
            "how-to-choose-running-shoes",
            "breaking-in-leather-boots",
            "trail-vs-road-shoes",
            "caring-for-waterproof-footwear",
        ),
    ),
    Category(
        key="apparel",
        title="Apparel",
        nouns=(
            Noun(
                "Jacket",
                "Jackets",
                160.0,
                ("Packable", "Insulated", "Waterproof", "Merino"),
                ("Running", "Hiking", "Rain", "Everyday"),
            ),
            Noun("Hoodie", "Hoodies", 70.0),
            Noun(
                "T-Shirt",
                "T-Shirts",
                30.0,
                ("Organic Cotton", "Merino", "Quick-Dry", "Relaxed-Fit", "Slim-Fit"),
            ),
            Noun(
                "Leggings",
                "Leggings",
                65.0,
                ("Quick-Dry", "Merino", "High-Rise"),
                ("Running", "Yoga", "Hiking"),
            ),
            Noun("Shorts", "Shorts", 45.0),
            Noun("Fleece", "Fleeces", 90.0),
        ),
        features=("Organic Cotton", "Merino", "Quick-Dry", "Packable", "Relaxed-Fit", "Slim-Fit"),
        uses=("Running", "Yoga", "Hiking", "Lounge", "Everyday", "Rain"),
        audiences=("Men's", "Women's", "Unisex"),
        variants=COLORS,
        blog_topics=("layering-guide", "merino-vs-cotton", "how-to-wash-technical-apparel"),
    ),
    Category(
        key="sleep",
        title="Sleep",
        nouns=(
            Noun(
                "Mattress",
                "Mattresses",
                900.0,
                ("Memory Foam", "Hybrid", "Cooling", "Organic", "Firm", "Plush"),
            ),
            Noun(
                "Mattress Topper",
                "Mattress Toppers",
                220.0,
                ("Memory Foam", "Cooling", "Down-Alternative", "Plush"),
            ),
            Noun("Pillow", "Pillows", 75.0, ("Memory Foam", "Cooling", "Down", "Adjustable")),
            Noun(
                "Sheet Set", "Sheet Sets", 130.0, ("Organic Cotton", "Linen", "Cooling", "Sateen")
            ),
            Noun("Duvet", "Duvets", 180.0, ("All-Season", "Down", "Cooling", "Organic")),
            Noun(
                "Bed Frame",
                "Bed Frames",
                650.0,
                ("Adjustable", "Upholstered", "Solid Oak", "Platform"),
            ),
            Noun(
                "Weighted Blanket", "Weighted Blankets", 150.0, ("Cooling", "Chunky-Knit", "15 lb")
            ),
        ),
        features=("Memory Foam", "Hybrid", "Cooling", "Organic", "Adjustable", "Plush", "Firm"),
        variants=("Twin", "Twin XL", "Full", "Queen", "King", "Cal King"),
        blog_topics=(
            "best-mattress-for-back-pain",
            "how-to-sleep-cooler",
            "memory-foam-vs-hybrid",
            "heating-pad-vs-electric-blanket",
            "how-often-to-replace-pillows",
        ),
    ),
    Category(
        key="kitchen",
        title="Kitchen",
        nouns=(
            Noun(
                "Chef's Knife",
                "Chef's Knives",
                110.0,
                ("Carbon Steel", "Stainless Steel", "Damascus"),
            ),
            Noun(
                "Skillet",
                "Skillets",
                60.0,
                ("Cast Iron", "Nonstick", "Carbon Steel", "Stainless Steel"),
            ),
            Noun("Dutch Oven", "Dutch Ovens", 180.0, ("Enameled", "Cast Iron")),
            Noun("Saucepan", "Saucepans", 70.0, ("Nonstick", "Stainless Steel", "Copper-Core")),
            Noun(
                "Cutting Board",
                "Cutting Boards",
                45.0,
                ("Acacia Wood", "End-Grain Walnut", "Bamboo"),
            ),
            Noun("Coffee Grinder", "Coffee Grinders", 120.0, ("Burr", "Electric", "Manual")),
        ),
        features=(
            "Cast Iron",
            "Nonstick",
            "Stainless Steel",
            "Carbon Steel",
            "Enameled",
            "Acacia Wood",
        ),
        variants=("8-inch", "10-inch", "12-inch", "Black", "Red", "Cream"),
        blog_topics=("seasoning-cast-iron", "knife-sharpening-basics", "best-pans-for-induction"),
    ),
    Category(
        key="beauty",
        title="Skincare",
        nouns=(
            Noun("Face Serum", "Face Serums", 38.0),
            Noun("Moisturizer", "Moisturizers", 32.0),
            Noun("Cleanser", "Cleansers", 22.0),
            Noun(
                "Sunscreen SPF 50",
                "Sunscreens",
                24.0,
                ("Mineral", "Fragrance-Free", "Tinted", "Hydrating"),
            ),
            Noun("Lip Balm", "Lip Balms", 9.0, ("Hydrating", "Fragrance-Free", "Tinted")),
            Noun("Hair Oil", "Hair Oils", 28.0, ("Argan", "Fragrance-Free", "Repairing")),
        ),
        features=(
            "Vitamin C",
            "Hyaluronic",
            "Fragrance-Free",
            "Hydrating",
            "Brightening",
            "Retinol",
        ),
        variants=("15 ml", "30 ml", "50 ml", "100 ml"),
        blog_topics=("morning-skincare-routine", "retinol-for-beginners", "reading-spf-labels"),
    ),
    Category(
        key="outdoor",
        title="Outdoor Gear",
        nouns=(
            Noun("Tent", "Tents", 320.0, ("Ultralight", "2-Person", "4-Season", "Waterproof")),
            Noun(
                "Sleeping Bag",
                "Sleeping Bags",
                180.0,
                ("Ultralight", "Down", "Insulated", "Compact"),
            ),
            Noun("Backpack", "Backpacks", 140.0, ("Ultralight", "Waterproof", "Compact", "40L")),
            Noun("Trekking Poles", "Trekking Poles", 80.0, ("Carbon", "Collapsible", "Ultralight")),
            Noun("Headlamp", "Headlamps", 40.0, ("Rechargeable", "Waterproof", "Compact"), ()),
            Noun("Camp Stove", "Camp Stoves", 90.0, ("Compact", "Ultralight", "2-Burner")),
        ),
        features=("Ultralight", "2-Person", "Insulated", "Waterproof", "Rechargeable", "Compact"),
        uses=("Backpacking", "Car Camping", "Thru-Hiking", "Alpine"),
        variants=COLORS,
        blog_topics=("first-backpacking-trip-checklist", "choosing-a-sleeping-bag-rating"),
    ),
    Category(
        key="home",
        title="Home Decor",
        nouns=(
            Noun(
                "Throw Blanket",
                "Throw Blankets",
                85.0,
                ("Handwoven", "Linen", "Vintage-Wash", "Chunky-Knit"),
            ),
            Noun("Table Lamp", "Table Lamps", 120.0, ("Ceramic", "Rattan", "Minimalist", "Brass")),
            Noun("Area Rug", "Area Rugs", 260.0, ("Handwoven", "Vintage-Wash", "Jute", "Wool")),
            Noun("Wall Mirror", "Wall Mirrors", 150.0, ("Rattan", "Minimalist", "Arched", "Brass")),
            Noun("Planter", "Planters", 40.0, ("Ceramic", "Rattan", "Minimalist", "Self-Watering")),
            Noun("Scented Candle", "Scented Candles", 30.0, ("Soy Wax", "Ceramic", "Three-Wick")),
        ),
        features=("Handwoven", "Ceramic", "Linen", "Rattan", "Minimalist", "Vintage-Wash"),
        variants=("Ivory", "Terracotta", "Sage", "Charcoal", "Natural", "Blush"),
        blog_topics=("small-living-room-ideas", "choosing-a-rug-size", "cozy-lighting-tips"),
    ),
    Category(
        key="pet",
        title="Pet Supplies",
        nouns=(
            Noun("Dog Bed", "Dog Beds", 95.0, ("Orthopedic", "Washable", "Calming")),
            Noun("Cat Tree", "Cat Trees", 120.0, ("Multi-Level", "Sisal", "Modern")),
            Noun("Dog Leash", "Dog Leashes", 25.0, ("Reflective", "Durable", "Hands-Free")),
            Noun("Chew Toy", "Chew Toys", 14.0, ("Durable", "Rubber", "Squeaky")),
            Noun(
                "Pet Carrier", "Pet Carriers", 60.0, ("Airline-Approved", "Washable", "Expandable")
            ),
            Noun("Dog Harness", "Dog Harnesses", 35.0, ("No-Pull", "Reflective", "Padded")),
        ),
        features=("Orthopedic", "Reflective", "Washable", "Durable", "Calming", "No-Pull"),
        variants=("Small", "Medium", "Large", "X-Large"),
        blog_topics=("crate-training-guide", "choosing-a-dog-harness", "calming-anxious-pets"),
    ),
    Category(
        key="electronics",
        title="Tech Accessories",
        nouns=(
            Noun(
                "Wireless Earbuds",
                "Wireless Earbuds",
                130.0,
                ("Noise-Cancelling", "Sport", "Compact"),
            ),
            Noun("Phone Case", "Phone Cases", 35.0, ("MagSafe", "Rugged", "Slim", "Clear")),
            Noun("Charging Cable", "Charging Cables", 19.0, ("Fast-Charging", "Braided", "USB-C")),
            Noun(
                "Power Bank", "Power Banks", 55.0, ("Fast-Charging", "MagSafe", "Slim", "20000mAh")
            ),
            Noun("Laptop Sleeve", "Laptop Sleeves", 45.0, ("Slim", "Padded", "Water-Resistant")),
            Noun(
                "Bluetooth Speaker", "Bluetooth Speakers", 90.0, ("Rugged", "Waterproof", "Compact")
            ),
        ),
        features=("Noise-Cancelling", "Fast-Charging", "MagSafe", "Rugged", "Slim", "Braided"),
        variants=("Black", "White", "Graphite", "Sky Blue", "Coral"),
        blog_topics=("earbuds-buying-guide", "usb-c-charging-explained"),
    ),
)

CATEGORY_KEYS: tuple[str, ...] = tuple(c.key for c in CATEGORIES)

# Shop-wide pages (besides the home page and the category blogs).
INFO_PAGES: tuple[str, ...] = (
    "about",
    "faq",
    "shipping",
    "returns",
    "contact",
    "size-guide",
    "reviews",
    "financing",
)

# Shop-wide collections every synthetic shop has, besides category and noun collections.
SHOP_COLLECTIONS: tuple[tuple[str, str], ...] = (
    ("sale", "Sale"),
    ("new-arrivals", "New Arrivals"),
    ("best-sellers", "Best Sellers"),
)

# Product lines: every product belongs to one, named at the start of its title (real stores
# sell lines too: "Puffy Lux", "Essentials"). Planted types favour lines (see
# BuyerType.line), so what a buyer looks at says something about who they are even when
# they look at a single product — the signal the buyer vectors' product channels carry.
# (name, title tag, price multiplier: value lines are cheaper, premium ones dearer)
PRODUCT_LINES: tuple[tuple[str, str, float], ...] = (
    ("Essentials", "Budget Basics", 0.7),
    ("Signature", "Luxury Premium", 1.6),
    ("New Season", "Trending Fashion", 1.1),
    ("Heritage Classic", "Timeless Bestseller", 1.0),
    ("Limited Edition", "Exclusive Drop", 1.3),
    ("Editor's Pick", "Journal Featured", 1.0),
)
LINE_NAMES: tuple[str, ...] = tuple(name for name, _, _ in PRODUCT_LINES)
