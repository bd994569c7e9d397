"""Who a storefront visitor is: a buyer id in a cookie the storefront signed, and the CSRF
token its forms carry.

A visitor is whoever holds a cookie `<buyer id>.<signature>` made with the storefront's
secret; a cookie without a valid signature, or a bare id in a header, names nobody (the
visitor gets a new id). So no client can open another buyer's cart, checkout or order page
by naming that buyer. Agents get their cookie the same way, signed for the id their run
planned (`buyer_cookie`), by the process that started the storefront or shares its secret.

The secret is `$SIMPERSONA_STORE_SECRET`, or random per process: cookies then last as long
as the process, which is what simulations need. Set the variable to keep visitors across
restarts, or when agents run in another process than the storefront.

State-changing forms carry `csrf_token(buyer)`, a keyed hash of the buyer id: a page of
another site cannot read it, so it cannot post a form in the buyer's name (docs/storefront.md,
"Identity and CSRF").
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets

SECRET_ENV = "SIMPERSONA_STORE_SECRET"
SIGNATURE_CHARS = 32  # hex characters of HMAC-SHA256 kept in a cookie (128 bits)
CSRF_FIELD = "csrf_token"  # the hidden input of every state-changing form


@functools.cache
def _process_secret() -> bytes:
    return secrets.token_bytes(32)


def store_secret() -> bytes:
    """The storefront secret: $SIMPERSONA_STORE_SECRET, else a random one for this process."""
    value = os.environ.get(SECRET_ENV)
    return value.encode() if value else _process_secret()


def _mac(secret: bytes, purpose: str, value: str) -> str:
    return hmac.new(secret, f"{purpose}\x1f{value}".encode(), hashlib.sha256).hexdigest()[
        :SIGNATURE_CHARS
    ]


def buyer_cookie(buyer_id: str, secret: bytes | None = None) -> str:
    """The `sp_buyer` cookie value naming `buyer_id`: `<id>.<signature>`."""
    return f"{buyer_id}.{_mac(secret or store_secret(), 'buyer', buyer_id)}"


def read_buyer_cookie(value: str | None, secret: bytes | None = None) -> str | None:
    """The buyer id of a cookie value whose signature is valid, else None."""
    if not value or "." not in value:
        return None
    buyer_id, _, signature = value.rpartition(".")
    expected = _mac(secret or store_secret(), "buyer", buyer_id)
    return buyer_id if buyer_id and hmac.compare_digest(signature, expected) else None


def csrf_token(buyer_id: str, secret: bytes | None = None) -> str:
    """The token every state-changing form of this buyer must post back."""
    return _mac(secret or store_secret(), "csrf", buyer_id)
