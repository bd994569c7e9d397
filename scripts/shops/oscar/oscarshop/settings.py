"""Settings for the loopback django-oscar 4.2.1 demo shop.

Everything that varies per install / per running instance comes from env vars
set by scripts/shops/oscar.py:
  OSCARSHOP_DB           sqlite file (default: <this dir>/db.sqlite3)
  OSCARSHOP_STATIC_ROOT  collectstatic target (default: <this dir>/static)
  OSCARSHOP_MEDIA_ROOT   seeded product images (default: <this dir>/media)
  OSCARSHOP_WHOOSH_PATH  Haystack/Whoosh search index directory
  OSCARSHOP_DEBUG        "1" to run with DEBUG=True (default off)
"""

import os
from pathlib import Path

from oscar import INSTALLED_APPS as OSCAR_INSTALLED_APPS
from oscar.defaults import *  # noqa: F401,F403

HERE = Path(__file__).resolve().parent
PROJECT_DIR = HERE.parent

SECRET_KEY = "loopback-only-demo-shop-not-a-secret"  # served on 127.0.0.1 only
DEBUG = os.environ.get("OSCARSHOP_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

_oscar_apps = [
    "oscarshop.shipping.apps.ShippingConfig"
    if a == "oscar.apps.shipping.apps.ShippingConfig"
    else a
    for a in OSCAR_INSTALLED_APPS
]
INSTALLED_APPS = ["oscarshop"] + _oscar_apps

# The forked shipping app has no model changes: reuse Oscar's own migrations.
MIGRATION_MODULES = {"shipping": "oscar.apps.shipping.migrations"}

SITE_ID = 1

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "oscar.apps.basket.middleware.BasketMiddleware",
    "django.contrib.flatpages.middleware.FlatpageFallbackMiddleware",
]

ROOT_URLCONF = "oscarshop.urls"
WSGI_APPLICATION = "oscarshop.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.i18n",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "oscar.apps.search.context_processors.search_form",
                "oscar.apps.checkout.context_processors.checkout",
                "oscar.apps.communication.notifications.context_processors.notifications",
                "oscar.core.context_processors.metadata",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("OSCARSHOP_DB", str(PROJECT_DIR / "db.sqlite3")),
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

AUTHENTICATION_BACKENDS = (
    "oscar.apps.customer.auth_backends.EmailBackend",
    "django.contrib.auth.backends.ModelBackend",
)

# Oscar 4 browses categories through Haystack, which the "simple" backend cannot
# do (no match-all, no category filter), so use Whoosh (pure Python). The index
# is built once at install time and is only read at run time (Haystack's default
# signal processor never writes), so running instances can share it.
HAYSTACK_CONNECTIONS = {
    "default": {
        "ENGINE": "haystack.backends.whoosh_backend.WhooshEngine",
        "PATH": os.environ.get("OSCARSHOP_WHOOSH_PATH", str(PROJECT_DIR / "whoosh_index")),
    },
}

LANGUAGE_CODE = "en-us"
# One language only: Oscar then hides its language selector (it shows one when > 1).
LANGUAGES = [("en-us", "English")]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("OSCARSHOP_STATIC_ROOT", str(PROJECT_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
MEDIA_URL = "/media/"
MEDIA_ROOT = os.environ.get("OSCARSHOP_MEDIA_ROOT", str(PROJECT_DIR / "media"))

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

# --- Oscar ---
OSCAR_SHOP_NAME = "Oscar"
OSCAR_SHOP_TAGLINE = "Demo shop"
OSCAR_DEFAULT_CURRENCY = "USD"
OSCAR_ALLOW_ANON_CHECKOUT = True
OSCAR_IMAGE_FOLDER = "images/products/"
OSCAR_THUMBNAILER = "oscarshop.thumbnails.OriginalImageThumbnailer"
OSCAR_SAVE_SENT_EMAILS_TO_DB = False
OSCAR_SEND_REGISTRATION_EMAIL = False
# Whoosh has field facets but no query facets: drop Oscar's price-range facet,
# and the rating facet (no reviews are seeded, it would only show "None").
OSCAR_SEARCH_FACETS = {
    "fields": {"product_class": OSCAR_SEARCH_FACETS["fields"]["product_class"]},  # noqa: F405
    "queries": {},
}
