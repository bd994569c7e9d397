"""Seed a deterministic demo catalogue into an empty, freshly-migrated DB.

18 products in 3 categories (2 of them parents with size variants), a partner
with stock 1000 for every buyable product, 3 shipping countries, and one
generated JPEG per product (written to MEDIA_ROOT/images/products/).
Run once on a fresh DB: `python manage.py migrate && python manage.py seed_shop`.
"""

import datetime as dt
import io
import shutil
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.sites.models import Site
from django.core.files.base import ContentFile
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from oscar.core.loading import get_model

Category = get_model("catalogue", "Category")
Product = get_model("catalogue", "Product")
ProductClass = get_model("catalogue", "ProductClass")
ProductAttribute = get_model("catalogue", "ProductAttribute")
ProductCategory = get_model("catalogue", "ProductCategory")
ProductImage = get_model("catalogue", "ProductImage")
Partner = get_model("partner", "Partner")
StockRecord = get_model("partner", "StockRecord")
Country = get_model("address", "Country")

# (category, background colour) -> products.
# Product: (title, price, upc, description, variant sizes or None)
CATALOGUE = [
    (
        "Shoes",
        (52, 98, 160),
        [
            (
                "Trail running shoe",
                "89.00",
                "SHO-TRAIL",
                "Lightweight trail running shoe with a grippy lugged outsole and a breathable mesh upper.",
                ["8", "9", "10", "11"],
            ),
            (
                "Road running shoe",
                "119.00",
                "SHO-ROAD",
                "Cushioned road running shoe for daily training and long runs on pavement.",
                None,
            ),
            (
                "Leather ankle boot",
                "139.00",
                "SHO-ANKLE",
                "Full-grain leather ankle boot with a stitched rubber sole and side zip.",
                None,
            ),
            (
                "Canvas sneaker",
                "49.00",
                "SHO-CANVAS",
                "Classic low-top canvas sneaker with a vulcanised rubber sole.",
                None,
            ),
            (
                "Waterproof hiking boot",
                "159.00",
                "SHO-HIKE",
                "Mid-height waterproof hiking boot with a membrane lining and ankle support.",
                None,
            ),
            (
                "Wool house slipper",
                "35.00",
                "SHO-SLIPPER",
                "Soft felted wool house slipper with a non-slip sole.",
                None,
            ),
        ],
    ),
    (
        "Bags",
        (150, 90, 50),
        [
            (
                "Leather tote bag",
                "129.00",
                "BAG-TOTE",
                "Roomy leather tote bag with an inner zip pocket and sturdy shoulder straps.",
                None,
            ),
            (
                "Canvas backpack",
                "69.00",
                "BAG-BACKPACK",
                "Everyday waxed canvas backpack with a padded 15-inch laptop sleeve.",
                None,
            ),
            (
                "Rolling carry-on suitcase",
                "189.00",
                "BAG-CARRYON",
                "Hard-shell rolling carry-on suitcase with four spinner wheels and a TSA lock.",
                None,
            ),
            (
                "Crossbody bag",
                "59.00",
                "BAG-CROSSBODY",
                "Compact nylon crossbody bag with an adjustable strap and three pockets.",
                None,
            ),
            (
                "Laptop messenger bag",
                "89.00",
                "BAG-MESSENGER",
                "Water-resistant messenger bag that fits a 16-inch laptop.",
                None,
            ),
            (
                "Waxed duffel bag",
                "109.00",
                "BAG-DUFFEL",
                "Weekend duffel bag in waxed cotton with leather handles.",
                None,
            ),
        ],
    ),
    (
        "Outdoor",
        (60, 130, 70),
        [
            (
                "Two-person dome tent",
                "199.00",
                "OUT-TENT",
                "Freestanding two-person dome tent with a full rain fly and two doors.",
                None,
            ),
            (
                "Down sleeping bag",
                "149.00",
                "OUT-SLEEPBAG",
                "Three-season down sleeping bag rated to 20 F, packs into a compression sack.",
                None,
            ),
            (
                "Insulated water bottle",
                "29.00",
                "OUT-BOTTLE",
                "Vacuum-insulated stainless steel water bottle, 32 oz, keeps drinks cold for 24 hours.",
                None,
            ),
            (
                "Trekking poles (pair)",
                "79.00",
                "OUT-POLES",
                "Collapsible aluminium trekking poles with cork grips, sold as a pair.",
                None,
            ),
            (
                "Camping headlamp",
                "24.00",
                "OUT-HEADLAMP",
                "Rechargeable 350-lumen camping headlamp with a red night mode.",
                None,
            ),
            (
                "Rain shell jacket",
                "99.00",
                "OUT-RAINSHELL",
                "Packable waterproof rain shell jacket with taped seams and an adjustable hood.",
                ["S", "M", "L", "XL"],
            ),
        ],
    ),
]

