"""Throw-away end-to-end check of the EverShop test shop: one full guest order in headless Chromium.

    .venv/bin/python scripts/shops/evershop/smoke.py [--install] [--screens DIR]

home -> category -> product (pick colour variant) -> add to cart -> cart -> checkout (email,
address, shipping method, cash on delivery) -> place order -> confirmation; asserts orders() 0 -> 1.
Also prints start() time, the server's RSS and every non-loopback host the pages requested.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repo root

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from scripts.shops.evershop import EverShopShop  # noqa: E402


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--install", action="store_true")
    ap.add_argument("--screens", type=Path, default=None)
    args = ap.parse_args()
    shop = EverShopShop()
    if args.install or not shop.installed():
        t = time.monotonic()
        shop.install()
        print(f"install: {time.monotonic() - t:.1f}s")
    t = time.monotonic()
    base = shop.start()
    print(f"start(): {time.monotonic() - t:.1f}s -> {base}")
    try:
        before = shop.orders()
        print(f"orders before: {before}; products seeded: {len(shop.products())}")
        hosts: set[str] = set()
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
            )
            page = browser.new_page()
            page.set_default_timeout(20000)
            page.on("request", lambda r: hosts.add(r.url.split("/")[2]))

            def shot(name: str) -> None:
                if args.screens:
                    args.screens.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.screens / f"{name}.png"), full_page=True)

            page.goto(base + "/")
            page.wait_for_load_state("networkidle")
            shot("01-home")
            page.click("nav a:has-text('Footwear')")
            page.wait_for_url("**/footwear")
            page.wait_for_load_state("networkidle")
            shot("02-category")
            page.click("a[href='/footwear/trail-running-shoe-black']")
            page.wait_for_url("**/footwear/trail-running-shoe-black")
            page.wait_for_load_state("networkidle")
            # Variant products need an explicit option click ("Please select variant options" otherwise);
            # picking a colour reloads the page as <url>?color=<option id> showing that variant.
            page.click(".variant-option-list button:has-text('Blue')")
            page.wait_for_url("**/trail-running-shoe-black?color=*")
            page.wait_for_load_state("networkidle")
            expect(page.locator("h1")).to_contain_text("Blue", ignore_case=True)
            page.fill("input[name=qty]", "2")
            shot("03-product")
            with page.expect_response(
                lambda r: "/api/cart/mine/items" in r.url and r.request.method == "POST"
            ) as r:
                page.click("#productForm button:has-text('Add to cart')")
            assert r.value.ok, r.value.text()
            expect(page.locator(".mini-cart-icon")).to_have_attribute(
                "aria-label", "Shopping cart with 2 items"
            )
            page.goto(base + "/cart")
            page.wait_for_load_state("networkidle")
            expect(page.locator("h1")).to_have_text("Your cart")
            shot("04-cart")
            page.click("button:has-text('Proceed to checkout')")
            page.wait_for_url("**/checkout")
            page.wait_for_load_state("networkidle")
            page.fill("input[name='contact.email']", "guest.shopper@example.com")
            page.fill("input[name='shippingAddress.full_name']", "Guest Shopper")
            page.fill("input[name='shippingAddress.telephone']", "5551234567")
            page.fill("input[name='shippingAddress.address_1']", "1 Market Street")
            page.fill("input[name='shippingAddress.city']", "San Francisco")
            page.click("button#field-shippingAddress\\.country")
            page.click("[role=option]:has-text('United States')")
            page.click("button#field-shippingAddress\\.province")
            page.click("[role=option]:has-text('California')")
            page.fill("input[name='shippingAddress.postcode']", "94105")
            page.locator("input[name='shippingAddress.postcode']").blur()
            page.wait_for_selector("text=Express Shipping")
            shot("05-checkout-address")
            page.click("label:has-text('Express Shipping')")
            page.wait_for_load_state("networkidle")
            page.click("label:has-text('Cash on Delivery')")
            page.wait_for_load_state("networkidle")
            shot("06-checkout-filled")
            page.click("button:has-text('Place Order')")
            page.wait_for_url("**/checkout/success/**", timeout=30000)
            page.wait_for_load_state("networkidle")
            shot("07-success")
            print("confirmation URL:", page.url.replace(base, ""))
            print("confirmation text:", " | ".join(page.inner_text("main").split("\n")[:12]))
            browser.close()
        after = shop.orders()
        print(f"orders after: {after}")
        print(
            f"server RSS (node processes): {rss_mb(shop.server_pids()):.0f} MB over {len(shop.server_pids())} processes"
        )
        print("hosts requested:", sorted(hosts))
        assert (before, after) == (0, 1), (before, after)
        print("SMOKE OK")
    finally:
        shop.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
