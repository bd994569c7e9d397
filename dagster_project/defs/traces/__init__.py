"""Traces: goals replayed on the storefront in the browser, and the SFT datasets."""
