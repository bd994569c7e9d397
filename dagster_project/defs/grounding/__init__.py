"""Grounding: the persona model's fine-tunes and the persona probe."""
