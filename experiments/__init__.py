"""nnrun's library: data, models, training loops, checkpoints, metrics and plots.

Nothing here knows about the command line; `cli/` is a thin layer on top.
"""
