"""Hydra Compute: pool idle machines into one compute service."""

__version__ = "0.2.0"
