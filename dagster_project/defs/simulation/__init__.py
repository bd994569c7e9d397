"""Simulation: the Markov policy, the population simulation and the instruction tasks."""
