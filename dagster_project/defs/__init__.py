"""The code location's stages, a folder each: its assets, checks, jobs and automation."""
