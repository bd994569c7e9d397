"""Import and ingestion: catalogues, shop-day events, the quarantine; the lake sensor and the nightly schedule."""
