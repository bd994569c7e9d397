"""Buyer representations: enrichment, scalars, embeddings channels, transforms, strata, labels."""
