"""Personas: the VQ-VAE codebook and its k-means baseline, assignments, token distributions, recovery and cards."""
