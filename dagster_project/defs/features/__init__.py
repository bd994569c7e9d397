"""Enrichment and features: sessions, product embeddings, buyer features, the training sample, the feature transform and buyer vectors."""
