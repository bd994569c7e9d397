"""What buyers post, validated: cart quantities and the checkout's information and payment
forms — the fields read, the rules and the error messages shown next to a field.

Pure functions of the posted values (and the time, for card expiry); the handlers in
`app.py` decide what to store, log or render with the result. Only test cards are accepted
(the numbers payment providers publish for testing); nothing is charged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from simpersona.store.state import COUNTRIES, MAX_QUANTITY, SHIPPING_METHODS

TEST_CARDS: dict[str, str] = {
    "4242424242424242": "Visa",
    "4000056655665556": "Visa",
    "5555555555554444": "Mastercard",
    "2223003122003222": "Mastercard",
    "378282246310005": "American Express",
    "6011111111111117": "Discover",
}
DECLINED_TEST_CARDS: frozenset[str] = frozenset({"4000000000000002", "4000000000009995"})

# The information step's fields, and those a buyer must fill in (with their labels).
INFO_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "address1",
    "address2",
    "city",
    "postal_code",
    "country",
    "phone",
)
REQUIRED_INFO_FIELDS = (
    ("email", "Email"),
    ("first_name", "First name"),
    ("last_name", "Last name"),
    ("address1", "Address"),
    ("city", "City"),
    ("postal_code", "Postal code"),
)
FORM_ERROR = "Please correct the highlighted fields."  # above a checkout form with errors

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_QTY_RE = re.compile(r"^\s*\+?([0-9]{1,6})\s*$")  # ASCII digits: int("٣") is 3
_EXPIRY_RE = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")
_CVC_RE = re.compile(r"\d{3,4}")
_EXPIRY_FORMAT = "Enter the expiry date as MM / YY."


def parse_quantity(raw: object, minimum: int = 1) -> tuple[int | None, str | None]:
    """(quantity, None) or (None, error message) for a form value."""
    m = _QTY_RE.match(str(raw)) if raw is not None else None
    qty = int(m.group(1)) if m else None
    if qty is None or not minimum <= qty <= MAX_QUANTITY:
        return None, f"Quantity must be a whole number from {minimum} to {MAX_QUANTITY}."
    return qty, None


def cart_limit_error(in_cart: int) -> str:
    """Why an add to cart was refused: it would take the item past `MAX_QUANTITY`."""
    return (
        f"You can have at most {MAX_QUANTITY} of this item in your cart "
        f"(you already have {in_cart})."
    )


@dataclass(frozen=True)
class InfoForm:
    """The information step as posted: cleaned values, the shipping method's code
    ('standard' when the posted one is unknown) and errors by field (empty: valid)."""

    values: dict[str, str]
    shipping: str
    errors: dict[str, str]


def validate_info(form: Mapping[str, Any]) -> InfoForm:
    values = {f: " ".join(str(form.get(f, "")).split())[:200] for f in INFO_FIELDS}
    shipping = str(form.get("shipping", "standard"))
    errors: dict[str, str] = {}
    for f, label in REQUIRED_INFO_FIELDS:
        if not values[f]:
            errors[f] = f"{label} is required."
    if values["email"] and not _EMAIL_RE.match(values["email"]):
        errors["email"] = "Enter a valid email address."
    if values["country"] not in dict(COUNTRIES):
        errors["country"] = "Choose a country we ship to."
    if shipping not in SHIPPING_METHODS:
        errors["shipping"] = "Choose a shipping method."
        shipping = "standard"
    return InfoForm(values, shipping, errors)


@dataclass(frozen=True)
class PaymentForm:
    """The payment step as posted: the card number (digits only), errors by field (empty:
    valid) and the values to show again when there are errors (never the CVC)."""

    number: str
    errors: dict[str, str]
    values: dict[str, str]

    @property
    def card_brand(self) -> str:
        return TEST_CARDS[self.number]

    @property
    def card_last4(self) -> str:
        return self.number[-4:]


def validate_payment(form: Mapping[str, Any], now: datetime) -> PaymentForm:
    """The payment form checked at `now` (a card expired before this month is refused)."""
    number = re.sub(r"[\s-]", "", str(form.get("card_number", "")))
    expiry = str(form.get("card_expiry", "")).strip()
    cvc = str(form.get("card_cvc", "")).strip()
    name = " ".join(str(form.get("card_name", "")).split())[:100]
    errors: dict[str, str] = {}
    if not number:
        errors["card_number"] = "Enter a card number."
    elif number in DECLINED_TEST_CARDS:
        errors["card_number"] = "Your card was declined. Try a different card."
    elif number not in TEST_CARDS:
        errors["card_number"] = (
            "This is a test store: only test cards are accepted, e.g. 4242 4242 4242 4242."
        )
    m = _EXPIRY_RE.match(expiry)
    if not m:
        errors["card_expiry"] = _EXPIRY_FORMAT
    else:
        month, year = int(m.group(1)), int(m.group(2))
        year = year + 2000 if year < 100 else year
        now = now.astimezone(UTC)
        if not 1 <= month <= 12:
            errors["card_expiry"] = _EXPIRY_FORMAT
        elif (year, month) < (now.year, now.month):
            errors["card_expiry"] = "Your card has expired."
    if not _CVC_RE.fullmatch(cvc):
        errors["card_cvc"] = "Enter the 3 or 4 digit security code."
    values = {
        "card_number": str(form.get("card_number", ""))[:30],
        "card_expiry": expiry[:10],
        "card_name": name,
    }
    return PaymentForm(number, errors, values)
