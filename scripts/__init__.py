"""Helper scripts: third-party shops for the live-store tests (scripts/shops)."""
