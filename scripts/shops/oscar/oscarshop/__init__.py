"""Minimal Django project wrapping django-oscar for loopback benchmarking."""
