#!/usr/bin/env python3
"""Smoke test for the loopback django-oscar shop: a full guest order in Chromium.

Run with a Python that has Playwright (e.g. the repo venv), after
``python -m scripts.shops.oscar install``::

    .venv/bin/python scripts/shops/oscar/smoke.py [--dump DIR] [--chromium PATH]

Checks: two concurrent instances get separate DBs/ports; home -> category ->
product -> add to basket (standalone + a size variant) -> basket -> checkout as
guest -> shipping address -> shipping method (2 choices) -> payment -> preview ->
place order -> thank-you; orders() goes 0 -> 1 on that instance only; no request
leaves 127.0.0.1. --dump writes each step's HTML + a screenshot to DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the repo root
launcher = importlib.import_module("scripts.shops.oscar")


async def guest_order(
    page, base: str, steps: list, dump: Path | None = None, tag: str = ""
) -> None:
    """Full guest checkout in one page: 2 items (a standalone product + a size variant)."""
    from playwright.async_api import expect

    async def step(name: str) -> None:
        await page.wait_for_load_state("load")
        steps.append((name, page.url))
        print(f"  {tag}{name:16s} {page.url}", flush=True)
        if dump:
            dump.mkdir(parents=True, exist_ok=True)
            n = len(steps)
            (dump / f"{n:02d}-{name}.html").write_text(await page.content())
            await page.screenshot(path=str(dump / f"{n:02d}-{name}.png"), full_page=True)

    await page.goto(base + "/")
    await step("home")
    await page.locator("aside").get_by_role("link", name="Bags").click()
    await step("category")
    await page.get_by_role("link", name="Leather tote bag").first.click()
    await step("product")
    await page.locator("#add_to_basket_form button[type=submit]").click()
    await step("added")
    # Variant: the parent's page lists its children as links; add size M of the jacket.
    await page.goto(base + "/search/?q=rain+shell")
    await step("search")
    await page.get_by_role("link", name="Rain shell jacket").first.click()
    await step("parent-product")
    await page.get_by_role("link", name="Rain shell jacket, size M").click()
    await step("variant")
    await page.locator("#add_to_basket_form button[type=submit]").click()
    await step("added-variant")
    await page.goto(base + "/basket/")
    await step("basket")
    await page.get_by_role("link", name="Proceed to checkout").click()
    await step("checkout-index")
    await page.fill("#id_username", "guest@example.com")
    await page.check("#id_options_0")  # "anonymous": checkout as a guest
    await page.get_by_role("button", name="Continue").click()
    await step("shipping-addr")
    await page.fill("#id_first_name", "Ada")
    await page.fill("#id_last_name", "Lovelace")
    await page.fill("#id_line1", "1 Main Street")
    await page.fill("#id_line4", "Springfield")
    await page.fill("#id_state", "IL")
    await page.fill("#id_postcode", "62701")
    await page.select_option("#id_country", "US")
    await page.get_by_role("button", name="Continue").click()
    await step("shipping-method")
    codes = await page.locator("form input[name=method_code]").evaluate_all(
        "els => els.map(e => e.value)"
    )
    assert codes == ["standard", "express"], codes
    await page.locator(
        "form:has(input[name=method_code][value=express]) button[type=submit]"
    ).click()
    await step("payment")
    await page.get_by_role("link", name="Continue").click()
    await step("preview")
    await page.get_by_role("button", name="Place order").click()
    await step("thank-you")
    await expect(page.get_by_text(re.compile("order number", re.I)).first).to_be_visible()


async def run(args) -> int:
    from playwright.async_api import async_playwright

    a, b = launcher.OscarShop(args.root), launcher.OscarShop(args.root)
    if not a.installed():
        print("not installed; run: python -m scripts.shops.oscar install", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    url_a = a.start()
    t1 = time.monotonic()
    url_b = b.start()
    t2 = time.monotonic()
    print(f"started A {url_a} in {t1 - t0:.1f}s, B {url_b} in {t2 - t1:.1f}s")
    external: list[str] = []
    try:
        assert url_a != url_b and a.db_path != b.db_path, "instances share a port or DB"
        assert a.orders() == 0 and b.orders() == 0
        assert len(a.products()) == 18

        def on_request(req):
            host = urlparse(req.url).hostname
            if req.url.startswith(("http:", "https:")) and host not in ("127.0.0.1", "localhost"):
                external.append(req.url)

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=args.chromium, args=["--headless", "--no-sandbox"]
            )
            page = await browser.new_page()
            page.on("request", on_request)
            await guest_order(page, url_a, [], args.dump)
            n_a, n_b = a.orders(), b.orders()
            print(f"orders after one checkout on A: A={n_a} B={n_b}")
            assert n_a == 1 and n_b == 0, (n_a, n_b)

            if args.concurrent:
                print(f"{args.concurrent} concurrent guest checkouts on B ...")
                t3 = time.monotonic()
                pages = []
                for _ in range(args.concurrent):
                    ctx = await browser.new_context()
                    pages.append(await ctx.new_page())
                await asyncio.gather(
                    *(guest_order(p, url_b, [], None, tag=f"[{i}] ") for i, p in enumerate(pages))
                )
                n_b = b.orders()
                print(
                    f"orders on B after {args.concurrent} concurrent checkouts: {n_b} "
                    f"({time.monotonic() - t3:.1f}s)"
                )
                assert n_b == args.concurrent, n_b
            await browser.close()
    finally:
        a.stop()
        b.stop()

    print("external requests:", sorted(set(external)) or "none")
    assert not external
    print("OK")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", type=Path, default=None, help="write step HTML/screenshots here")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--root", type=Path, default=None)
    ap.add_argument("--concurrent", type=int, default=0, help="also run N simultaneous checkouts")
    args = ap.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
