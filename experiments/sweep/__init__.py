"""Hyperparameter sweeps: many runs of one experiment, compared by one metric.

- spec.py: the sweep's description (Hydra's sweep grammar, conf/sweep/<name>.yaml) and its trials.
- search.py: random search and Optuna (ask-and-tell, a study persisted in the sweep directory).
- local.py: trials as child processes, at most N at a time, signals forwarded.
- results.py: sweep.json, results.csv, seeds aggregated, tables and plots.

What the command does (`nnrun sweep`) is driver.py (cli/sweep_cmd.py only wires it to the terminal); vectorized trials and Hydra
launchers (vectorized.py, launchers.py) plug in from beside these modules.
"""
