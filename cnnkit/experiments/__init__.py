"""Experiments: many runs at once. Sweeps (sweep.py) and searches on Optuna (search.py,
space.py, best.py, search_plot.py), the runs table of `cnnkit runs` (table.py), the comparison
`cnnkit plot` draws (plot.py), and what they share: the keys that differ and the seed groups
(groups.py), short distinct names (names.py)."""