COUNTRIES = [
    # iso2, iso3, numeric, printable name, official name, display_order
    ("US", "USA", "840", "United States", "United States of America", 3),
    ("CA", "CAN", "124", "Canada", "Canada", 2),
    (
        "GB",
        "GBR",
        "826",
        "United Kingdom",
        "United Kingdom of Great Britain and Northern Ireland",
        1,
    ),
]

STOCK = 1000
# Fixed creation timestamps (Oscar sorts by -date_created: "Newest", variant lists).
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _image_bytes(title, rgb):
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (600, 600), rgb)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=44)
    except TypeError:  # very old Pillow without FreeType sizing
        font = ImageFont.load_default()
    words, lines, cur = title.split(), [], ""
    for w in words:
        cand = (cur + " " + w).strip()
        if draw.textlength(cand, font=font) > 520 and cur:
            lines.append(cur)
            cur = w
        else:
            cur = cand
    lines.append(cur)
    y = 300 - 30 * len(lines)
    for line in lines:
        width = draw.textlength(line, font=font)
        draw.text(((600 - width) / 2, y), line, fill=(255, 255, 255), font=font)
        y += 60
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class Command(BaseCommand):
    help = "Seed the deterministic demo catalogue (run on a fresh, migrated DB)."

    @transaction.atomic
    def handle(self, *args, **options):
        if Product.objects.exists():
            raise CommandError("Catalogue already seeded; run on a fresh DB.")

        Site.objects.update_or_create(
            pk=settings.SITE_ID, defaults={"domain": "127.0.0.1", "name": "Oscar"}
        )

        for iso2, iso3, num, printable, name, order in COUNTRIES:
            Country.objects.update_or_create(
                iso_3166_1_a2=iso2,
                defaults=dict(
                    iso_3166_1_a3=iso3,
                    iso_3166_1_numeric=num,
                    printable_name=printable,
                    name=name,
                    display_order=order,
                    is_shipping_country=True,
                ),
            )

        media = Path(settings.MEDIA_ROOT)
        shutil.rmtree(media / settings.OSCAR_IMAGE_FOLDER, ignore_errors=True)
        media.mkdir(parents=True, exist_ok=True)
        # Oscar's placeholder for products without images must live in MEDIA_ROOT.
        import oscar

        missing = (
            Path(oscar.__file__).parent
            / "static"
            / "oscar"
            / "img"
            / settings.OSCAR_MISSING_IMAGE_URL
        )
        if missing.exists():
            shutil.copyfile(missing, media / settings.OSCAR_MISSING_IMAGE_URL)

        partner = Partner.objects.create(name="Oscar Demo Supply", code="demo-supply")

        classes = {}
        for cat_name, _rgb, _products in CATALOGUE:
            pc = ProductClass.objects.create(
                name=cat_name, requires_shipping=True, track_stock=True
            )
            ProductAttribute.objects.create(product_class=pc, name="Size", code="size", type="text")
            classes[cat_name] = pc

        n = 0
        for cat_name, rgb, products in CATALOGUE:
            category = Category.add_root(
                name=cat_name,
                slug=cat_name.lower(),
                is_public=True,
                description=f"{cat_name} from the demo catalogue.",
            )
            for title, price, upc, description, sizes in products:
                structure = Product.PARENT if sizes else Product.STANDALONE
                product = Product.objects.create(
                    title=title,
                    upc=upc,
                    structure=structure,
                    product_class=classes[cat_name],
                    description=f"<p>{description}</p>",
                    is_public=True,
                )
                ProductCategory.objects.create(product=product, category=category)
                image = ProductImage(product=product, display_order=0, caption=title)
                image.original.save(
                    f"{upc.lower()}.jpg", ContentFile(_image_bytes(title, rgb)), save=False
                )
                image.save()
                Product.objects.filter(pk=product.pk).update(
                    date_created=EPOCH + dt.timedelta(hours=n)
                )
                if sizes:
                    for k, size in enumerate(sizes):
                        child = Product(
                            parent=product,
                            structure=Product.CHILD,
                            upc=f"{upc}-{size}",
                            title=f"{title}, size {size}",
                            is_public=True,
                        )
                        child.attr.size = size
                        child.save()
                        # Newest first => listed smallest size first on the parent's page.
                        Product.objects.filter(pk=child.pk).update(
                            date_created=EPOCH + dt.timedelta(hours=n, minutes=len(sizes) - k)
                        )
                        StockRecord.objects.create(
                            product=child,
                            partner=partner,
                            partner_sku=f"{upc}-{size}",
                            price_currency=settings.OSCAR_DEFAULT_CURRENCY,
                            price=Decimal(price),
                            num_in_stock=STOCK,
                        )
                else:
                    StockRecord.objects.create(
                        product=product,
                        partner=partner,
                        partner_sku=upc,
                        price_currency=settings.OSCAR_DEFAULT_CURRENCY,
                        price=Decimal(price),
                        num_in_stock=STOCK,
                    )
                n += 1
        self.stdout.write(f"Seeded {n} products in {len(CATALOGUE)} categories.")
