"""The storefront: a server-rendered shop that agents (and people) can browse and buy from,
logging every interaction as canonical events into the lake. See docs/storefront.md."""

from simpersona.store.app import create_app
from simpersona.store.catalog import Collection, Product, StoreCatalog
from simpersona.store.events import EventSink, LakeEventSink, MemoryEventSink, events_frame
from simpersona.store.server import run_in_thread, serve

__all__ = [
    "Collection",
    "EventSink",
    "LakeEventSink",
    "MemoryEventSink",
    "Product",
    "StoreCatalog",
    "create_app",
    "events_frame",
    "run_in_thread",
    "serve",
]
