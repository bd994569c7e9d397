"""The per-shop refresh after new events: its job and run-status sensor."""
