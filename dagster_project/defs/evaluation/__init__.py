"""Evaluation: the report over every simulated evaluation shop."""
