"""Importers for real logs, validation, sessionization and quarantine."""
