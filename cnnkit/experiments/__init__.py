"""Experiments: many runs of one config, each a run directory (searches on Optuna)."""
