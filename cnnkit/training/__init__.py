"""Training: the loop and its run directory, optimizers and schedules, EMA, early stopping,
divergence guards, signals, distributed runs, speed settings and the curves."""
