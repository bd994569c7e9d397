"""Filling any store's checkout forms with test details (never a real person's): our
storefront's fields by id, any other store's by what each field says it is."""

from __future__ import annotations

import re
from typing import Any

from simpersona.agent.observation import Element, Observation

# Test details for the checkout forms (the storefront accepts only test cards).
CHECKOUT_FIELDS: dict[str, str] = {
    "email": "{buyer}@example.com",
    "first-name": "Sam",
    "last-name": "Buyer",
    "address1": "1 Test Street",
    "city": "Springfield",
    "postal-code": "12345",
    "phone": "",
    "address2": "",
    "card-number": "4242 4242 4242 4242",
    "card-expiry": "12 / 34",
    "card-cvc": "123",
    "card-name": "Sam Buyer",
}
CONTINUE_BUTTONS = ("continue-to-payment", "place-order-button")


def click(e: Element) -> dict[str, Any]:
    """The action that clicks `e`."""
    return {"action": "click", "id": e.id}


def fill_checkout(obs: Observation, buyer_id: str = "buyer") -> dict[str, Any]:
    """The next checkout field to fill (test details, a test card), else the continue /
    place-order button."""
    for e in obs.elements:
        if e.kind == "input" and e.id in CHECKOUT_FIELDS and not e.value:
            text = CHECKOUT_FIELDS[e.id].format(buyer=re.sub(r"[^a-z0-9]", "", buyer_id.lower()))
            if text:
                return {"action": "type", "id": e.id, "text": text}
        if e.kind == "select" and e.id == "country" and not e.value:
            return {"action": "select", "id": "country", "value": "US"}
    if obs.profile is None:
        generic = _fill_generic(obs, buyer_id)
        if generic is not None:
            return generic
    for bid in CONTINUE_BUTTONS:
        if obs.element(bid):
            return {"action": "click", "id": bid}
    for role in ("place_order", "continue") if obs.profile is None else ():
        found = [e for e in obs.by_role(role) if e.region != "header"]
        if found:
            return click(found[0])
    buttons = [e for e in obs.elements if e.kind == "button" and e.region == "form"]
    if buttons:
        return click(buttons[-1])
    return {"action": "end_session", "reason": "could not find the checkout button"}


# Checkout fields of any store, by what their id, name, autocomplete or label says: the first
# rule that matches gives the test value. Fields that match SKIP_FIELD are left alone.
FIELD_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.I), v)
    for p, v in (
        (r"e-?mail", "{buyer}@example.com"),
        (r"first[-_ ]?name|given[-_ ]?name|\bfname|forename", "Sam"),
        (r"last[-_ ]?name|family[-_ ]?name|surname|\blname", "Buyer"),
        (r"card[-_ ]?number|cc-number", "4242 4242 4242 4242"),
        (r"expir|cc-exp", "12 / 34"),
        (r"cvc|cvv|security code|cc-csc", "123"),
        (r"name on card|card[-_ ]?name|cc-name", "Sam Buyer"),
        (r"full[-_ ]?name|^name$|\bname\b", "Sam Buyer"),
        (r"line[-_ ]?1|address[-_ ]?1|street|address-line1|^address$|\baddress\b", "1 Test Street"),
        (r"city|town|locality|address-level2", "Springfield"),
        (r"post[-_ ]?code|postal|zip", "12345"),
        (r"phone|\btel\b|mobile", "+1 202 555 0100"),
        (r"state|province|region|county|address-level1", "CA"),
    )
)
SKIP_FIELD = re.compile(
    r"search|quantity|qty|coupon|voucher|discount|promo|gift|password|company|note|comment"
    r"|line[-_ ]?2|address[-_ ]?2|apartment|suite|line[-_ ]?3",
    re.I,
)
_COUNTRY = re.compile(r"country", re.I)
_PLACEHOLDER = re.compile(r"^\W*$|\b(select|choose|please|pick)\b|^-+", re.I)
_AGREE = re.compile(r"terms|agree|accept|conditions|privacy", re.I)


def _field_text(e: Element) -> str:
    return f"{e.id} {e.name or ''} {e.label}"


def _fill_generic(obs: Observation, buyer_id: str) -> dict[str, Any] | None:
    """The next field of a store's checkout form, read by what the field says it is: an
    empty text field gets its test value, a select without a choice its first option (the
    United States for a country), a radio group without a choice its first option, a terms
    checkbox its tick. None when every field is done."""
    buyer = re.sub(r"[^a-z0-9]", "", buyer_id.lower()) or "buyer"
    for e in obs.elements:
        text = _field_text(e)
        if e.kind == "input" and not e.value and not SKIP_FIELD.search(text):
            for pattern, value in FIELD_RULES:
                if pattern.search(text):
                    required = e.required or e.label.rstrip().endswith("*")
                    if value.startswith("+") and not required:
                        break  # an optional phone: stores check numbers; leave it empty
                    return {"action": "type", "id": e.id, "text": value.format(buyer=buyer)}
        if e.kind == "select" and e.options and not SKIP_FIELD.search(text):
            values = [o.split("=", 1)[0] for o in e.options]
            if e.value and e.value in values and e.value.strip():
                continue
            if _COUNTRY.search(text):
                for want in ("US", "us", "United States"):
                    for o in e.options:
                        v, _, shown = o.partition("=")
                        if want in (v, shown) or shown.startswith("United States"):
                            if v != e.value:
                                return {"action": "select", "id": e.id, "value": v}
                            break
            first = next((v for v in values if v.strip()), None)
            if first is not None and first != e.value:
                return {"action": "select", "id": e.id, "value": first}
    # Scripted drop-downs (ARIA comboboxes): an open list gets its choice, a closed one
    # without a choice is opened.
    options = [e for e in obs.elements if e.aria_role == "option" and e.label.strip()]
    if options:
        for e in options:
            if re.search(r"\bUnited States\b|^(US|USA)$", e.label.strip()):
                return click(e)
        real = [e for e in options if not _PLACEHOLDER.search(e.label)]
        return click((real or options)[0])
    for e in obs.elements:
        shown = (e.value or "").strip().lower()
        unset = (
            not shown or bool(_PLACEHOLDER.search(shown)) or shown == e.label.strip(" *").lower()
        )
        if e.aria_role == "combobox" and unset and not SKIP_FIELD.search(_field_text(e)):
            return click(e)
    groups: dict[str, list[Element]] = {}
    for e in obs.elements:
        if e.kind == "radio":
            groups.setdefault(e.group or e.id, []).append(e)
    for radios in groups.values():
        if not any(r.checked for r in radios):
            return click(radios[0])
    for e in obs.elements:
        if e.kind == "checkbox" and not e.checked and _AGREE.search(e.label):
            return click(e)
    return None
