"""SimPersona core library (no Dagster import)."""

__version__ = "0.1.0"
